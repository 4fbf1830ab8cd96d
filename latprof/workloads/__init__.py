"""Workloads: the registry, the built-in blocks and networks, and user-model resolution."""

from latprof.workloads import blocks as _blocks  # noqa: F401  (registers built-in blocks)
from latprof.workloads import guideline_blocks as _guideline_blocks  # noqa: F401
from latprof.workloads import resnet as _resnet  # noqa: F401  (registers ResNet blocks and networks)
from latprof.workloads import mobilenet as _mobilenet  # noqa: F401  (registers MobileNet blocks and networks)
from latprof.workloads import efficientnet as _efficientnet  # noqa: F401  (registers EfficientNet and Fused-MBConv)
from latprof.workloads import design_tips as _design_tips  # noqa: F401  (registers design-tip variants)
from latprof.workloads.registry import (
    BlockInstance,
    Workload,
    WorkloadSpec,
    build_registered,
    get_spec,
    list_workloads,
    parse_kwargs,
    register_workload,
)
from latprof.workloads.resolve import create_workload
from latprof.workloads import shufflenet as _shufflenet  # noqa: F401  (ShuffleNet V1/V2 blocks and networks)
from latprof.workloads import micronet as _micronet  # noqa: F401  (MicroNet blocks and networks)
from latprof.workloads import igcv as _igcv  # noqa: F401  (IGCV1/IGCV3 blocks, IGCV3-D)

__all__ = [
    "BlockInstance",
    "Workload",
    "WorkloadSpec",
    "build_registered",
    "create_workload",
    "get_spec",
    "list_workloads",
    "parse_kwargs",
    "register_workload",
]
