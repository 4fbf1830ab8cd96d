"""Workloads: the registry, the layer library (``layers``), the built-in blocks and networks, and user-model
resolution. Importing the package registers every family below."""

from latprof.workloads import blocks as _blocks  # noqa: F401  (conv_bn_relu)
from latprof.workloads import design_tips as _design_tips  # noqa: F401  (design-tip variants)
from latprof.workloads import efficientnet as _efficientnet  # noqa: F401  (EfficientNet-B0 and Fused-MBConv)
from latprof.workloads import guideline_blocks as _guideline_blocks  # noqa: F401  (ShuffleNet V2 G1-G3 blocks)
from latprof.workloads import igcv as _igcv  # noqa: F401  (IGCV1/IGCV3 blocks, IGCV3-D)
from latprof.workloads import micronet as _micronet  # noqa: F401  (MicroNet blocks and networks)
from latprof.workloads import mobilenet as _mobilenet  # noqa: F401  (MobileNet blocks and networks)
from latprof.workloads import resnet as _resnet  # noqa: F401  (ResNet blocks and networks)
from latprof.workloads import shufflenet as _shufflenet  # noqa: F401  (ShuffleNet V1/V2 blocks and networks)
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
