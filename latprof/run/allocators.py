"""Declared allocators: the memory allocator a worker process runs with is part of every measurement.

glibc's malloc returns large blocks (above ``M_MMAP_THRESHOLD``, 128 KiB to start) to the kernel when freed and
maps them again on the next call, so a fresh process pays a minor page fault per 4 KiB page of every large
intermediate tensor, every call (30,000 faults and 3.5x the latency for G1 x4 on our machine). A long-running
process reaches a different state: glibc raises the threshold dynamically after large frees, and anything else
that ran may have done so too. latprof therefore never leaves it to chance; a worker runs with one of:

- ``system``: glibc as a plain script gets it (what a short-lived CLI or a cold start sees);
- ``steady``: glibc with the mmap and trim thresholds raised, so freed memory is reused: what a long-running server
  reaches, pinned down instead of drifting;
- ``jemalloc`` / ``tcmalloc``: the library preloaded (``LD_PRELOAD``) when it is found on the machine.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
from pathlib import Path

from latprof.errors import LatprofError, unknown_choice

ALLOCATORS = ("steady", "system", "jemalloc", "tcmalloc")
# The default, chosen by measurement (README, "Process conditions"): steady readings repeat across invocations and
# do not depend on what ran before in the process; `system` is one flag away for cold-start questions.
DEFAULT_ALLOCATOR = "steady"

STEADY_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(64 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 1024 * 1024),
}
GLIBC_TUNABLES = tuple(STEADY_ENV)
_LIBRARIES = {
    "jemalloc": ("jemalloc", ["libjemalloc.so.2", "libjemalloc.so"]),
    "tcmalloc": ("tcmalloc_minimal", ["libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so"]),
}
_SEARCH_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib",
                "/opt/homebrew/lib"]


def find_library(name: str) -> str | None:
    """Path of the jemalloc / tcmalloc shared library on this machine (``$LATPROF_<NAME>`` overrides), or None."""
    override = os.environ.get(f"LATPROF_{name.upper()}")
    if override:
        return override if Path(override).is_file() else None
    short, files = _LIBRARIES[name]
    for d in _SEARCH_DIRS:
        for f in files:
            p = Path(d) / f
            if p.is_file():
                return str(p)
    for d in _SEARCH_DIRS:  # versioned names, e.g. libtcmalloc_minimal.so.4.5.9
        hits = sorted(glob.glob(f"{d}/lib{short}.so*"))
        if hits:
            return hits[0]
    found = ctypes.util.find_library(short)
    return found if found and Path(found).is_absolute() else None


def validate_allocator(name: str) -> None:
    if name not in ALLOCATORS:
        raise unknown_choice("--allocator", name, ALLOCATORS)
    if name in _LIBRARIES and find_library(name) is None:
        pkg = "libjemalloc2" if name == "jemalloc" else "libtcmalloc-minimal4"
        raise LatprofError(f"--allocator {name}: the {name} library is not found on this machine (install it, e.g. "
                           f"'apt-get install {pkg}', or set LATPROF_{name.upper()}=/path/to/lib); "
                           f"available: {', '.join(available_allocators())}")


def available_allocators() -> list[str]:
    return [a for a in ALLOCATORS if a not in _LIBRARIES or find_library(a) is not None]


def allocator_env(name: str, base: dict[str, str]) -> dict[str, str]:
    """The worker's environment for ``name``: glibc tunables and LD_PRELOAD set or cleared, nothing left over."""
    validate_allocator(name)
    env = {k: v for k, v in base.items() if k not in GLIBC_TUNABLES and k != "LD_PRELOAD"}
    if name == "steady":
        env.update(STEADY_ENV)
    elif name in _LIBRARIES:
        env["LD_PRELOAD"] = find_library(name) or ""
    return env


def allocator_in_force(environ: dict[str, str] | None = None) -> dict[str, object]:
    """What this process runs with, read from its environment: the declared name and the settings behind it."""
    env = os.environ if environ is None else environ
    preload = env.get("LD_PRELOAD", "")
    tunables = {k: env[k] for k in GLIBC_TUNABLES if k in env}
    if "jemalloc" in preload:
        name = "jemalloc"
    elif "tcmalloc" in preload:
        name = "tcmalloc"
    elif tunables == STEADY_ENV:
        name = "steady"
    elif tunables:
        name = "custom"
    else:
        name = "system"
    return {"allocator": name, "allocator_settings": {**tunables, **({"LD_PRELOAD": preload} if preload else {})}}
