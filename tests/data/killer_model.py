"""A model whose forward kills its own worker process (SIGKILL) after a few calls: tests the engine's crash path.

It only does so inside a latprof worker (``LATPROF_WORKER=1``), so the parent's input check survives.
"""

import os
import signal

import torch
from torch import nn


class SelfKilling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if os.environ.get("LATPROF_WORKER") == "1" and self.calls > 20:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.conv(x)


def build() -> tuple[nn.Module, tuple[int, ...]]:
    return SelfKilling(), (1, 3, 16, 16)
