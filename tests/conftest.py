"""Shared fixtures: synthetic timers and a fake clock, so protocol tests never depend on real timing; one ONNX export
cache for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


class FakeClock:
    """A clock that only moves when a synthetic timer says time has passed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SyntheticTimer:
    """``run(n)``: n calls each lasting ``per_call_s`` × (1 + noise), advancing the fake clock by the same.

    ``warmup_factor``/``warmup_calls``: cold calls start that much slower and the slowdown decays exponentially with
    time constant ``warmup_calls`` (caches, allocator and lazy initialisation warming up).
    """

    def __init__(self, clock: FakeClock, per_call_s: float, noise: float = 0.0, seed: int = 0,
                 warmup_calls: int = 0, warmup_factor: float = 1.0) -> None:
        self.clock = clock
        self.per_call_s = per_call_s
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.warmup_calls = warmup_calls
        self.warmup_factor = warmup_factor

    def __call__(self, n: int) -> float:
        total = 0.0
        for _ in range(n):
            slow = 1.0 + (self.warmup_factor - 1.0) * float(np.exp(-self.calls / self.warmup_calls)) if self.warmup_calls else 1.0
            total += self.per_call_s * slow * (1.0 + self.noise * float(self.rng.standard_normal()))
            self.calls += 1
        total = max(total, 1e-12)
        self.clock.now += total
        return total


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, oversubscribed threads make tiny networks 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export cache for the session (``$LATPROF_CACHE``, inherited by worker processes), shared by the
    pytest-xdist workers of one run: a model exported by one test is a cache hit for the next, the developer's
    ``~/.cache/latprof`` is never read or written, and every run starts empty, as on a fresh CI machine. Cache files
    are written under a per-process temporary name and renamed into place, so concurrent workers are safe. Tests
    about the cache itself point ``LATPROF_CACHE`` at their own folder."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "onnx-export-cache"
    root.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATPROF_CACHE", str(root))
        yield root


# ------------------------------------------------------------------ scheduling over the pytest-xdist workers
# Speed only: these change where and in which order tests run, never what they check. With --dist loadfile a file
# runs on one worker (module fixtures such as the fleet tests' Ray cluster or the zoo's counts are built once, and a
# file's tests never run side by side), except the files in SPLIT_FILES: independent tests of several seconds each,
# which go one by one to whichever worker is free. Files are handed out longest first (LONGEST_FIRST, from
# `pytest --durations`; --no-loadscope-reorder keeps this order instead of xdist's sort by test count), so the long
# files overlap instead of ending the run one after another. (Not --dist loadgroup: pytest-xdist 3.8 tags a group in
# the node id through an attribute pytest 9 no longer reads, so the groups are silently ignored.)
SPLIT_FILES = ("test_workloads_onnx.py",)
LONGEST_FIRST = ("test_fleet.py", "test_workloads_onnx.py", "test_export_cache.py", "test_workloads_networks.py",
                 "test_run_engine.py", "test_interrupt.py", "test_regress_ci.py", "test_sweep_interrupt.py",
                 "test_sweep.py", "test_workloads_cli.py", "test_claims.py", "test_cli.py", "test_report.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: pytest -p no:xdist runs without the plugin
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """--dist loadfile, except that the tests of SPLIT_FILES are scheduled one by one."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SplitLoadFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path.rsplit("/", 1)[-1] in SPLIT_FILES else path

    return SplitLoadFileScheduling(config, log)
