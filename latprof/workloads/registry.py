"""Workload registry in the manner of timm: ``@register_workload`` on a factory, ``create_workload(name)`` to build.

A *workload* is a named, parameterised thing to run: an ``nn.Module`` factory plus the input shape it takes.
Blocks and full networks are registered here; user models and ``.onnx`` files are resolved by ``user_models``.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from latprof.errors import LatprofError, one_line, unknown_choice
from latprof.shapes import Shape, format_shape, with_batch

KINDS = ("block", "network")

InputFn = Callable[[dict[str, Any]], Shape]


@dataclass(frozen=True)
class WorkloadSpec:
    """One registry entry: how to build a workload and what input it takes by default."""

    name: str
    kind: str
    factory: Callable[..., nn.Module]
    default_input: Shape | InputFn
    description: str
    family: str = ""

    def input_for(self, kwargs: dict[str, Any]) -> Shape:
        """The default input shape (batch 1) for these keyword arguments."""
        if callable(self.default_input):
            return tuple(self.default_input(kwargs))
        return tuple(self.default_input)

    def arguments(self) -> dict[str, Any]:
        """Documented keyword arguments of the factory with their defaults."""
        out: dict[str, Any] = {}
        for p in inspect.signature(self.factory).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "description": self.description,
            "default_input": format_shape(self.input_for({})),
            "arguments": {k: v for k, v in self.arguments().items() if _jsonable(v)},
        }


_REGISTRY: dict[str, WorkloadSpec] = {}


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, list, tuple))


def register_workload(
    *, kind: str, default_input: Shape | InputFn, family: str = "", name: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory; its name defaults to the function name, its description to the docstring's first line."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or factory.__name__
        if key in _REGISTRY:
            raise ValueError(f"workload {key!r} registered twice")
        doc = (inspect.getdoc(factory) or "").strip().splitlines()
        _REGISTRY[key] = WorkloadSpec(key, kind, factory, default_input, doc[0] if doc else "", family)
        return factory

    return decorate


def list_workloads(kind: str | None = None) -> list[WorkloadSpec]:
    specs = sorted(_REGISTRY.values(), key=lambda s: (s.kind, s.family, s.name))
    return [s for s in specs if kind is None or s.kind == kind]


def get_spec(name: str) -> WorkloadSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("model", name, _REGISTRY) from None


@dataclass
class BlockInstance:
    """One block of a network, in order: its name, the module, and the input shape it sees inside the network."""

    name: str
    module: nn.Module
    input_shape: Shape


@dataclass
class Workload:
    """A built workload: module in eval mode, its input shape (with batch), and how it was made."""

    name: str
    module: nn.Module | None
    input_shape: Shape
    kind: str = "block"
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "registry"
    onnx_path: str | None = None
    description: str = ""
    _reference: torch.Tensor | None = field(default=None, repr=False)

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    def make_inputs(self, seed: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
        """Inputs drawn from a fixed seed so every backend and every run sees the same data."""
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(self.input_shape, generator=gen).to(device),)

    def reference_output(self) -> torch.Tensor:
        """PyTorch eager output on CPU, computed once; every backend's output is checked against it."""
        if self._reference is None:
            if self.module is None:
                raise LatprofError(f"{self.name}: an ONNX file has no PyTorch reference output")
            with torch.inference_mode():
                out = self.module(*self.make_inputs())
            self._reference = first_tensor(out).detach().clone()
        return self._reference

    def check_input(self) -> None:
        """Run eager once; an input the model rejects is a one-line error quoting the model and the shape tried."""
        if self.module is None:
            return
        try:
            self.reference_output()
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise LatprofError(
                f"{self.name} rejects input {format_shape(self.input_shape)}: {one_line(exc)}"
            ) from None

    def blocks(self) -> list[BlockInstance]:
        """The network's blocks in order with the input shape each sees (networks define ``blocks()``)."""
        if self.module is None or not hasattr(self.module, "blocks"):
            raise LatprofError(f"{self.name} is not a network with a block decomposition; --per-block needs a zoo network")
        named: list[tuple[str, nn.Module]] = list(self.module.blocks())
        shapes: dict[str, Shape] = {}
        hooks = [
            m.register_forward_pre_hook(lambda _m, args, _n=n: shapes.setdefault(_n, tuple(args[0].shape)) and None)
            for n, m in named
        ]
        try:
            with torch.inference_mode():
                self.module(*self.make_inputs())
        finally:
            for h in hooks:
                h.remove()
        return [BlockInstance(n, m, shapes[n]) for n, m in named if n in shapes]


def first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a model output (tensor, tuple/list, or dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return first_tensor(out[0])
    if isinstance(out, dict) and out:
        return first_tensor(next(iter(out.values())))
    raise LatprofError(f"model output of type {type(out).__name__} holds no tensor")


def parse_kwargs(pairs: list[str] | None) -> dict[str, Any]:
    """``["out_channels=64", "act='relu6'"]`` → kwargs; values are Python literals, bare words stay strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise LatprofError(f"malformed --arg {pair!r}; expected KEY=VALUE, e.g. out_channels=64")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


WEIGHT_SEED = 0


def seeded_build(build: Callable[[], nn.Module], seed: int = WEIGHT_SEED) -> nn.Module:
    """Build with a fixed weight seed (the global RNG is left as it was): every run times the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_registered(
    name: str, input_shape: Shape | None = None, batch: int | None = None, **kwargs: Any
) -> Workload:
    """Build a registered workload; the input defaults to the spec's shape, ``batch`` replaces its first dim."""
    spec = get_spec(name)
    valid = spec.arguments()
    for key in kwargs:
        if key not in valid:
            raise unknown_choice(f"argument of {name}", key, valid)
    try:
        module = seeded_build(lambda: spec.factory(**kwargs))
    except (TypeError, ValueError) as exc:
        raise LatprofError(f"{name}: cannot build with {kwargs}: {exc}") from None
    module.eval()
    shape = with_batch(tuple(input_shape) if input_shape else spec.input_for(kwargs), batch)
    return Workload(name, module, shape, spec.kind, dict(kwargs), "registry", None, spec.description)
