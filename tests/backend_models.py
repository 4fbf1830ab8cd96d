"""Small modules shared by the backend tests (not a test file)."""

from __future__ import annotations

import torch
from torch import nn


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: view (N, g, C/g, H, W), transpose, copy back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class TinyShuffleNet(nn.Module):
    """Conv+ReLU stem, a branch with pointwise and depthwise conv, concat, channel shuffle, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16))
        self.shuffle = ChannelShuffle()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([x, self.branch(x)], 1)
        return self.fc(torch.flatten(self.pool(self.shuffle(y)), 1))


class Eigvals(nn.Module):
    """No ONNX exporter can express complex eigenvalues: export must fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x[0, 0, :4, :4]).real.sum() + x


def tiny_workload(batch: int = 1):
    from latprof.workloads.registry import Workload

    torch.manual_seed(0)
    return Workload("tiny_shufflenet", TinyShuffleNet().eval(), (batch, 3, 16, 16))
