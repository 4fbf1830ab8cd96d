"""Channel shuffle the standard way (view → transpose → contiguous → view).

Written out with an explicit ``contiguous()`` on purpose: the transpose is a free view, the copy is the real work,
and a cost model that charges copies (ShuffleNet V2's memory access cost) must see it.
"""

from __future__ import annotations

import torch
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups: channel ``g*cpg + i`` moves to position ``i*groups + g``."""
    n, c, h, w = x.shape
    if not torch.jit.is_tracing() and (groups < 1 or c % groups):
        raise ValueError(f"channel_shuffle: {c} channels do not split into {groups} groups")
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """Source index of each output channel of :func:`channel_shuffle` (``out[:, j] = x[:, perm[j]]``)."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


class ChannelShuffle(nn.Module):
    """Module wrapper of :func:`channel_shuffle`, so the shuffle has its own module path in a cost report."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups) if self.groups > 1 else x

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
