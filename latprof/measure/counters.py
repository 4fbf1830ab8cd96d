"""Process counters around timed samples: page faults, context switches and CPU utilisation per call.

A latency reading is only as meaningful as the process conditions it was taken under. A convolution that pays
30,000 minor page faults per call measures the allocator, not the convolution; a sample with involuntary context
switches measures contention. ``getrusage`` of the whole process (every runtime thread included) is read around
each timed batch, so the counts cover exactly the calls that produced the samples.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

COUNTER_FIELDS = (
    "minor_faults_per_call",
    "major_faults_per_call",
    "voluntary_ctx_switches_per_call",
    "involuntary_ctx_switches_per_call",
    "cpu_util",
)


@dataclass
class Snapshot:
    minor_faults: int
    major_faults: int
    voluntary: int
    involuntary: int
    cpu_s: float
    wall_s: float


def snapshot() -> Snapshot:
    """Process-wide resource usage now (all threads: a runtime's pool counts, as it should)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return Snapshot(u.ru_minflt, u.ru_majflt, u.ru_nvcsw, u.ru_nivcsw, u.ru_utime + u.ru_stime, time.perf_counter())


@dataclass
class ProcessCounters:
    """Accumulated deltas over the timed batches of one callable."""

    calls: int = 0
    minor_faults: int = 0
    major_faults: int = 0
    voluntary: int = 0
    involuntary: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def add(self, before: Snapshot, after: Snapshot, calls: int) -> None:
        self.calls += calls
        self.minor_faults += after.minor_faults - before.minor_faults
        self.major_faults += after.major_faults - before.major_faults
        self.voluntary += after.voluntary - before.voluntary
        self.involuntary += after.involuntary - before.involuntary
        self.cpu_s += after.cpu_s - before.cpu_s
        self.wall_s += after.wall_s - before.wall_s

    def as_fields(self) -> dict[str, float | None]:
        """Row columns: per-call counts and CPU utilisation (process CPU seconds / wall seconds; > 1 = parallel)."""
        if not self.calls:
            return {f: None for f in COUNTER_FIELDS}
        return {
            "minor_faults_per_call": self.minor_faults / self.calls,
            "major_faults_per_call": self.major_faults / self.calls,
            "voluntary_ctx_switches_per_call": self.voluntary / self.calls,
            "involuntary_ctx_switches_per_call": self.involuntary / self.calls,
            "cpu_util": self.cpu_s / self.wall_s if self.wall_s > 0 else None,
        }

    def raw(self) -> dict[str, float | int]:
        return {"calls": self.calls, "minor_faults": self.minor_faults, "major_faults": self.major_faults,
                "voluntary": self.voluntary, "involuntary": self.involuntary, "cpu_s": self.cpu_s, "wall_s": self.wall_s}

    @classmethod
    def from_raw(cls, raw: dict[str, float | int]) -> ProcessCounters:
        return cls(**{k: raw[k] for k in ("calls", "minor_faults", "major_faults", "voluntary", "involuntary",
                                          "cpu_s", "wall_s")})  # type: ignore[arg-type]

    def __iadd__(self, other: ProcessCounters) -> ProcessCounters:
        for k, v in other.raw().items():
            setattr(self, k, getattr(self, k) + v)
        return self


def counter_fields(counters: ProcessCounters) -> dict[str, object]:
    """A row's counter columns and the raw counts pooling over processes adds up (``latprof.run.pool``)."""
    return {**counters.as_fields(), "counters_raw": counters.raw()}
