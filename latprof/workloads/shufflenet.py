"""ShuffleNet V1 and V2: their units as blocks and the ImageNet networks, each with a block decomposition.

Channel tables follow the papers (V1 Table 1, V2 Table 5). V1: the first pointwise conv of stage 2 is not grouped
(paper, Sec. 3.3: its input has only 24 channels); the bottleneck width is a quarter of the stage's output width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from latprof.workloads.blocks import ConvBNReLU
from latprof.workloads.registry import register_workload
from latprof.workloads.shuffle import ChannelShuffle

NUM_CLASSES = 1000
V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                     8: (384, 768, 1536)}
V2_STAGE_CHANNELS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024),
                     2.0: (244, 488, 976, 2048)}
STAGE_REPEATS = (4, 8, 4)
NETWORK_INPUT = (1, 3, 224, 224)


def _channels_input(key: str, default: int, size: int = 56) -> Any:
    return lambda kw: (1, int(kw.get(key, default)), size, size)


class BlockChain(nn.Module):
    """A network that is exactly the sequential composition of its named blocks (stem, units, head)."""

    def __init__(self, named_blocks: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.chain = nn.ModuleDict(dict(named_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.chain.values():
            x = block(x)
        return x

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks in forward order; chaining them gives ``forward``."""
        return list(self.chain.items())


def classifier_head(in_channels: int, num_classes: int = NUM_CLASSES, bias: bool = True) -> nn.Sequential:
    """Global average pooling → flatten → fully connected."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_channels, num_classes, bias=bias))


def shufflenet_stem(out_channels: int = 24) -> nn.Sequential:
    """3×3 conv stride 2 → BN → ReLU → 3×3 max-pool stride 2 (both ShuffleNets)."""
    return nn.Sequential(ConvBNReLU(3, out_channels, 3, 2), nn.MaxPool2d(3, 2, 1))


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ShuffleV1Unit(nn.Module):
    """ShuffleNet V1 unit: 1×1 group conv → shuffle → k×k depthwise → 1×1 group conv; add (s=1) or concat (s=2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 3, kernel_size: int = 3,
                 group_first_pointwise: bool = True, mid_channels: int | None = None) -> None:
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
        self.pw1 = ConvBNReLU(in_channels, mid, 1, groups=g1)
        self.shuffle = ChannelShuffle(groups)
        self.dw = _conv_bn(mid, mid, kernel_size, stride, groups=mid)
        self.pw2 = _conv_bn(mid, branch_out, 1, groups=groups)
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
            nn.Sequential(_conv_bn(in_channels, in_channels, kernel_size, 2, groups=in_channels),
                          ConvBNReLU(in_channels, half, 1))
            if stride == 2 else nn.Identity()
        )
        self.branch2 = nn.Sequential(
            ConvBNReLU(branch_in, half, 1),
            _conv_bn(half, half, kernel_size, stride, groups=half),
            ConvBNReLU(half, half, 1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return self.shuffle(out)


def build_shufflenet_v1(groups: int = 3, num_classes: int = NUM_CLASSES) -> BlockChain:
    """ShuffleNet V1 1.0× (paper Table 1): stem, stages of (4, 8, 4) units, pooling + FC."""
    if groups not in V1_STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(V1_STAGE_CHANNELS)}, got {groups}")
    stages = V1_STAGE_CHANNELS[groups]
    stem = 24
    blocks: list[tuple[str, nn.Module]] = [("stem", shufflenet_stem(stem))]
    cin = stem
    for s, (cout, reps) in enumerate(zip(stages, STAGE_REPEATS), start=2):
        for i in range(reps):
            unit = ShuffleV1Unit(cin, cout, 2 if i == 0 else 1, groups, group_first_pointwise=not (s == 2 and i == 0),
                                 mid_channels=cout // 4)
            blocks.append((f"stage{s}_{i}", unit))
            cin = cout
    blocks.append(("head", classifier_head(cin, num_classes, bias=True)))
    return BlockChain(blocks)


def build_shufflenet_v2(width: float = 1.0, num_classes: int = NUM_CLASSES) -> BlockChain:
    """ShuffleNet V2 (paper Table 5): stem, stages of (4, 8, 4) units, 1×1 conv5, pooling + FC."""
    if width not in V2_STAGE_CHANNELS:
        raise ValueError(f"width must be one of {sorted(V2_STAGE_CHANNELS)}, got {width}")
    *stages, last = V2_STAGE_CHANNELS[width]
    blocks: list[tuple[str, nn.Module]] = [("stem", shufflenet_stem(24))]
    cin = 24
    for s, (cout, reps) in enumerate(zip(stages, STAGE_REPEATS), start=2):
        for i in range(reps):
            blocks.append((f"stage{s}_{i}", ShuffleV2Unit(cin, cout, 2 if i == 0 else 1)))
            cin = cout
    blocks.append(("conv5", ConvBNReLU(cin, last, 1)))
    blocks.append(("head", classifier_head(last, num_classes)))
    return BlockChain(blocks)


@register_workload(kind="block", family="shufflenet", default_input=_channels_input("in_channels", 240))
def shufflenet_v1_unit(in_channels: int = 240, out_channels: int = 240, stride: int = 1, groups: int = 3,
                       kernel_size: int = 3) -> nn.Module:
    """ShuffleNet V1 unit: 1×1 group conv (g) + shuffle + k×k dw + 1×1 group conv; s=1 add, s=2 avgpool+concat."""
    if groups not in V1_STAGE_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(V1_STAGE_CHANNELS)}")
    return ShuffleV1Unit(in_channels, out_channels, stride, groups, kernel_size)


@register_workload(kind="block", family="shufflenet", default_input=_channels_input("in_channels", 116))
def shufflenet_v2_unit(in_channels: int = 116, out_channels: int = 116, stride: int = 1,
                       kernel_size: int = 3) -> nn.Module:
    """ShuffleNet V2 unit: s=1 channel split, 1×1→dw→1×1, concat, shuffle; s=2 two branches, concat, shuffle."""
    return ShuffleV2Unit(in_channels, out_channels, stride, kernel_size)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v1_g3_x1_0(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V1 1.0×, g=3 (paper: 140M mult-adds, 1.9M params)."""
    return build_shufflenet_v1(3, num_classes)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v1_g8_x1_0(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V1 1.0×, g=8 (paper Table 2: 140M mult-adds)."""
    return build_shufflenet_v1(8, num_classes)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v2_x0_5(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V2 0.5× (paper: 41M mult-adds, 1.4M params)."""
    return build_shufflenet_v2(0.5, num_classes)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v2_x1_0(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V2 1.0× (paper: 146M mult-adds, 2.3M params)."""
    return build_shufflenet_v2(1.0, num_classes)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v2_x1_5(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V2 1.5× (paper: 299M mult-adds, 3.5M params)."""
    return build_shufflenet_v2(1.5, num_classes)


@register_workload(kind="network", family="shufflenet", default_input=NETWORK_INPUT)
def shufflenet_v2_x2_0(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ShuffleNet V2 2.0× (paper: 591M mult-adds, 7.4M params)."""
    return build_shufflenet_v2(2.0, num_classes)
