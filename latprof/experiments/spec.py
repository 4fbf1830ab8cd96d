"""Kernel specs: declarative experiments in TOML (``kernels/g1.toml`` ...), loaded and validated here.

A spec names a registered block builder, how often it is stacked, the input size, the variants with the paper's
GPU and ARM channel numbers, the channel-width scales, and the paper's figure for every cell. Validation names the
file, the field and the problem, so a user's own spec fails with a line they can act on.

Two groups share the format: ``guidelines`` (ShuffleNet V2's G1-G4, what ``--guideline all`` runs) and ``claims``
(one seed paper's efficiency claim each, ``--guideline claims``). A claim compares different blocks, so a variant may
name its own ``block`` and ``input_hw``; it states the paper's own figure (``paper_figure``, and ``paper_ratio`` of
``experiment.paper_ratio_metric`` where the paper gives a number); a ``curve`` (MobileNet's width multiplier α and
resolution ρ, depth) is judged step by step along the variants' order, not only against the baseline.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from latprof.backends.base import PRECISIONS
from latprof.backends.precision import QuantSettings
from latprof.errors import LatprofError, unknown_choice
from latprof.workloads import Workload, get_spec
from latprof.workloads.registry import seeded_build

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CHANNEL_SETS = ("arm", "gpu")
BACKEND_CLASSES = ("cpu", "mobile", "cuda")
EXPECTATIONS = ("slower", "faster")
GROUPS = ("guidelines", "claims")
DEFAULT_GROUP = "guidelines"
# What a variant's ``paper_ratio`` is a ratio of (baseline / variant, so > 1 means the variant is cheaper or faster).
PAPER_RATIO_METRICS = ("speed", "mult_adds", "params")


@dataclass(frozen=True)
class Variant:
    """One row of a paper table: its name, block arguments per channel set, paper speeds, and expected direction."""

    name: str
    args: dict[str, dict[str, Any]]
    paper: dict[str, list[float]]
    expect: str | None  # relative to the baseline (a curve: to the previous variant); None for the baseline itself
    block: str | None = None  # a claim's variant may be another block than the experiment's
    input_hw: tuple[int, int] | None = None  # ... or another resolution (MobileNet's ρ)
    paper_ratio: float | None = None  # the paper's own baseline/variant ratio of experiment.paper_ratio_metric
    paper_figure: str = ""  # the paper's own statement for this variant, as text
    # numeric precision of this variant (FP32 vs INT8 as two variants of one experiment); None: the sweep's
    # --precision. ``quant``: its INT8 settings (``precision.QuantSettings`` fields; the rest default).
    precision: str | None = None
    quant: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment."""

    id: str
    title: str
    claim: str
    source: str
    block: str
    repeat: int
    input_hw: tuple[int, int]
    input_channels: str | int  # a block argument's name, or a fixed count (3 for whole networks)
    scales: tuple[int, ...]
    scale_args: tuple[str, ...]
    baseline: str
    batch: dict[str, int]
    variants: tuple[Variant, ...]
    path: Path = field(compare=False)
    group: str = DEFAULT_GROUP
    curve: bool = False  # judge each variant against the previous one (a latency curve), see analysis.verdicts
    key_variant: str = ""  # the variant whose ratio the summary and the claims table show; default: the last
    paper_ratio_metric: str = ""

    @property
    def key(self) -> Variant:
        return self.variant(self.key_variant) if self.key_variant else self.variants[-1]

    def block_of(self, variant: Variant) -> str:
        return variant.block or self.block

    def hw_of(self, variant: Variant) -> tuple[int, int]:
        return variant.input_hw or self.input_hw

    def previous(self, variant: Variant) -> Variant | None:
        """The variant before ``variant`` in the spec's order (a curve's reference), None for the first."""
        i = self.variants.index(variant)
        return self.variants[i - 1] if i > 0 else None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise unknown_choice(f"variant of {self.id}", name, [v.name for v in self.variants])

    def block_args(self, variant: Variant, scale: int, channels: str) -> dict[str, Any]:
        """Block keyword arguments at a channel-width multiplier: ``scale_args`` are multiplied by ``scale``."""
        args = dict(variant.args[channels])
        for key in self.scale_args:
            args[key] = int(args[key]) * scale
        return args

    def input_shape(self, variant: Variant, scale: int, channels: str, batch: int) -> tuple[int, int, int, int]:
        args = self.block_args(variant, scale, channels)
        cin = self.input_channels if isinstance(self.input_channels, int) else int(args[self.input_channels])
        return (batch, cin, *self.hw_of(variant))

    def workload_name(self, variant: Variant) -> str:
        return f"{self.id}:{self.block_of(variant)}*{self.repeat}"

    def workload(self, variant: str | Variant, scale: int, channels: str, batch: int) -> Workload:
        """The stacked block of one variant as a workload (``repeat`` fresh copies in sequence)."""
        v = self.variant(variant) if isinstance(variant, str) else variant
        args = self.block_args(v, scale, channels)
        factory = get_spec(self.block_of(v)).factory
        module = seeded_build(lambda: nn.Sequential(*(factory(**args) for _ in range(self.repeat)))).eval()
        return Workload(
            name=self.workload_name(v),
            module=module,
            input_shape=self.input_shape(v, scale, channels, batch),
            kind="kernel",
            kwargs=args,
            source=str(self.path),
            description=self.title,
        )

    def paper_speed_ratio(self, variant: Variant, scale: int, channels: str) -> float | None:
        """The paper's speed of ``variant`` relative to the baseline (both speeds, so higher is faster); for a claim
        whose paper states a speed ratio, that ratio at every scale."""
        if self.paper_ratio_metric == "speed" and variant.paper_ratio is not None:
            return variant.paper_ratio
        idx = self.scales.index(scale) if scale in self.scales else None
        base = self.variant(self.baseline).paper.get(channels)
        mine = variant.paper.get(channels)
        if idx is None or not base or not mine or idx >= len(base) or idx >= len(mine):
            return None
        return float(mine[idx]) / float(base[idx])

    def precisions(self, default: str) -> list[str]:
        """The precisions its variants run at when the sweep's ``--precision`` is ``default``."""
        return list(dict.fromkeys(v.precision or default for v in self.variants))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "title": self.title,
            "claim": self.claim,
            "block": ", ".join(dict.fromkeys(self.block_of(v) for v in self.variants)),
            "repeat": self.repeat,
            "input": f"{self.input_hw[0]}x{self.input_hw[1]}",
            "scales": ",".join(str(s) for s in self.scales),
            "baseline": self.baseline,
            "variants": ", ".join(v.name for v in self.variants),
            "curve": self.curve,
            "source": self.source,
            "path": str(self.path),
        }


class _Checker:
    """Collects the file name so every validation error says where it is."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> LatprofError:
        return LatprofError(f"{self.path}: field {where}: {problem}")

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
        if key not in table:
            if required:
                raise self.fail(f"{where}.{key}" if where else key, "missing")
            return None
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(f"{where}.{key}" if where else key, f"expected {_names(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(f"{where}.{key}" if where else key, f"expected {_names(kinds)}, got {value!r}")
        return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join({"str": "a string", "int": "an integer", "list": "a list", "dict": "a table",
                        "float": "a number", "bool": "true/false"}.get(k.__name__, k.__name__) for k in kinds)


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec; any problem is one ``LatprofError`` naming file, field and problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise LatprofError(f"spec file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LatprofError(f"cannot read spec {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LatprofError(f"{p}: not valid TOML: {exc}") from None
    c = _Checker(p)
    exp = c.get(data, "experiment", dict, "")
    sid = c.get(exp, "id", str, "experiment")
    block = c.get(exp, "block", str, "experiment")
    try:
        block_spec = get_spec(block)
    except LatprofError as exc:
        raise c.fail("experiment.block", str(exc)) from None
    block_params = block_spec.arguments()
    repeat = c.get(exp, "repeat", int, "experiment")
    if repeat < 1:
        raise c.fail("experiment.repeat", f"must be >= 1, got {repeat}")
    hw = _hw(c, c.get(exp, "input_hw", list, "experiment"), "experiment.input_hw")
    scales = c.get(exp, "scales", list, "experiment")
    if not scales or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in scales):
        raise c.fail("experiment.scales", f"expected a non-empty list of positive integers, got {scales!r}")
    scale_args = c.get(exp, "scale_args", list, "experiment")
    input_channels = c.get(exp, "input_channels", (str, int), "experiment")
    if isinstance(input_channels, int) and input_channels < 1:
        raise c.fail("experiment.input_channels", f"a fixed channel count must be >= 1, got {input_channels}")
    baseline = c.get(exp, "baseline", str, "experiment")
    group = c.get(exp, "group", str, "experiment", required=False) or DEFAULT_GROUP
    if group not in GROUPS:
        raise c.fail("experiment.group", f"{group!r} is not one of {', '.join(GROUPS)}")
    curve = bool(c.get(exp, "curve", bool, "experiment", required=False))
    metric = c.get(exp, "paper_ratio_metric", str, "experiment", required=False) or ""
    if metric and metric not in PAPER_RATIO_METRICS:
        raise c.fail("experiment.paper_ratio_metric", f"{metric!r} is not one of {', '.join(PAPER_RATIO_METRICS)}")
    block_params = {block: block_params}
    batch = c.get(data, "batch", dict, "", required=False) or {"cpu": 1, "mobile": 1, "cuda": 8}
    for key, value in batch.items():
        if key not in BACKEND_CLASSES:
            raise c.fail(f"batch.{key}", f"unknown backend class; valid: {', '.join(BACKEND_CLASSES)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise c.fail(f"batch.{key}", f"expected a positive integer, got {value!r}")
    raw_variants = c.get(data, "variants", list, "")
    if not raw_variants:
        raise c.fail("variants", "at least one [[variants]] table is needed")
    declared = [rv.get("name") for rv in raw_variants if isinstance(rv, dict)]
    if baseline not in declared:
        raise c.fail("experiment.baseline", f"{baseline!r} is not a variant; valid: {', '.join(map(str, declared))}")
    variants: list[Variant] = []
    for i, rv in enumerate(raw_variants):
        where = f"variants[{i}]"
        if not isinstance(rv, dict):
            raise c.fail(where, "expected a table")
        name = c.get(rv, "name", str, where)
        where = f"variants[{i}] ({name})"
        vblock = c.get(rv, "block", str, where, required=False)
        if vblock is not None and vblock not in block_params:
            try:
                block_params[vblock] = get_spec(vblock).arguments()
            except LatprofError as exc:
                raise c.fail(f"{where}.block", str(exc)) from None
        params = block_params[vblock or block]
        vhw = c.get(rv, "input_hw", list, where, required=False)
        args: dict[str, dict[str, Any]] = {}
        paper: dict[str, list[float]] = {}
        for cs in CHANNEL_SETS:
            a = c.get(rv, cs, dict, where, required=False)
            if a is None:
                continue
            for key in a:
                if key not in params:
                    raise c.fail(f"{where}.{cs}.{key}",
                                 f"not an argument of block {vblock or block!r}; valid: {', '.join(params) or 'none'}")
            needed = [*scale_args, *([input_channels] if isinstance(input_channels, str) else [])]
            for key in needed:
                if key not in a:
                    raise c.fail(f"{where}.{cs}", f"missing {key!r} (named in experiment.scale_args/input_channels)")
            args[cs] = dict(a)
            pv = c.get(rv, f"paper_{cs}", list, where, required=False)
            if pv is not None:
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pv):
                    raise c.fail(f"{where}.paper_{cs}", f"expected numbers (one per scale), got {pv!r}")
                paper[cs] = [float(x) for x in pv]
        if not args:
            raise c.fail(where, f"needs block arguments for at least one channel set ({', '.join(CHANNEL_SETS)})")
        expect = c.get(rv, "expect", str, where, required=False)
        if expect is not None and expect not in EXPECTATIONS:
            raise c.fail(f"{where}.expect", f"{expect!r} is not one of {', '.join(EXPECTATIONS)}")
        if name != baseline and expect is None:
            raise c.fail(f"{where}.expect", "missing: say whether the guideline predicts 'slower' or 'faster' than the baseline")
        precision = c.get(rv, "precision", str, where, required=False)
        if precision is not None and precision not in PRECISIONS:
            raise c.fail(f"{where}.precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
        quant = c.get(rv, "quant", dict, where, required=False)
        if quant is not None:
            if precision != "int8":
                raise c.fail(f"{where}.quant", "INT8 settings need precision = \"int8\" in the same variant")
            try:
                quant = asdict(QuantSettings.from_dict(quant))
            except LatprofError as exc:
                raise c.fail(f"{where}.quant", str(exc)) from None
        ratio = c.get(rv, "paper_ratio", (int, float), where, required=False)
        if ratio is not None and (ratio <= 0 or not metric):
            raise c.fail(f"{where}.paper_ratio", "must be positive, with experiment.paper_ratio_metric "
                         f"({', '.join(PAPER_RATIO_METRICS)}) saying what it is a ratio of")
        variants.append(Variant(
            name, args, paper, expect if name != baseline else None, vblock,
            _hw(c, vhw, f"{where}.input_hw") if vhw is not None else None,
            float(ratio) if ratio is not None else None,
            c.get(rv, "paper_figure", str, where, required=False) or "",
            precision=precision, quant=quant,
        ))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise c.fail("variants", f"variant names must be unique, got {names}")
    if curve and variants[0].name != baseline:
        raise c.fail("experiment.curve", f"a curve starts at its baseline: list {baseline!r} first")
    key_variant = c.get(exp, "key_variant", str, "experiment", required=False) or ""
    if key_variant and key_variant not in names:
        raise c.fail("experiment.key_variant", f"{key_variant!r} is not a variant; valid: {', '.join(names)}")
    sets = [set(v.args) for v in variants]
    if any(s != sets[0] for s in sets):
        raise c.fail("variants", "every variant must give the same channel sets (arm and/or gpu)")
    return ExperimentSpec(
        id=sid,
        title=c.get(exp, "title", str, "experiment", required=False) or sid,
        claim=c.get(exp, "claim", str, "experiment", required=False) or "",
        source=c.get(exp, "source", str, "experiment", required=False) or "",
        block=block,
        repeat=repeat,
        input_hw=hw,
        input_channels=input_channels,
        scales=tuple(scales),
        scale_args=tuple(scale_args),
        baseline=baseline,
        batch={**{"cpu": 1, "mobile": 1, "cuda": 8}, **batch},
        variants=tuple(variants),
        path=p,
        group=group,
        curve=curve,
        key_variant=key_variant,
        paper_ratio_metric=metric,
    )


def _hw(c: _Checker, hw: list[Any], where: str) -> tuple[int, int]:
    if len(hw) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in hw):
        raise c.fail(where, f"expected [height, width] of positive integers, got {hw!r}")
    return (hw[0], hw[1])


def kernels_dir() -> Path:
    """The shipped specs: the ``latprof.kernels`` package when installed, else ``kernels/`` of a source checkout."""
    try:
        path = Path(str(resources.files("latprof.kernels")))
        if any(path.glob("*.toml")):
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "kernels"


def builtin_spec_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(kernels_dir().glob("*.toml"))}


def list_specs(group: str | None = None) -> list[ExperimentSpec]:
    """The shipped experiments, guidelines first, then claims (each group in file order); or one group."""
    specs = [load_spec(p) for p in builtin_spec_paths().values()]
    specs.sort(key=lambda s: GROUPS.index(s.group))
    return [s for s in specs if group is None or s.group == group]


# ``--guideline`` words that stand for a group of shipped experiments.
GROUP_WORDS = {"all": "guidelines", "claims": "claims"}


def resolve_spec(name: str) -> ExperimentSpec:
    """A shipped experiment by id (``g1``, ``dwsep``), or a path to a user's spec file."""
    if name.endswith(".toml") or "/" in name:
        return load_spec(name)
    paths = builtin_spec_paths()
    if name not in paths:
        raise unknown_choice("guideline", name, [*paths, *GROUP_WORDS])
    return load_spec(paths[name])
