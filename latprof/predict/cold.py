"""Cache-cold and cache-warm timing for calibration: where a network's forward finds its weights.

Measured here (docs/predict.md, "Why cold"): the blocks of a zoo network each timed alone in a loop summed to about
half the network's latency on PyTorch eager, 1 thread, because a block repeated keeps its weights and activations in
the core's cache while a forward touches each weight once; the same blocks timed after the caches were evicted
summed to within about 20% of the network. But a kernel replayed fully cold (inputs too) costs more than in a
forward, where its input is what the previous op just wrote: small cells then read 0.3-0.5 of their cold kernels'
sum. So calibration times kernels and cells the way a network meets them: each call after a write through a buffer
larger than the last-level cache (weights cold), then a read of the call's input (the activation warm, as the
previous op leaves it); neither is timed.

A network small enough to keep its weights in the last-level cache between forwards meets them there instead, so
every kernel is also read *warm*: after a write through twice the core's L2 only (the weights then come from the
last-level cache), and the same read of its input. Where a forward sits between the two is fitted on calibration
chains (``latprof.predict.residency``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from latprof.measure.protocol import gc_paused

FALLBACK_LLC_BYTES = 32 * 1024 * 1024
# A cold reading writes through twice the last-level cache, but never more than this: twice the largest footprint
# the calibration chains are drawn around (128 MiB, ``latprof.predict.space.CHAIN_FOOTPRINT_LOG2``; the zoo's
# largest networks carry about 100 MiB of weights), so the weights are at least as far away as a forward of any of
# them leaves them. On a VM that sees a 480 MiB L3, writing through 960 MiB took 72 ms per cold sample, and a
# 900 s torch-cpu calibration read only 756 kernels (7 samples each, every reading stopped by its time cap); through
# 256 MiB, 20 ms. There a 1x1 convolution of 1 MiB of weights read 0.66 ms warm, 0.72 after 64 MiB, 0.85 after
# 256 MiB and 1.01 after 960 MiB: what lies beyond the cap is more than any zoo network's own traffic evicts.
COLD_EVICT_CAP_BYTES = 256 * 1024 * 1024
FALLBACK_L2_BYTES = 1024 * 1024
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def cache_bytes(level: int) -> int:
    """Size of this CPU's data or unified cache of ``level`` as cpu0 sees it (Linux sysfs, then sysconf); 0 when
    neither says."""
    for index in sorted(_SYSFS_CACHE.glob("index*")):
        try:
            if int((index / "level").read_text()) != level or (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip()
            return int(size[:-1]) * _UNITS[size[-1]] if size[-1] in _UNITS else int(size)
        except (OSError, ValueError):
            continue
    try:
        return max(0, int(os.sysconf(f"SC_LEVEL{level}_CACHE_SIZE")))
    except (ValueError, OSError, AttributeError):
        return 0


def last_level_cache_bytes() -> int:
    """The largest CPU cache this process can see (32 MiB when the platform does not say)."""
    return max(cache_bytes(3), cache_bytes(2)) or FALLBACK_LLC_BYTES


def l2_cache_bytes() -> int:
    """One core's L2 (1 MiB when the platform does not say)."""
    return cache_bytes(2) or FALLBACK_L2_BYTES


def cold_evict_bytes() -> int:
    """What a cold reading writes through: twice the last-level cache, at most ``COLD_EVICT_CAP_BYTES``."""
    return min(2 * last_level_cache_bytes(), COLD_EVICT_CAP_BYTES)


class Evictor:
    """Writes through ``nbytes`` (default ``cold_evict_bytes()``, so what the next call reads comes from memory, or
    from as far as a large cache keeps it; ``Evictor.warm()``: twice the L2, so it comes from the last-level
    cache)."""

    def __init__(self, nbytes: int | None = None) -> None:
        self.nbytes = nbytes or cold_evict_bytes()
        self.buffer = torch.zeros(max(1, self.nbytes // 4))

    @classmethod
    def warm(cls) -> Evictor:
        return cls(2 * l2_cache_bytes())

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
