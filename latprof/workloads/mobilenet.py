"""MobileNet V1 / V2 / V3: depthwise-separable, inverted-residual and MBConv blocks, and the published networks.

Configurations follow the papers: V1 (Howard et al., 2017, Table 1; width multiplier α on every layer), V2
(Sandler et al., 2018, Table 2; channels rounded to multiples of 8, last 1×1 conv 1280·max(1, α)), V3 (Howard et
al., 2019, Tables 1 and 2; SE squeeze = expanded/4 rounded to 8, hard-sigmoid gate, no SE on the last 1×1 conv of
V3-Small as in the reference implementations).
"""

from __future__ import annotations

from torch import nn

from latprof.workloads.layers import (NUM_CLASSES, ClassifierHead, MBConv, SequentialNetwork, activation,
                                      channels_input, conv_norm_act, make_divisible)
from latprof.workloads.registry import register_networks, register_workload


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k×k conv → BN → act, then pointwise 1×1 conv → BN → act (MobileNet V1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3, act: str = "relu"):
        super().__init__(
            conv_norm_act(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act),
            conv_norm_act(in_channels, out_channels, 1, 1, act=act),
        )


# ------------------------------------------------------------------ blocks
@register_workload(kind="block", family="mobilenet", default_input=channels_input("in_channels", 64))
def depthwise_separable(
    in_channels: int = 64, out_channels: int = 128, stride: int = 1, kernel_size: int = 3, act: str = "relu"
) -> nn.Module:
    """MobileNet V1 depthwise-separable conv: depthwise k×k-BN-act then pointwise 1×1-BN-act."""
    return DepthwiseSeparable(in_channels, out_channels, stride, kernel_size, act)


@register_workload(kind="block", family="mobilenet", default_input=channels_input("in_channels", 32))
def inverted_residual(in_channels: int = 32, out_channels: int | None = None, stride: int = 1, expansion: float = 6.0,
                      kernel_size: int = 3, act: str = "relu6") -> nn.Module:
    """MobileNet V2 inverted residual: 1×1 expand (t) → depthwise k×k → 1×1 linear, identity add when shapes match."""
    out_channels = out_channels or in_channels
    return MBConv(in_channels, int(round(in_channels * expansion)), out_channels, kernel_size, stride, act)


@register_workload(kind="block", family="mobilenet", default_input=channels_input("in_channels", 40))
def mbconv(in_channels: int = 40, out_channels: int | None = None, stride: int = 1, expansion: float = 6.0,
           kernel_size: int = 5, se: bool = True, se_ratio: float = 0.25, act: str = "hswish") -> nn.Module:
    """MobileNet V3 / EfficientNet MBConv: expand → depthwise k×k → SE (on/off) → project; act relu|hswish|swish.

    SE squeezes the expanded channels by ``se_ratio`` (rounded to 8); its gate is hard-sigmoid for relu/hswish
    (MobileNet V3) and sigmoid for swish (EfficientNet).
    """
    out_channels = out_channels or in_channels
    expanded = int(round(in_channels * expansion))
    activation(act)  # unknown name: one-line error naming the choices
    se_channels = make_divisible(expanded * se_ratio, 8) if se else 0
    gate = "sigmoid" if act == "swish" else "hsigmoid"
    se_act = "swish" if act == "swish" else "relu"
    return MBConv(in_channels, expanded, out_channels, kernel_size, stride, act, se_channels, se_act, gate)


# ------------------------------------------------------------------ MobileNet V1
_V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1(width: float = 1.0, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """MobileNet V1 with width multiplier ``width`` applied to every layer (paper Table 1)."""
    c = int(32 * width)
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, c, 3, 2))]
    for i, (out, stride) in enumerate(_V1_LAYERS, start=1):
        out = int(out * width)
        blocks.append((f"dw{i}", DepthwiseSeparable(c, out, stride)))
        c = out
    blocks.append(("head", ClassifierHead(c, num_classes)))
    return SequentialNetwork(blocks)


register_networks("mobilenet", mobilenet_v1, {
    "mobilenet_v1_x1_0": ("MobileNet V1 1.0: 569 M mult-adds, 4.23 M params at 224×224 (paper: 569 M, 4.2 M).", 1.0),
    "mobilenet_v1_x0_75": ("MobileNet V1 0.75: 325 M mult-adds, 2.59 M params (paper: 325 M, 2.6 M).", 0.75),
    "mobilenet_v1_x0_5": ("MobileNet V1 0.5: 149 M mult-adds, 1.33 M params (paper: 149 M, 1.3 M).", 0.5),
    "mobilenet_v1_x0_25": ("MobileNet V1 0.25: 41 M mult-adds, 0.47 M params (paper: 41 M, 0.5 M rounded).",
                           0.25),
})


# ------------------------------------------------------------------ MobileNet V2
# (expansion t, channels c, repeats n, first stride s) — paper Table 2.
_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2(width: float = 1.0, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """MobileNet V2; channels × ``width`` rounded to 8, the last 1×1 conv 1280·max(1, width)."""
    c = make_divisible(32 * width)
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, c, 3, 2, act="relu6"))]
    index = 0
    for t, ch, n, s in _V2_SETTINGS:
        out = make_divisible(ch * width)
        for i in range(n):
            index += 1
            blocks.append((f"block{index}", MBConv(c, c * t, out, 3, s if i == 0 else 1, "relu6")))
            c = out
    last = make_divisible(1280 * max(1.0, width))
    head = nn.Sequential(conv_norm_act(c, last, 1, act="relu6"), ClassifierHead(last, num_classes, dropout=0.2))
    blocks.append(("head", head))
    return SequentialNetwork(blocks)


register_networks("mobilenet", mobilenet_v2, {
    "mobilenet_v2_x1_0": (
        "MobileNet V2 1.0: 301 M mult-adds, 3.50 M params (paper: 300 M, 3.4 M; TF-slim release 3.47 M).", 1.0),
    "mobilenet_v2_x1_4": (
        "MobileNet V2 1.4: 582 M mult-adds, 6.11 M params (paper: 585 M, 6.9 M; TF-slim release 6.06 M).", 1.4),
})


# ------------------------------------------------------------------ MobileNet V3
# (kernel, expanded, out, SE, activation, stride) — paper Tables 1 (Large) and 2 (Small).
_V3_LARGE = [
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1), (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1), (5, 960, 160, True, "hswish", 1),
]
_V3_SMALL = [
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1),
]


def mobilenet_v3(config: list, last_conv: int, hidden: int, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """MobileNet V3: hswish stem, MBConv blocks, 1×1 conv, pool, 1×1 (no BN) hidden layer with hswish, classifier."""
    c = 16
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, c, 3, 2, act="hswish"))]
    for i, (k, exp, out, se, act, s) in enumerate(config, start=1):
        se_channels = make_divisible(exp // 4, 8) if se else 0
        blocks.append((f"block{i}", MBConv(c, exp, out, k, s, act, se_channels, "relu", "hsigmoid")))
        c = out
    head = nn.Sequential(
        conv_norm_act(c, last_conv, 1, act="hswish"),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(last_conv, hidden),
        nn.Hardswish(inplace=True),
        nn.Dropout(0.2),
        nn.Linear(hidden, num_classes),
    )
    blocks.append(("head", head))
    return SequentialNetwork(blocks)


register_networks("mobilenet", mobilenet_v3, {
    "mobilenet_v3_large": ("MobileNet V3-Large 1.0: 217 M mult-adds, 5.48 M params (paper: 219 M, 5.4 M).",
                           _V3_LARGE, 960, 1280),
    "mobilenet_v3_small": ("MobileNet V3-Small 1.0: 57 M mult-adds, 2.54 M params (paper: 56 M, 2.5 M).",
                           _V3_SMALL, 576, 1024),
})
