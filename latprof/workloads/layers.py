"""Shared layers of the zoo: conv + norm + activation, Squeeze-and-Excite, make_divisible, and the
``SequentialNetwork`` container whose children are the network's blocks (so ``blocks()`` composes to ``forward``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from latprof.errors import unknown_choice

ACTIVATIONS = ("relu", "relu6", "hswish", "swish", "hsigmoid", "sigmoid", "none")
NORMS = ("bn", "gn", "none")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet / EfficientNet rule)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


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
    """Conv (no bias, 'same' padding for odd kernels) → norm → activation; the unit every block is made of."""
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


class ClassifierHead(nn.Sequential):
    """Global average pool → flatten → (dropout) → linear classifier."""

    def __init__(self, in_channels: int, num_classes: int = 1000, dropout: float = 0.0) -> None:
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


def image_input(kw: dict, size: int = 224) -> tuple[int, int, int, int]:
    """Default network input: one 3-channel image of ``size``×``size``."""
    return (1, 3, size, size)


def channels_input(key: str, default: int, size: int = 56):
    """Default block input: (1, kwargs[key] or default, size, size)."""
    return lambda kw: (1, int(kw.get(key, default)), size, size)
