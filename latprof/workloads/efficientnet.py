"""EfficientNet-B0 (Tan & Le, 2019, Table 1) and the Fused-MBConv block of EfficientNet V2 (Tan & Le, 2021).

B0's MBConv: swish activations, SE squeezing the block *input* channels by 4 with a sigmoid gate.
"""

from __future__ import annotations

from torch import nn

from latprof.workloads.layers import (NUM_CLASSES, ClassifierHead, MBConv, ResidualBody, SequentialNetwork,
                                      SqueezeExcite, channels_input, conv_norm_act, make_divisible)
from latprof.workloads.registry import register_networks, register_workload


class FusedMBConv(ResidualBody):
    """Fused-MBConv: k×k conv expand (carries the stride) → [SE] → 1×1 project, + identity when shapes match.

    With expansion 1 the block is a single k×k conv-BN-act (EfficientNet V2's first stage).
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: float = 4.0, kernel_size: int = 3,
                 stride: int = 1, se_channels: int = 0, act: str = "swish") -> None:
        expanded = int(round(in_channels * expansion))
        layers: list[nn.Module]
        if expanded == in_channels:
            layers = [conv_norm_act(in_channels, out_channels, kernel_size, stride, act=act)]
        else:
            layers = [conv_norm_act(in_channels, expanded, kernel_size, stride, act=act)]
            if se_channels > 0:
                layers.append(SqueezeExcite(expanded, se_channels, act, "sigmoid"))
            layers.append(conv_norm_act(expanded, out_channels, 1, 1, act=None))
        super().__init__(nn.Sequential(*layers), stride == 1 and in_channels == out_channels)


@register_workload(kind="block", family="efficientnet", default_input=channels_input("in_channels", 48))
def fused_mbconv(in_channels: int = 48, out_channels: int | None = None, stride: int = 1, expansion: float = 4.0,
                 kernel_size: int = 3, se: bool = False, se_ratio: float = 0.25, act: str = "swish") -> nn.Module:
    """EfficientNet V2 Fused-MBConv: k×k expand conv → [SE] → 1×1 project; expansion 1 → single k×k conv."""
    out_channels = out_channels or in_channels
    se_channels = max(1, int(in_channels * se_ratio)) if se else 0
    return FusedMBConv(in_channels, out_channels, expansion, kernel_size, stride, se_channels, act)


# (expansion, kernel, first stride, out channels, repeats) — EfficientNet paper Table 1 (B0).
_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def efficientnet(width: float = 1.0, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> SequentialNetwork:
    """EfficientNet at depth multiplier 1 (B0 shape) with channel width ``width`` rounded to 8."""
    c = make_divisible(32 * width)
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, c, 3, 2, act="swish"))]
    index = 0
    for t, k, s, ch, n in _B0_STAGES:
        out = make_divisible(ch * width)
        for i in range(n):
            index += 1
            se_channels = max(1, int(c * 0.25))
            unit = MBConv(c, c * t, out, k, s if i == 0 else 1, "swish", se_channels, "swish", "sigmoid")
            blocks.append((f"block{index}", unit))
            c = out
    last = make_divisible(1280 * width)
    head = nn.Sequential(conv_norm_act(c, last, 1, act="swish"), ClassifierHead(last, num_classes, dropout))
    blocks.append(("head", head))
    return SequentialNetwork(blocks)


register_networks("efficientnet", efficientnet, {
    "efficientnet_b0": ("EfficientNet-B0: 386 M mult-adds, 5.29 M params at 224×224 (paper: 390 M, 5.3 M).", 1.0),
})
