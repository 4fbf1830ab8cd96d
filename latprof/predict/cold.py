"""Cache-cold timing for calibration: a network's forward pass finds its weights and its input out of cache.

Measured here (docs/predict.md, "Why cold"): the blocks of a zoo network each timed alone in a loop summed to about
half the network's latency on PyTorch eager, 1 thread, because a block repeated keeps its weights and activations in
the core's cache while a forward touches each weight once; the same blocks timed after the caches were evicted
summed to within about 20% of the network. But a kernel replayed fully cold (inputs too) costs more than in a
forward, where its input is what the previous op just wrote: small cells then read 0.3-0.5 of their cold kernels'
sum. So calibration times kernels and cells the way a network meets them: each call after a write through a buffer
larger than the last-level cache (weights cold), then a read of the call's input (the activation warm, as the
previous op leaves it); neither is timed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

from latprof.measure.protocol import gc_paused

FALLBACK_LLC_BYTES = 32 * 1024 * 1024


def last_level_cache_bytes() -> int:
    """The largest CPU cache this process can see (sysconf; 32 MiB when the platform does not say)."""
    sizes = []
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            sizes.append(int(os.sysconf(name)))
        except (ValueError, OSError, AttributeError):
            continue
    return max([s for s in sizes if s > 0], default=FALLBACK_LLC_BYTES)


class Evictor:
    """Writes through twice the last-level cache, so what the next call reads comes from memory."""

    def __init__(self, nbytes: int | None = None) -> None:
        self.buffer = torch.zeros(max(1, (nbytes or 2 * last_level_cache_bytes()) // 4))

    def __call__(self) -> None:
        self.buffer.add_(1.0)


def cold_timer(fn: Callable[[], object], evict: Callable[[], None], touch: Callable[[], object] | None = None,
               clock: Callable[[], float] = time.perf_counter) -> Callable[[int], float]:
    """Batch timer (``latprof.measure.protocol``'s interface): the summed wall time of n calls of ``fn``, each
    after ``evict()`` and then ``touch()`` (reading the call's input back into cache); neither is timed. The
    garbage collector is paused, as in ``wall_clock_timer``."""

    def run(n: int) -> float:
        with gc_paused():
            total = 0.0
            for _ in range(n):
                evict()
                if touch is not None:
                    touch()
                start = clock()
                fn()
                total += clock() - start
            return total

    return run


def reader(value: object) -> Callable[[], object] | None:
    """A ``touch`` for ``cold_timer``: reads the first tensor found in ``value`` (an op's or a cell's input)."""
    from torch.utils._pytree import tree_flatten

    first = next((t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor) and t.numel()), None)
    if first is None:
        return None
    return lambda: first.sum()
