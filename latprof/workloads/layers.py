"""The zoo's layer library: every family builds its blocks and networks from these pieces (in the manner of timm's
``layers``), and model files import only from here and from the registry.

* channel rounding and default inputs: ``make_divisible``, ``channels_input``;
* conv + norm + activation: ``activation``, ``norm_layer``, ``conv_norm_act`` (the one conv-BN helper);
* channel shuffle: ``channel_shuffle``, ``shuffle_permutation``, ``ChannelShuffle``;
* ``SqueezeExcite``, ``ResidualBody`` (identity shortcut around a body) and ``MBConv`` (MobileNet V2/V3, EfficientNet);
* ``ClassifierHead`` (the one classifier head) and ``SequentialNetwork`` (the one network container: its children
  are the network's blocks, so ``blocks()`` composes to ``forward``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from latprof.errors import unknown_choice

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "hsigmoid", "sigmoid", "none")
NORMS = ("bn", "gn", "none")
NUM_CLASSES = 1000


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet / EfficientNet rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def channels_input(key: str, default: int, size: int = 56) -> Any:
    """Default block input: (1, kwargs[key] or default, size, size)."""
    return lambda kw: (1, int(kw.get(key, default)), size, size)


def activation(name: str | None) -> nn.Module:
    """An activation module by name; ``none`` (or None) is the identity."""
    key = (name or "none").lower()
    table = {
        "relu": lambda: nn.ReLU(inplace=True),
        "relu6": lambda: nn.ReLU6(inplace=True),
        "hswish": lambda: nn.Hardswish(inplace=True),
        "swish": lambda: nn.SiLU(inplace=True),
        "hsigmoid": lambda: nn.Hardsigmoid(inplace=True),
        "sigmoid": nn.Sigmoid,
        "none": nn.Identity,
    }
    if key not in table:
        raise unknown_choice("activation", str(name), ACTIVATIONS)
    return table[key]()


def norm_layer(name: str, channels: int, groups: int = 32) -> nn.Module:
    """BatchNorm (``bn``), GroupNorm (``gn``, ``groups`` groups or fewer when channels do not divide) or none."""
    key = (name or "none").lower()
    if key == "bn":
        return nn.BatchNorm2d(channels)
    if key == "gn":
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if key == "none":
        return nn.Identity()
    raise unknown_choice("norm", str(name), NORMS)


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 3,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    norm: str = "bn",
    act: str | None = "relu",
) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd kernels) → norm → activation; the unit every block is made of.

    ``act=None`` gives conv → BN (a linear projection); the children are numbered 0 (conv), 1 (norm), 2 (act).
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, (kh, kw), stride, padding, dilation, groups, bias=norm == "none"),
    ]
    if norm != "none":
        layers.append(norm_layer(norm, out_channels))
    if act and act != "none":
        layers.append(activation(act))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ channel shuffle
# Written out with an explicit ``contiguous()`` on purpose: the transpose is a free view, the copy is the real work,
# and a cost model that charges copies (ShuffleNet V2's memory access cost) must see it.
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


# ------------------------------------------------------------------ blocks shared by several families
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: global pool → 1×1 reduce → act → 1×1 expand → gate → channel-wise scale."""

    def __init__(self, channels: int, squeeze_channels: int, act: str = "relu", gate: str = "sigmoid") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = activation(act)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * s


class ResidualBody(nn.Module):
    """``body(x)``, plus the identity ``x`` when ``residual`` (stride 1 and as many channels out as in)."""

    def __init__(self, body: nn.Module, residual: bool) -> None:
        super().__init__()
        self.body = body
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class MBConv(ResidualBody):
    """Inverted residual / MBConv: [1×1 expand] → depthwise k×k → [SE] → 1×1 linear projection, + identity.

    The expansion conv is left out when ``expanded_channels == in_channels`` (MobileNet V2 t=1, V3's first block);
    the identity shortcut is used when stride is 1 and the channels match.
    """

    def __init__(
        self,
        in_channels: int,
        expanded_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str = "relu6",
        se_channels: int = 0,
        se_act: str = "relu",
        se_gate: str = "hsigmoid",
    ) -> None:
        layers: list[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(conv_norm_act(in_channels, expanded_channels, 1, 1, act=act))
        layers.append(
            conv_norm_act(expanded_channels, expanded_channels, kernel_size, stride, groups=expanded_channels, act=act)
        )
        if se_channels > 0:
            layers.append(SqueezeExcite(expanded_channels, se_channels, se_act, se_gate))
        layers.append(conv_norm_act(expanded_channels, out_channels, 1, 1, act=None))
        super().__init__(nn.Sequential(*layers), stride == 1 and in_channels == out_channels)


# ------------------------------------------------------------------ head and network container
class ClassifierHead(nn.Sequential):
    """Global average pool → flatten → (dropout) → linear classifier."""

    def __init__(self, in_channels: int, num_classes: int = NUM_CLASSES, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_channels, num_classes))
        super().__init__(*layers)


class SequentialNetwork(nn.Sequential):
    """A network as an ordered list of named blocks; ``blocks()`` returns them, and their chain is ``forward``."""

    def __init__(self, blocks: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__(OrderedDict(blocks))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks in forward order: stem, each block, head (pooling and classifier)."""
        return list(self.named_children())
