"""ShuffleNet V1 and V2: their units as blocks and the ImageNet networks, each with a block decomposition.

Channel tables follow the papers (V1 Table 1, V2 Table 5). V1: the first pointwise conv of stage 2 is not grouped
(paper, Sec. 3.3: its input has only 24 channels); the bottleneck width is a quarter of the stage's output width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from latprof.workloads.layers import (NUM_CLASSES, ChannelShuffle, ClassifierHead, SequentialNetwork, channels_input,
                                      conv_norm_act)
from latprof.workloads.registry import register_networks, register_workload

V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                     8: (384, 768, 1536)}
V2_STAGE_CHANNELS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024),
                     2.0: (244, 488, 976, 2048)}
STAGE_REPEATS = (4, 8, 4)
STEM_CHANNELS = 24


def shufflenet_stem(out_channels: int = STEM_CHANNELS) -> nn.Sequential:
    """3×3 conv stride 2 → BN → ReLU → 3×3 max-pool stride 2 (both ShuffleNets)."""
    return nn.Sequential(conv_norm_act(3, out_channels, 3, 2), nn.MaxPool2d(3, 2, 1))


class ShuffleV1Unit(nn.Module):
    """ShuffleNet V1 unit: 1×1 group conv → shuffle → k×k depthwise → 1×1 group conv; add (s=1) or concat (s=2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 3, kernel_size: int = 3,
                 group_first_pointwise: bool = True, mid_channels: int | None = None, shuffle: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"stride 1 needs in_channels == out_channels, got {in_channels} and {out_channels}")
        if branch_out <= 0 or branch_out % groups:
            raise ValueError(f"branch output {branch_out} channels must be positive and divisible by groups={groups}")
        mid = mid_channels or -(-(out_channels // 4) // groups) * groups
        g1 = groups if group_first_pointwise else 1
        if in_channels % g1 or mid % groups:
            raise ValueError(f"in_channels={in_channels} and bottleneck {mid} must divide into groups={groups}")
        self.stride = stride
        self.pw1 = conv_norm_act(in_channels, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(groups if shuffle else 1)  # groups=1: the identity (no shuffle, same convs)
        self.dw = conv_norm_act(mid, mid, kernel_size, stride, groups=mid, act=None)
        self.pw2 = conv_norm_act(mid, branch_out, 1, groups=groups, act=None)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw2(self.dw(self.shuffle(self.pw1(x))))
        if self.stride == 1:
            return self.relu(out + x)
        return torch.cat((self.shortcut(x), self.relu(out)), 1)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet V2 unit: s=1 channel split + one branch; s=2 two branches; then concat and shuffle(2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2 or (stride == 1 and in_channels != out_channels):
            raise ValueError(f"need even out_channels and, at stride 1, in == out; got {in_channels}→{out_channels}")
        half = out_channels // 2
        branch_in = in_channels // 2 if stride == 1 else in_channels
        self.stride = stride
        self.branch1 = (
            nn.Sequential(conv_norm_act(in_channels, in_channels, kernel_size, 2, groups=in_channels, act=None),
                          conv_norm_act(in_channels, half, 1))
            if stride == 2 else nn.Identity()
        )
        self.branch2 = nn.Sequential(
            conv_norm_act(branch_in, half, 1),
            conv_norm_act(half, half, kernel_size, stride, groups=half, act=None),
            conv_norm_act(half, half, 1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return self.shuffle(out)


def _stem_and_stages(widths: Sequence[int],
                     unit: Callable[[int, int, int, int], nn.Module]) -> list[tuple[str, nn.Module]]:
    """The stem, then stages 2–4 of (4, 8, 4) units; ``unit(stage, i, in, out)`` builds each (i = 0 at stride 2)."""
    blocks: list[tuple[str, nn.Module]] = [("stem", shufflenet_stem(STEM_CHANNELS))]
    cin = STEM_CHANNELS
    for s, (cout, reps) in enumerate(zip(widths, STAGE_REPEATS), start=2):
        for i in range(reps):
            blocks.append((f"stage{s}_{i}", unit(s, i, cin, cout)))
            cin = cout
    return blocks


def build_shufflenet_v1(groups: int = 3, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """ShuffleNet V1 1.0× (paper Table 1): stem, stages of (4, 8, 4) units, pooling + FC."""
    if groups not in V1_STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(V1_STAGE_CHANNELS)}, got {groups}")
    stages = V1_STAGE_CHANNELS[groups]
    blocks = _stem_and_stages(stages, lambda s, i, cin, cout: ShuffleV1Unit(
        cin, cout, 2 if i == 0 else 1, groups, group_first_pointwise=not (s == 2 and i == 0), mid_channels=cout // 4))
    blocks.append(("head", ClassifierHead(stages[-1], num_classes)))
    return SequentialNetwork(blocks)


def build_shufflenet_v2(width: float = 1.0, num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """ShuffleNet V2 (paper Table 5): stem, stages of (4, 8, 4) units, 1×1 conv5, pooling + FC."""
    if width not in V2_STAGE_CHANNELS:
        raise ValueError(f"width must be one of {sorted(V2_STAGE_CHANNELS)}, got {width}")
    *stages, last = V2_STAGE_CHANNELS[width]
    blocks = _stem_and_stages(stages, lambda s, i, cin, cout: ShuffleV2Unit(cin, cout, 2 if i == 0 else 1))
    blocks.append(("conv5", conv_norm_act(stages[-1], last, 1)))
    blocks.append(("head", ClassifierHead(last, num_classes)))
    return SequentialNetwork(blocks)


@register_workload(kind="block", family="shufflenet", default_input=channels_input("in_channels", 240))
def shufflenet_v1_unit(in_channels: int = 240, out_channels: int = 240, stride: int = 1, groups: int = 3,
                       kernel_size: int = 3, shuffle: bool = True) -> nn.Module:
    """ShuffleNet V1 unit: 1×1 group conv (g) + shuffle + k×k dw + 1×1 group conv; s=1 add, s=2 avgpool+concat.

    ``shuffle=false`` drops the channel shuffle and keeps the convs (ShuffleNet V1 Table 3's "no shuffle")."""
    if groups not in V1_STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(V1_STAGE_CHANNELS)}")
    return ShuffleV1Unit(in_channels, out_channels, stride, groups, kernel_size, shuffle=shuffle)


@register_workload(kind="block", family="shufflenet", default_input=channels_input("in_channels", 116))
def shufflenet_v2_unit(in_channels: int = 116, out_channels: int = 116, stride: int = 1,
                       kernel_size: int = 3) -> nn.Module:
    """ShuffleNet V2 unit: s=1 channel split, 1×1→dw→1×1, concat, shuffle; s=2 two branches, concat, shuffle."""
    return ShuffleV2Unit(in_channels, out_channels, stride, kernel_size)


register_networks("shufflenet", build_shufflenet_v1, {
    "shufflenet_v1_g3_x1_0": ("ShuffleNet V1 1.0×, g=3 (paper: 140M mult-adds, 1.9M params).", 3),
    "shufflenet_v1_g8_x1_0": ("ShuffleNet V1 1.0×, g=8 (paper Table 2: 140M mult-adds).", 8),
})
register_networks("shufflenet", build_shufflenet_v2, {
    "shufflenet_v2_x0_5": ("ShuffleNet V2 0.5× (paper: 41M mult-adds, 1.4M params).", 0.5),
    "shufflenet_v2_x1_0": ("ShuffleNet V2 1.0× (paper: 146M mult-adds, 2.3M params).", 1.0),
    "shufflenet_v2_x1_5": ("ShuffleNet V2 1.5× (paper: 299M mult-adds, 3.5M params).", 1.5),
    "shufflenet_v2_x2_0": ("ShuffleNet V2 2.0× (paper: 591M mult-adds, 7.4M params).", 2.0),
})
