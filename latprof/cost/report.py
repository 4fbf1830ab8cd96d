"""The result of a count: one row per op call (attributed to a module path), totals, and aggregated tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latprof.errors import LatprofError

#: The summed count columns, in display order.
COUNT_COLUMNS = ("mult_adds", "elementwise_ops", "mem_access", "mem_bytes", "params")
AGGREGATIONS = ("module", "op")


@dataclass
class LayerCost:
    """One op call: the module path that issued it, the op, its counts and its (first) output shape."""

    name: str
    op: str
    mult_adds: int = 0
    elementwise_ops: int = 0
    mem_access: int = 0
    mem_bytes: int = 0
    params: int = 0
    output_shape: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def arithmetic_intensity(mult_adds: int, mem_bytes: int) -> float:
    """Floating-point operations (2 per multiply-add) per byte moved; 0 when nothing moves."""
    return 2.0 * mult_adds / mem_bytes if mem_bytes else 0.0


@dataclass
class CostReport:
    """Counts of one model for one input. ``params`` in the totals is the model's parameter count (distinct
    tensors); per layer it is the parameters that layer reads first."""

    model: str
    input_shapes: list[list[int]]
    layers: list[LayerCost]
    unsupported_ops: list[str]
    params: int
    fold_bn: bool = False
    source: str = "torch"

    @property
    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {c: sum(getattr(row, c) for row in self.layers) for c in COUNT_COLUMNS}
        out["params"] = self.params
        out["arithmetic_intensity"] = arithmetic_intensity(out["mult_adds"], out["mem_bytes"])
        return out

    def aggregate(self, by: str = "module") -> list[dict[str, Any]]:
        """Sum the rows per module path (``by="module"``) or per op (``by="op"``), in first-seen order."""
        if by not in AGGREGATIONS:
            from latprof.errors import unknown_choice

            raise unknown_choice("aggregation", by, AGGREGATIONS)
        return _group(self.layers, lambda row: row.name if by == "module" else row.op, "name" if by == "module" else "op")

    def blocks(self, depth: int = 1) -> list[dict[str, Any]]:
        """Per-block table: rows grouped by the first ``depth`` components of their module path
        (``layer1.0.conv1`` at depth 1 is ``layer1``, at depth 2 ``layer1.0``)."""
        if depth < 1:
            raise LatprofError(f"block depth must be >= 1, got {depth}")
        return _group(self.layers, lambda row: ".".join(row.name.split(".")[:depth]), "block")

    def as_dict(self) -> dict[str, Any]:
        """The JSON contract of ``latprof count --json``."""
        totals = self.totals
        return {
            "model": self.model,
            "input": self.input_shapes[0] if len(self.input_shapes) == 1 else self.input_shapes,
            "fold_bn": self.fold_bn,
            "source": self.source,
            "totals": {c: totals[c] for c in COUNT_COLUMNS} | {"arithmetic_intensity": totals["arithmetic_intensity"]},
            "layers": [row.as_dict() for row in self.layers],
            "unsupported_ops": list(self.unsupported_ops),
        }


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write layer or aggregated rows as CSV (output_shape joined with 'x')."""
    import pandas as pd

    frame = pd.DataFrame([{k: ("x".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()} for r in rows])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    return out


def _group(rows: list[LayerCost], key: Any, key_name: str) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        k = key(row)
        g = groups.setdefault(k, {key_name: k, "calls": 0, **{c: 0 for c in COUNT_COLUMNS}})
        g["calls"] += 1
        for c in COUNT_COLUMNS:
            g[c] += getattr(row, c)
    for g in groups.values():
        g["arithmetic_intensity"] = arithmetic_intensity(g["mult_adds"], g["mem_bytes"])
    return list(groups.values())
