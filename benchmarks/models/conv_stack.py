"""A small conv stack of our own for the harness benchmark: four 3x3 conv-BN-ReLU layers, 32 channels, 28x28."""

from torch import nn


def build() -> tuple[nn.Module, tuple[int, ...]]:
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()]
    return nn.Sequential(*layers), (1, 32, 28, 28)
