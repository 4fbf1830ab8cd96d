"""Environment fingerprint: what machine and software produced a measurement, and a stable ``hardware_id``.

Results from different machines must never be compared silently; the fingerprint says what ran, and the
``hardware_id`` (a hash of the hardware part only) says whether two results files came from the same box.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

_SYS_CPU = Path("/sys/devices/system/cpu")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read(Path("/proc/cpuinfo")) or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    return _read(_SYS_CPU / "cpu0" / "cpufreq" / "scaling_governor")


def turbo_state() -> str:
    """'on', 'off' or 'unknown' (intel_pstate no_turbo, or the generic cpufreq boost switch)."""
    no_turbo = _read(_SYS_CPU / "intel_pstate" / "no_turbo")
    if no_turbo is not None:
        return "off" if no_turbo == "1" else "on"
    boost = _read(_SYS_CPU / "cpufreq" / "boost")
    if boost is not None:
        return "on" if boost == "1" else "off"
    return "unknown"


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # an absent or broken optional runtime is recorded as absent
        return None
    return str(getattr(mod, "__version__", "unknown"))


def gpu_info() -> list[dict[str, Any]]:
    """Name, memory, driver, CUDA/cuDNN versions and clocks of each visible CUDA device."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    smi: dict[int, dict[str, str]] = {}
    if shutil.which("nvidia-smi"):
        fields = "index,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,persistence_mode"
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            for line in out.strip().splitlines():
                vals = [v.strip() for v in line.split(",")]
                smi[int(vals[0])] = dict(zip(fields.split(",")[1:], vals[1:]))
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        q = smi.get(i, {})
        gpus.append({
            "index": i,
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count,
            "driver": q.get("driver_version"),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "clock_sm_mhz": q.get("clocks.sm"),
            "clock_sm_max_mhz": q.get("clocks.max.sm"),
            "clock_mem_mhz": q.get("clocks.mem"),
            "power_limit_w": q.get("power.limit"),
            "persistence_mode": q.get("persistence_mode"),
        })
    return gpus


def thread_settings() -> dict[str, Any]:
    """Thread settings actually in force in this process (not just what was asked for)."""
    import torch

    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    try:
        affinity = sorted(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):
        affinity = None
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "torch_parallel_backend": _parallel_backend(torch.__config__.parallel_info()),
        "cpu_affinity": affinity,
        **{k.lower(): v for k, v in env.items()},
    }


def _parallel_backend(info: str) -> str | None:
    m = re.search(r"ATen parallel backend:\s*(.+)", info)
    return m.group(1).strip() if m else None


@dataclass
class Environment:
    """The fingerprint. ``hardware`` feeds ``hardware_id``; ``software`` and ``threads`` are context."""

    hardware: dict[str, Any]
    software: dict[str, Any]
    threads: dict[str, Any]
    state: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def hardware_id(self) -> str:
        stable = {k: self.hardware[k] for k in ("cpu_model", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "machine")}
        stable["gpus"] = [g["name"] for g in self.hardware.get("gpus", [])]
        return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return {
            "hardware_id": self.hardware_id,
            "hardware": self.hardware,
            "software": self.software,
            "threads": self.threads,
            "state": self.state,
            "warnings": self.warnings,
        }


def collect() -> Environment:
    """Read the fingerprint of this machine now."""
    freq = psutil.cpu_freq()
    hardware = {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_freq_mhz": {"current": freq.current, "min": freq.min, "max": freq.max} if freq else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "gpus": gpu_info(),
    }
    software = {
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "latprof": _version("latprof"),
    }
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    state = {
        "cpu_governor": cpu_governor(),
        "turbo": turbo_state(),
        "load_avg_1m": load1,
        "memory_available_gib": round(psutil.virtual_memory().available / 2**30, 1),
    }
    env = Environment(hardware, software, thread_settings(), state)
    env.warnings = environment_warnings(env)
    return env


def environment_warnings(env: Environment) -> list[str]:
    """Conditions that make latency figures less repeatable."""
    out = []
    gov = env.state.get("cpu_governor")
    if gov is None:
        out.append("CPU frequency governor not readable; frequency scaling may add noise")
    elif gov != "performance":
        out.append(f"CPU governor is {gov!r}, not 'performance'; frequency scaling may add noise")
    if env.state.get("turbo") == "unknown":
        out.append("turbo/boost state unknown; clock speed may vary between runs")
    load = env.state.get("load_avg_1m")
    cores = env.hardware.get("cpu_logical_cores") or 1
    if load is not None and load > 0.5 * cores:
        out.append(f"system load is high ({load:.2f} over 1 min on {cores} logical cores); timings will be noisy")
    return out
