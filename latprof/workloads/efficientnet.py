"""EfficientNet-B0…B3 (Tan & Le, 2019, Tables 1-2), EfficientNetV2-S and its Fused-MBConv (Tan & Le, 2021, Table 4).

B0's MBConv: swish activations, SE squeezing the block *input* channels by 4 with a sigmoid gate. B1-B3 are B0
compound-scaled (width w, depth d, resolution r: B1 1.0/1.1/240, B2 1.1/1.2/260, B3 1.2/1.4/300; channels rounded to
8 as ``make_divisible``, repeats ceil(d·n)), as the official release scales them. EfficientNetV2-S: Fused-MBConv in
stages 1-3 (no SE), MBConv with SE 0.25 in stages 4-6, at its 384×384 evaluation size.
``efficientnetv2_early_stages`` is V2-S's stem and stages 1-3 with any of them built as MBConv instead (with SE, as
the EfficientNet-B4 the paper's Table 3 starts from): the replacement EfficientNet V2 argues for.
"""

from __future__ import annotations

import math

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


def _mbconv_se(c: int, t: int, out: int, k: int, stride: int) -> MBConv:
    """EfficientNet's MBConv: expansion t, swish, SE squeezing the block input by 4, sigmoid gate."""
    return MBConv(c, c * t, out, k, stride, "swish", max(1, int(c * 0.25)), "swish", "sigmoid")


def efficientnet(width: float = 1.0, depth: float = 1.0, num_classes: int = NUM_CLASSES,
                 dropout: float = 0.2) -> SequentialNetwork:
    """EfficientNet: B0's stages with channel width ``width`` (rounded to 8) and repeats ceil(``depth``·n)."""
    c = make_divisible(32 * width)
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, c, 3, 2, act="swish"))]
    index = 0
    for t, k, s, ch, n in _B0_STAGES:
        out = make_divisible(ch * width)
        for i in range(int(math.ceil(depth * n))):
            index += 1
            blocks.append((f"block{index}", _mbconv_se(c, t, out, k, s if i == 0 else 1)))
            c = out
    last = make_divisible(1280 * width)
    head = nn.Sequential(conv_norm_act(c, last, 1, act="swish"), ClassifierHead(last, num_classes, dropout))
    blocks.append(("head", head))
    return SequentialNetwork(blocks)


register_networks("efficientnet", efficientnet, {
    "efficientnet_b0": ("EfficientNet-B0: 386 M mult-adds, 5.29 M params at 224×224 (paper: 390 M, 5.3 M).", 1.0),
    "efficientnet_b1": ("EfficientNet-B1 (w 1.0, d 1.1) at 240×240 (paper Table 2: 0.70 B FLOPs, 7.8 M params).",
                        1.0, 1.1),
    "efficientnet_b2": ("EfficientNet-B2 (w 1.1, d 1.2) at 260×260 (paper Table 2: 1.0 B FLOPs, 9.2 M params).",
                        1.1, 1.2),
    "efficientnet_b3": ("EfficientNet-B3 (w 1.2, d 1.4) at 300×300 (paper Table 2: 1.8 B FLOPs, 12 M params).",
                        1.2, 1.4),
}, resolutions={"efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300})


# (fused?, expansion, kernel, first stride, out channels, repeats) — EfficientNetV2 paper Table 4 (V2-S).
_V2_S_STAGES = [(True, 1, 3, 1, 24, 2), (True, 4, 3, 2, 48, 4), (True, 4, 3, 2, 64, 4), (False, 4, 3, 2, 128, 6),
                (False, 6, 3, 1, 160, 9), (False, 6, 3, 2, 256, 15)]
_V2_S_STEM = 24


def _v2_stage_blocks(c: int, stages: list[tuple[bool, int, int, int, int, int]], index: int = 0
                     ) -> tuple[list[tuple[str, nn.Module]], int]:
    """Blocks of EfficientNet V2 stages (Fused-MBConv without SE, or MBConv with SE 0.25) and the width after them."""
    blocks: list[tuple[str, nn.Module]] = []
    for fused, t, k, s, out, n in stages:
        for i in range(n):
            index += 1
            stride = s if i == 0 else 1
            unit = FusedMBConv(c, out, t, k, stride) if fused else _mbconv_se(c, t, out, k, stride)
            blocks.append((f"block{index}", unit))
            c = out
    return blocks, c


def efficientnet_v2(stages: list[tuple[bool, int, int, int, int, int]], stem: int = _V2_S_STEM, last: int = 1280,
                    num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> SequentialNetwork:
    """EfficientNet V2: 3×3 stem, the given stages, 1×1 conv to ``last``, pooling + FC (swish throughout)."""
    body, c = _v2_stage_blocks(stem, stages)
    head = nn.Sequential(conv_norm_act(c, last, 1, act="swish"), ClassifierHead(last, num_classes, dropout))
    return SequentialNetwork([("stem", conv_norm_act(3, stem, 3, 2, act="swish")), *body, ("head", head)])


register_networks("efficientnet", efficientnet_v2, {
    "efficientnetv2_s": ("EfficientNetV2-S at 384×384 (paper Table 7: 8.8 B FLOPs, 22 M params).", _V2_S_STAGES),
}, resolutions={"efficientnetv2_s": 384})


@register_workload(kind="block", family="efficientnet", default_input=(1, 3, 224, 224))
def efficientnetv2_early_stages(fused_stages: int = 3) -> nn.Module:
    """EfficientNetV2-S stem + stages 1-3, the first ``fused_stages`` as Fused-MBConv and the rest as MBConv+SE."""
    if not 0 <= fused_stages <= 3:
        raise ValueError(f"fused_stages must be 0..3 (stages 1-3 of EfficientNetV2-S), got {fused_stages}")
    stages = [(i < fused_stages, *row[1:]) for i, row in enumerate(_V2_S_STAGES[:3])]
    body, _ = _v2_stage_blocks(_V2_S_STEM, stages)
    return SequentialNetwork([("stem", conv_norm_act(3, _V2_S_STEM, 3, 2, act="swish")), *body])
