"""The blocks of ShuffleNet V2's controlled experiments (Section 2), one per guideline.

Plain convolutions without BN or activation unless the guideline is about them, so the experiment isolates what
the guideline names. The kernel specs in ``kernels/`` stack these 10 times on 56×56 inputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from latprof.workloads.layers import channels_input
from latprof.workloads.registry import register_workload


class PointwisePair(nn.Module):
    """G1: conv1x1 c1→c2 then conv1x1 c2→c1; FLOPs h·w·2·c1·c2, MAC minimal when c1 == c2."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c1, c2, 1, bias=False)
        self.reduce = nn.Conv2d(c2, c1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.reduce(self.expand(x))


class FragmentBlock(nn.Module):
    """G3: ``fragments`` conv1x1 c→c in series, or in parallel branches merged by element-wise add."""

    def __init__(self, channels: int, fragments: int, arrangement: str) -> None:
        super().__init__()
        if arrangement not in ("series", "parallel"):
            raise ValueError(f"arrangement must be 'series' or 'parallel', got {arrangement!r}")
        if fragments < 1:
            raise ValueError("fragments must be >= 1")
        self.arrangement = arrangement
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(fragments))

    def forward(self, x: Tensor) -> Tensor:
        if self.arrangement == "series":
            for conv in self.convs:
                x = conv(x)
            return x
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


@register_workload(kind="block", family="guideline", default_input=channels_input("c1", 32))
def pointwise_pair(c1: int = 32, c2: int = 32) -> nn.Module:
    """G1 block: conv1x1 c1→c2 then conv1x1 c2→c1 (ShuffleNet V2, Table 1)."""
    return PointwisePair(c1, c2)


@register_workload(kind="block", family="guideline", default_input=channels_input("channels", 64))
def pointwise_group_conv(channels: int = 64, groups: int = 1) -> nn.Module:
    """G2 block: one pointwise group convolution c→c with ``groups`` groups (ShuffleNet V2, Table 2)."""
    return nn.Conv2d(channels, channels, 1, groups=groups, bias=False)


@register_workload(kind="block", family="guideline", default_input=channels_input("channels", 64))
def fragment_block(channels: int = 64, fragments: int = 1, arrangement: str = "series") -> nn.Module:
    """G3 block: 1-4 conv1x1 in series or in parallel (add-merged) (ShuffleNet V2, Table 3)."""
    return FragmentBlock(channels, fragments, arrangement)
