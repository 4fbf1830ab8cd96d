"""Environment fingerprint: what machine and software produced a measurement, and a stable ``hardware_id``.

Results from different machines must never be compared silently; the fingerprint says what ran, and the
``hardware_id`` (a hash of the hardware part only) says whether two results files came from the same box.

What tells machines apart. A marketing name such as "AMD EPYC" (all a hypervisor may show) covers several CPU
generations, so the id hashes the CPU's identity as the kernel reports it: vendor, family, model number and
stepping (x86 ``/proc/cpuinfo``; on ARM implementer, architecture, part and variant/revision), the ISA extensions
that kernels dispatch on (a curated list: SSE4/AVX/AVX2/FMA/AVX-512 subsets/VNNI/BF16/FP16/AMX on x86,
NEON/ASIMD dot product/SVE/SVE2/I8MM/BF16 on ARM; the other flags do not change which kernel runs), the L1d/L1i/L2/L3
cache sizes of cpu0, the machine architecture, physical and logical core counts, memory (GiB), whether the CPU runs
under a hypervisor (the cpuinfo ``hypervisor`` flag or ``/sys/hypervisor``), and each GPU's name and compute
capability, SM count, memory and MIG profile (``GPU_ID_FIELDS``; each CUDA device is matched to its nvidia-smi row by UUID,
``latprof.measure.gpu``). ``hardware_id_fields`` returns exactly those fields; ``hardware_differences`` names the ones that differ
between two stored environment records. Recorded but not hashed: the microcode revision (see
``hardware_id_fields``), the CPU frequency (it changes from run to run), the hypervisor's vendor (its detection
depends on tools installed in the container, e.g. ``systemd-detect-virt``), and drivers, clocks and software
versions. Where a field cannot be read (non-Linux systems, containers hiding ``/sys``) it is recorded as None.
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
from collections.abc import Callable
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


# ISA extensions that compute kernels (oneDNN, MLAS, XNNPACK, FBGEMM, Arm Compute Library) choose code paths on,
# by their Linux /proc/cpuinfo names. Other flags (security, virtualisation, power) do not pick a kernel.
ISA_FLAGS_X86 = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
)
ISA_FLAGS_ARM = (
    "neon", "vfpv4", "asimd", "asimdhp", "fphp", "asimddp", "asimdfhm", "i8mm", "bf16",
    "sve", "sve2", "svei8mm", "svebf16", "sme", "sme2",
)
ISA_FLAGS = frozenset(ISA_FLAGS_X86 + ISA_FLAGS_ARM)

# ARM "CPU implementer" codes (MIDR_EL1) of the usual vendors; others are kept as the hex code.
ARM_IMPLEMENTERS = {
    "0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu", "0x48": "HiSilicon", "0x4e": "NVIDIA",
    "0x50": "APM", "0x51": "Qualcomm", "0x53": "Samsung", "0x61": "Apple", "0x6d": "Microsoft", "0xc0": "Ampere",
}


def _int_or_str(value: str | None) -> int | str | None:
    """A decimal field as int (x86 family/model/stepping), anything else kept as text."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU identity from the text of ``/proc/cpuinfo`` (first processor block; x86 or ARM layout).

    Returns ``cpu_vendor``, ``cpu_family``, ``cpu_model_number``, ``cpu_stepping``, ``cpu_microcode``,
    ``cpu_isa_flags`` (the curated ``ISA_FLAGS`` present, sorted), and for ``hypervisor_info`` ``cpu_flags`` (every
    flag) and ``layout`` ("x86", "arm" or None); a field the text does not have is None.
    x86 sources: vendor_id, cpu family, model, stepping, microcode, flags. ARM: CPU implementer (named when known),
    CPU architecture, CPU part, r<variant>p<revision> from CPU variant/revision, Features; ARM has no microcode line.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():  # a key's first occurrence wins: the first processor's block (cpu0)
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    flag_text = fields.get("flags", fields.get("Features"))
    flags = sorted(set(flag_text.split())) if flag_text is not None else None
    out: dict[str, Any] = {
        "cpu_vendor": None, "cpu_family": None, "cpu_model_number": None, "cpu_stepping": None, "cpu_microcode": None,
        "cpu_isa_flags": sorted(f for f in flags if f in ISA_FLAGS) if flags is not None else None,
        "cpu_flags": flags,
        "layout": None,
    }
    if "vendor_id" in fields or "cpu family" in fields:  # x86
        out.update(
            cpu_vendor=fields.get("vendor_id"),
            cpu_family=_int_or_str(fields.get("cpu family")),
            cpu_model_number=_int_or_str(fields.get("model")),
            cpu_stepping=_int_or_str(fields.get("stepping")),
            cpu_microcode=fields.get("microcode"),
            layout="x86",
        )
    elif "CPU implementer" in fields:  # ARM
        impl = fields["CPU implementer"].lower()
        variant, revision = fields.get("CPU variant"), fields.get("CPU revision")
        stepping = None
        if variant is not None or revision is not None:
            try:
                stepping = f"r{int(variant or '0', 0)}p{int(revision or '0', 0)}"
            except ValueError:
                stepping = f"r{variant}p{revision}"
        out.update(
            cpu_vendor=ARM_IMPLEMENTERS.get(impl, impl),
            cpu_family=_int_or_str(fields.get("CPU architecture")),
            cpu_model_number=fields.get("CPU part"),
            cpu_stepping=stepping,
            layout="arm",
        )
    return out


def _size_kib(text: str) -> int | None:
    """sysfs cache size ("32K", "1024K", "32M"; a bare number is bytes) in KiB."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)", text.strip(), re.IGNORECASE)
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2).upper()
    return n // 1024 if not unit else n * {"K": 1, "M": 1024, "G": 1024**2}[unit]


def cache_sizes(cache_dir: Path = _SYS_CPU / "cpu0" / "cache") -> dict[str, int] | None:
    """Cache sizes in KiB seen by one CPU, from ``index*/{level,type,size}`` under ``cache_dir``.

    Keys ``L1d``, ``L1i``, ``L2``, ``L3`` (``L<n>d``/``L<n>i`` for split levels, ``L<n>`` for unified ones).
    None when the folder is missing or unreadable (non-Linux, some containers).
    """
    try:
        indexes = sorted(p for p in Path(cache_dir).glob("index*") if p.is_dir())
    except OSError:
        return None
    out: dict[str, int] = {}
    for idx in indexes:
        level, kind, size = (_read(idx / name) for name in ("level", "type", "size"))
        if level is None or size is None:
            continue
        kib = _size_kib(size)
        if kib is None:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind or "", "")
        out[f"L{level}{suffix}"] = kib
    return dict(sorted(out.items())) or None


def hypervisor_info(
    cpuinfo: dict[str, Any],
    sys_hypervisor: Path = Path("/sys/hypervisor/type"),
    detect_virt: Callable[[], str | None] | None = None,
) -> tuple[bool | None, str]:
    """Whether the CPU runs under a hypervisor, and which one: ``(virtualized, vendor)``.

    ``cpuinfo`` is ``parse_cpuinfo``'s result. ``virtualized`` comes from the sources that do not depend on
    installed tools, the cpuinfo ``hypervisor`` flag (x86 hypervisors set it) and ``/sys/hypervisor/type``: True,
    False (x86 flags readable, no such flag) or None (cannot tell, e.g. ARM without ``/sys/hypervisor``). It feeds
    ``hardware_id``. ``vendor`` is ``"none"``, the hypervisor's name (``"kvm"``, ``"xen"``, ``"microsoft"``...) or
    ``"unknown"``; naming it may need ``systemd-detect-virt --vm`` (``detect_virt``), so it is recorded only.
    """
    flags = set(cpuinfo.get("cpu_flags") or ())
    x86 = cpuinfo.get("layout") == "x86" and cpuinfo.get("cpu_flags") is not None
    sys_type = _read(sys_hypervisor) or None
    virtualized: bool | None
    if sys_type or (x86 and "hypervisor" in flags):
        virtualized = True
    elif x86:
        virtualized = False
    else:
        virtualized = None
    detected = detect_virt() if detect_virt is not None else None
    if sys_type:
        vendor = sys_type
    elif detected and detected != "none":
        vendor = detected
    elif virtualized is False or (detected == "none" and not virtualized):
        vendor = "none"
    else:
        vendor = "unknown"
    return virtualized, vendor


def systemd_detect_virt() -> str | None:
    """``systemd-detect-virt --vm`` (virtual machines only, not containers); None when absent or failing."""
    exe = shutil.which("systemd-detect-virt")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--vm"], capture_output=True, text=True, timeout=2).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def cpu_identity() -> dict[str, Any]:
    """``parse_cpuinfo`` of this machine's ``/proc/cpuinfo``; all None where there is none (macOS, Windows)."""
    return parse_cpuinfo(_read(Path("/proc/cpuinfo")) or "")


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
    """Each visible CUDA device matched to its nvidia-smi row by UUID, with its set-up and idle clocks
    (``latprof.measure.gpu``); [] without CUDA devices."""
    from latprof.measure.gpu import gpu_devices

    try:
        return gpu_devices()
    except Exception:  # a broken driver or torch build must not cost the fingerprint of the rest
        return []


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


# What identifies a GPU in hardware_id: the model (name, compute capability, SM count, memory) and, on a MIG
# instance, its profile (a 3g.20gb slice is not the whole GPU). Not the UUID: two cards of one model are the same
# hardware for comparisons, as two CPUs of one model are.
GPU_ID_FIELDS = ("name", "capability", "multiprocessors", "memory_gib", "mig_profile")

# The hardware fields that feed hardware_id, in the order hardware_differences reports them.
HARDWARE_ID_FIELDS = (
    "machine", "cpu_vendor", "cpu_model", "cpu_family", "cpu_model_number", "cpu_stepping", "cpu_isa_flags",
    "cpu_caches_kib", "cpu_physical_cores", "cpu_logical_cores", "memory_gib", "virtualized", "gpus",
)


def _hashed_value(hardware: dict[str, Any], key: str) -> Any:
    value = hardware.get(key)
    if key == "gpus":  # the device model and slice, not which card (UUID), its driver, clocks or power settings
        return [{k: g.get(k) for k in GPU_ID_FIELDS} for g in value or []]
    if key == "cpu_isa_flags" and value is not None:
        return sorted(value.split() if isinstance(value, str) else value)
    return value


def hardware_id_fields(env: dict[str, Any]) -> dict[str, Any]:
    """Exactly the fields ``hardware_id`` hashes, from an environment dict (``Environment.as_dict`` or a stored
    ``record: environment`` line); a field the record lacks is None.

    Hashed: the CPU's identity (vendor, marketing name, family, model number, stepping), the ISA extensions kernels
    dispatch on, cache sizes, the machine architecture, core counts, memory, whether a hypervisor is present, and
    each GPU's model (``GPU_ID_FIELDS``: name, compute capability, SM count, memory, MIG profile): what decides which kernels run and how fast.

    Not hashed, on purpose:

    - ``cpu_microcode``: a host firmware or kernel update changes it on the same silicon. Hashing it would orphan
      every CI baseline at each host patch, while the latency gate is the tool that should tell whether the update
      made a difference (its normalized comparison, confirmed on re-measure). It is recorded, so a shift that
      coincides with a microcode change can be explained afterwards.
    - ``cpu_freq_mhz``: the current frequency varies from run to run (and min/max are often unreadable in VMs);
      it is run state, recorded for context.
    - ``hypervisor`` (the vendor's name): naming it may need tools the container lacks; ``virtualized`` is hashed.
    """
    hardware = env.get("hardware") or {}
    return {k: _hashed_value(hardware, k) for k in HARDWARE_ID_FIELDS}


def hardware_id(env: dict[str, Any]) -> str:
    """Stable short hash (16 hex digits) of ``hardware_id_fields(env)``."""
    blob = json.dumps(hardware_id_fields(env), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _show(key: str, value: Any) -> str:
    if key == "gpus":
        return ", ".join(f"{g['name']} ({g['capability']}"
                         + "".join(f", {k} {g[k]}" for k in GPU_ID_FIELDS[2:] if g.get(k) is not None) + ")"
                         for g in value) or "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


def hardware_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The hashed hardware fields that differ between two environment dicts, one line each: ``"field: a != b"``.

    ``baseline`` and ``current`` are environment dicts as ``Environment.as_dict`` gives them or as stored in a
    results file's ``record: environment`` line. A field one record lacks (a record written before the field
    existed) reads ``"field: missing in baseline"`` (or ``current``); a field both lack is skipped. Cache sizes
    list the differing levels only (``cpu_caches_kib: L2=1024 != L2=2048``), ISA flags the differing flags only
    (``cpu_isa_flags: baseline only [avx512f] current only [amx_tile]``). An empty list for two different
    ``hardware_id``s means the ids were computed by different latprof versions.
    """
    hw_a, hw_b = baseline.get("hardware") or {}, current.get("hardware") or {}
    out = []
    for key in HARDWARE_ID_FIELDS:
        if key not in hw_a and key not in hw_b:
            continue
        if key not in hw_a or key not in hw_b:
            out.append(f"{key}: missing in {'baseline' if key not in hw_a else 'current'}")
            continue
        a, b = _hashed_value(hw_a, key), _hashed_value(hw_b, key)
        if a == b:
            continue
        if key == "cpu_isa_flags" and a is not None and b is not None:
            only_a, only_b = [f for f in a if f not in b], [f for f in b if f not in a]
            out.append(f"{key}: baseline only [{' '.join(only_a)}] current only [{' '.join(only_b)}]")
        elif isinstance(a, dict) and isinstance(b, dict):
            levels = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            out.append(f"{key}: {_show(key, {k: a.get(k) for k in levels})} != {_show(key, {k: b.get(k) for k in levels})}")
        else:
            out.append(f"{key}: {_show(key, a)} != {_show(key, b)}")
    return out


@dataclass
class Environment:
    """The fingerprint. ``hardware`` feeds ``hardware_id`` (``HARDWARE_ID_FIELDS`` of it); the rest is context."""

    hardware: dict[str, Any]
    software: dict[str, Any]
    threads: dict[str, Any]
    state: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def hardware_id(self) -> str:
        return hardware_id({"hardware": self.hardware})

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
    cpu = cpu_identity()
    virtualized, hypervisor = hypervisor_info(cpu, detect_virt=systemd_detect_virt if sys.platform.startswith("linux") else None)
    hardware = {
        "cpu_model": cpu_model(),
        "cpu_vendor": cpu["cpu_vendor"],
        "cpu_family": cpu["cpu_family"],
        "cpu_model_number": cpu["cpu_model_number"],
        "cpu_stepping": cpu["cpu_stepping"],
        "cpu_microcode": cpu["cpu_microcode"],
        "cpu_isa_flags": cpu["cpu_isa_flags"],
        "cpu_caches_kib": cache_sizes(),
        "machine": platform.machine(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_freq_mhz": {"current": freq.current, "min": freq.min, "max": freq.max} if freq else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
        "virtualized": virtualized,
        "hypervisor": hypervisor,
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
        **_gpu_software(hardware["gpus"]),
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


def _gpu_software(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """Driver and the CUDA / cuDNN builds of both runtimes (torch, onnxruntime); only on a machine with a GPU."""
    from latprof.measure.gpu import runtime_versions

    if not gpus:
        return {}
    return {"nvidia_driver": next((g.get("driver") for g in gpus if g.get("driver")), None), **runtime_versions()}


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
    from latprof.measure.gpu import gpu_warnings

    out += gpu_warnings(env.hardware.get("gpus") or [])
    return out
