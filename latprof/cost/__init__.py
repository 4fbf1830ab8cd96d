"""Analytic cost model: multiply-adds, element-wise ops, ShuffleNet V2 memory access cost and params, per op.

PyTorch models are traced at the aten dispatch level (``latprof.cost.tracer``) and charged by one table of per-op
rules (``latprof.cost.rules``); ``.onnx`` files are counted node by node (``latprof.cost.onnx_count``).
"""

from latprof.cost.api import UnsupportedOpWarning, count_model, count_named, count_workload, workload_counts
from latprof.cost.onnx_count import count_onnx
from latprof.cost.report import COUNT_COLUMNS, CostReport, LayerCost, arithmetic_intensity

__all__ = [
    "COUNT_COLUMNS",
    "CostReport",
    "LayerCost",
    "UnsupportedOpWarning",
    "arithmetic_intensity",
    "count_model",
    "count_named",
    "count_onnx",
    "count_workload",
    "workload_counts",
]
