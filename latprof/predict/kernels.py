"""A kernel: one unit of work a backend executes, described by its family and numeric features.

Families are what one regressor learns: an aten op name on PyTorch eager (``convolution``, ``convolution_dw``,
``add``, ``view`` ...), a node type of ONNX Runtime's optimised graph with what it fused (``nchwc.Conv+Clip``,
``FusedConv+Relu``, ``QuickGelu`` ...). The features are the same for every family, so a family with few samples
can fall back to one model over all families.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# Feature order of the regressors (``feature_vector``); changing it changes what a predictor file means, so the
# file records it and ``latprof.predict.store`` refuses a file whose features differ.
FEATURES = (
    "log_mult_adds", "log_mem_access", "log_in_numel", "log_out_numel", "in_c", "in_h", "in_w", "out_c", "out_h",
    "out_w", "k_h", "k_w", "stride", "groups", "cin_per_group", "n_inputs", "log_elementwise_ops",
)


@dataclass
class Kernel:
    """One distinct kernel of a model and how many times a forward runs it."""

    op: str  # regressor family
    label: str  # what it is, for tables (aten op, or node name and type)
    features: dict[str, float]
    spec: dict[str, Any] = field(default_factory=dict)  # how to rebuild it (replay description, node attributes)
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "label": self.label, "features": self.features, "count": self.count}


def shape4(shape: list[int] | tuple[int, ...]) -> list[float]:
    """(N, C, H, W) of a shape, padded with 1s: a 2-D (N, F) tensor is (N, F, 1, 1)."""
    dims = [float(d) for d in shape][:4]
    return dims + [1.0] * (4 - len(dims)) if dims else [0.0, 0.0, 0.0, 0.0]


def feature_vector(features: dict[str, float]) -> list[float]:
    """The regressor input of one kernel, in ``FEATURES`` order (counts on a log scale)."""
    f = features
    return [
        math.log1p(f.get("mult_adds", 0.0)), math.log1p(f.get("mem_access", 0.0)), math.log1p(f.get("in_numel", 0.0)),
        math.log1p(f.get("out_numel", 0.0)), f.get("in_c", 0.0), f.get("in_h", 0.0), f.get("in_w", 0.0),
        f.get("out_c", 0.0), f.get("out_h", 0.0), f.get("out_w", 0.0), f.get("k_h", 0.0), f.get("k_w", 0.0),
        f.get("stride", 0.0), f.get("groups", 0.0), f.get("cin_per_group", 0.0), f.get("n_inputs", 0.0),
        math.log1p(f.get("elementwise_ops", 0.0)),
    ]
