"""IGCV1 and IGCV3 blocks, and the IGCV3-D ImageNet network.

IGCV1 (Zhang et al., 2017): a primary group conv (L groups of M channels) followed, after an interleaving
permutation, by a secondary 1×1 group conv (M groups of L channels), then the inverse permutation.
IGCV2 (Xie et al., 2018): more than two structured-sparse convolutions — a channel-wise (depthwise) k×k conv, then
L−1 group 1×1 convs, each after an interleaving permutation, so every output channel depends on every input channel
(the complementary condition) with far fewer weights than one dense 1×1; balanced when each 1×1 has the same
branch width K = C^(1/(L−1)).
Low-rank factorisation (the IGCV talk's example): a dense C×C 1×1 conv as C×r then r×C, C²/(2Cr) fewer mult-adds.
IGCV3 (Sun et al., 2018): MobileNet V2's inverted residual made low-rank: group 1×1 expand (2 groups) →
permutation → depthwise → group 1×1 project (2 groups) → permutation; the "loose complementary condition" holds
because each project group sees channels from every expand group. IGCV3-D is the deeper MobileNet V2 layout
(4, 6, 8, 6, 6 blocks in the middle stages) of the official release (homles11/IGCV3, ``symbols/igcv3.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from latprof.workloads.layers import (NUM_CLASSES, ChannelShuffle, ClassifierHead, SequentialNetwork, channels_input,
                                      conv_norm_act)
from latprof.workloads.registry import register_networks, register_workload

# t (expansion), c (output channels), n (repeats), s (stride of the first) — IGCV3-D, 224×224
IGCV3_D_CONFIG = ((1, 16, 1, 1), (6, 24, 4, 2), (6, 32, 6, 2), (6, 64, 8, 2), (6, 96, 6, 1), (6, 160, 6, 2),
                  (6, 320, 1, 1))


class IGCV1Block(nn.Module):
    """Interleaved group convolution: primary k×k group conv (L groups) → permute → secondary 1×1 (M groups) → permute back."""

    def __init__(self, channels: int, primary_groups: int = 4, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if primary_groups < 1 or channels % primary_groups:
            raise ValueError(f"channels={channels} must split into primary_groups={primary_groups}")
        secondary_groups = channels // primary_groups
        self.primary = conv_norm_act(channels, channels, kernel_size, stride, groups=primary_groups, act=None)
        self.permute = ChannelShuffle(primary_groups)
        self.secondary = nn.Conv2d(channels, channels, 1, groups=secondary_groups, bias=False)
        self.unpermute = ChannelShuffle(secondary_groups)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unpermute(self.secondary(self.permute(self.primary(x))))
        return self.relu(self.bn(x))


class IGCV2Block(nn.Module):
    """IGCV2: depthwise k×k → for each 1×1 group conv: permute (interleave the previous groups) → group 1×1; BN + ReLU
    after the last."""

    def __init__(self, channels: int, pointwise_groups: Sequence[int] = (8, 8), kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__()
        groups = [int(g) for g in pointwise_groups]
        if not groups or any(g < 1 or channels % g for g in groups):
            raise ValueError(f"pointwise_groups={groups} must be non-empty and each divide channels={channels}")
        layers: list[nn.Module] = [conv_norm_act(channels, channels, kernel_size, stride, groups=channels, act=None)]
        previous = 1  # the depthwise conv mixes nothing across channels: no permutation before the first 1×1
        for i, g in enumerate(groups):
            layers.append(ChannelShuffle(previous))
            layers.append(conv_norm_act(channels, channels, 1, groups=g, act="relu" if i == len(groups) - 1 else None))
            previous = g
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class IGCV3Block(nn.Module):
    """IGCV3 inverted residual: 1×1 group expand → permute → k×k dw → 1×1 group project → permute (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: float = 6,
                 kernel_size: int = 3, groups: int = 2, residual: bool = True) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        if in_channels % groups or hidden % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}→{hidden}→{out_channels} must all divide into groups={groups}")
        self.use_residual = residual and stride == 1 and in_channels == out_channels
        self.expand = conv_norm_act(in_channels, hidden, 1, groups=groups, act=None)
        self.permute = ChannelShuffle(groups)
        self.depthwise = conv_norm_act(hidden, hidden, kernel_size, stride, groups=hidden, act="relu6")
        self.project = conv_norm_act(hidden, out_channels, 1, groups=groups, act=None)
        self.unpermute = ChannelShuffle(out_channels // groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.unpermute(self.project(self.depthwise(self.permute(self.expand(x)))))
        return x + out if self.use_residual else out


def build_igcv3(config: tuple[tuple[int, int, int, int], ...] = IGCV3_D_CONFIG, stem: int = 32, last: int = 1280,
                num_classes: int = NUM_CLASSES) -> SequentialNetwork:
    """IGCV3 network: 3×3 stem, IGCV3 blocks per ``config``, 1×1 conv to ``last``, pooling + FC."""
    blocks: list[tuple[str, nn.Module]] = [("stem", conv_norm_act(3, stem, 3, 2, act="relu6"))]
    cin = stem
    for s_idx, (t, c, n, s) in enumerate(config):
        for i in range(n):
            blocks.append((f"stage{s_idx}_{i}", IGCV3Block(cin, c, s if i == 0 else 1, t, residual=i > 0)))
            cin = c
    blocks.append(("conv_last", conv_norm_act(cin, last, 1, act="relu6")))
    blocks.append(("head", ClassifierHead(last, num_classes)))
    return SequentialNetwork(blocks)


@register_workload(kind="block", family="igcv", default_input=channels_input("in_channels", 64))
def igcv1_block(in_channels: int = 64, primary_groups: int = 4, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """IGCV1: primary k×k group conv (L groups of M ch) → permutation → secondary 1×1 group conv (M groups)."""
    return IGCV1Block(in_channels, primary_groups, kernel_size, stride)


@register_workload(kind="block", family="igcv", default_input=channels_input("in_channels", 64))
def igcv2_block(in_channels: int = 64, pointwise_groups: Sequence[int] = (8, 8), kernel_size: int = 3,
                stride: int = 1) -> nn.Module:
    """IGCV2: depthwise k×k → (permutation → group 1×1) per entry of pointwise_groups; (8, 8) is L=3 at 64 channels."""
    return IGCV2Block(in_channels, pointwise_groups, kernel_size, stride)


@register_workload(kind="block", family="igcv", default_input=channels_input("in_channels", 100))
def low_rank_pointwise(in_channels: int = 100, out_channels: int | None = None, rank: int = 0) -> nn.Module:
    """Dense 1×1 conv C→C' (rank 0), or its rank-r factorisation C→r→C' (two 1×1 convs, no norm between)."""
    out_channels = out_channels or in_channels
    if rank < 0:
        raise ValueError(f"rank must be >= 0 (0 = dense), got {rank}")
    if rank == 0:
        return nn.Conv2d(in_channels, out_channels, 1, bias=False)
    return nn.Sequential(nn.Conv2d(in_channels, rank, 1, bias=False), nn.Conv2d(rank, out_channels, 1, bias=False))


@register_workload(kind="block", family="igcv", default_input=channels_input("in_channels", 32))
def igcv3_block(in_channels: int = 32, out_channels: int = 32, stride: int = 1, expansion: float = 6,
                kernel_size: int = 3, groups: int = 2) -> nn.Module:
    """IGCV3: 1×1 group expand → permutation → dw k×k → 1×1 group project → permutation; residual when shapes match."""
    return IGCV3Block(in_channels, out_channels, stride, expansion, kernel_size, groups)


register_networks("igcv", build_igcv3, {
    "igcv3_d_x1_0": ("IGCV3-D 1.0× (official release; ShuffleNet V2 paper Table 8: 318M mult-adds, 3.5M params).",),
})
