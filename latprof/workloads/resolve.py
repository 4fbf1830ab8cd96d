"""Turn what the user typed after ``--model`` into a ``Workload``.

Registered names are built from the registry; ``module:callable``, ``path.py:callable``, ``torchvision:NAME``,
``timm:NAME`` and ``file.onnx`` are user models (``latprof.workloads.user_models``).
"""

from __future__ import annotations

from typing import Any

from latprof.shapes import Shape
from latprof.workloads.registry import Workload, build_registered


def is_user_model(name: str) -> bool:
    return ":" in name or name.endswith((".onnx", ".py"))


def create_workload(name: str, input_shape: Shape | None = None, batch: int | None = None, **kwargs: Any) -> Workload:
    """Build the workload called ``name`` (registry name or user-model reference)."""
    if is_user_model(name):
        from latprof.workloads.user_models import load_user_model

        return load_user_model(name, input_shape=input_shape, batch=batch, **kwargs)
    return build_registered(name, input_shape=input_shape, batch=batch, **kwargs)
