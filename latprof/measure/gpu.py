"""The GPU part of the fingerprint: which physical GPU each CUDA device is, and how it is set up and clocked.

Why by UUID. CUDA numbers devices after ``CUDA_VISIBLE_DEVICES`` (and, unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``,
fastest first), nvidia-smi by PCI bus: CUDA device 0 is not nvidia-smi's GPU 0 in general. Every visible CUDA device
is matched to its nvidia-smi row by UUID (``torch.cuda.get_device_properties(i).uuid``); a MIG instance by its
``MIG-`` UUID through ``nvidia-smi -L``, which names the parent GPU and the instance profile. Without a UUID from
torch, the ``CUDA_VISIBLE_DEVICES`` entries (indices or UUID prefixes) decide, and failing that the order is assumed
equal, which ``match`` says. Every device records how it was matched.

Recorded per device: name, UUID, PCI bus, compute capability, SM count, memory, MIG mode / instance / profile,
driver, persistence mode, performance state, current (idle, at fingerprint time), maximum, application and default
application clocks, power limit (in force, default, enforced), temperature, and the active clock-event ("throttle")
reasons, decoded. Clocks under load are not in the fingerprint: ``GpuLoadSampler`` samples them while a CUDA backend
measures and the row records them (``settings.gpu_under_load``).

Pure parsing (``parse_smi_csv``, ``parse_smi_list``, ``match_devices``, ``parse_load_samples``) is separate from
running nvidia-smi, so recorded output can be tested on a machine without a GPU.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Fields of ``nvidia-smi --query-gpu``, by the key a device record gets. The throttle field was renamed
# (clocks_throttle_reasons -> clocks_event_reasons, driver 535); both names are tried.
SMI_FIELDS: dict[str, tuple[str, ...]] = {
    "smi_index": ("index",),
    "uuid": ("uuid",),
    "smi_name": ("name",),
    "pci_bus_id": ("pci.bus_id",),
    "driver": ("driver_version",),
    "smi_memory_mib": ("memory.total",),
    "smi_compute_cap": ("compute_cap",),
    "persistence_mode": ("persistence_mode",),
    "pstate": ("pstate",),
    "clock_sm_mhz": ("clocks.sm",),
    "clock_mem_mhz": ("clocks.mem",),
    "clock_sm_max_mhz": ("clocks.max.sm",),
    "clock_mem_max_mhz": ("clocks.max.mem",),
    "clock_sm_application_mhz": ("clocks.applications.graphics",),
    "clock_mem_application_mhz": ("clocks.applications.memory",),
    "clock_sm_default_application_mhz": ("clocks.default_applications.graphics",),
    "power_limit_w": ("power.limit",),
    "power_default_limit_w": ("power.default_limit",),
    "power_enforced_limit_w": ("enforced.power.limit",),
    "mig_mode": ("mig.mode.current",),
    "temperature_c": ("temperature.gpu",),
    "throttle_reasons_active": ("clocks_event_reasons.active", "clocks_throttle_reasons.active"),
}

# NVML clock-event reason bits (nvmlClocksEventReason*), as nvidia-smi prints the bitmask.
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the clocks were held below what the GPU could run: worth a warning.
SLOWDOWN_REASONS = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                              "hw_power_brake_slowdown"})

Runner = Callable[[Sequence[str]], str]


def run_smi(args: Sequence[str]) -> str:
    """stdout of ``nvidia-smi args`` ('' when it is absent or fails); the error text too, so callers can see
    'not a valid field'."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ""
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else done.stdout + done.stderr


def _value(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.strip("[]") in ("N/A", "Not Supported", "Unknown Error", "Insufficient Permissions") else text


def _number(text: str | None) -> float | int | None:
    if text is None:
        return None
    try:
        f = float(text)
    except ValueError:
        return None
    return int(f) if f.is_integer() else f


def decode_throttle(mask: str | None) -> list[str] | None:
    """``"0x0000000000000004"`` -> ``["sw_power_cap"]``; None when unreadable."""
    if mask is None:
        return None
    try:
        bits = int(mask, 16)
    except ValueError:
        return None
    return [name for bit, name in THROTTLE_REASONS.items() if bits & bit] + (
        [f"unknown_0x{bits & ~sum(THROTTLE_REASONS):x}"] if bits & ~sum(THROTTLE_REASONS) else [])


def parse_smi_csv(text: str, fields: Sequence[str]) -> list[dict[str, str | None]]:
    """Rows of ``--query-gpu=<fields> --format=csv,noheader,nounits``: one dict per GPU, N/A as None."""
    rows = []
    for line in text.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            continue  # an error line, or a name with a comma we cannot split: skip rather than misassign
        rows.append({f: _value(v) for f, v in zip(fields, values)})
    return rows


def parse_smi_list(text: str) -> dict[str, dict[str, str]]:
    """``nvidia-smi -L`` -> {MIG uuid: {"gpu_uuid", "mig_profile"}} for every MIG instance listed."""
    out: dict[str, dict[str, str]] = {}
    gpu_uuid = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("GPU ") and "(UUID:" in s:
            gpu_uuid = s.rsplit("(UUID:", 1)[1].rstrip(")").strip()
        elif s.startswith("MIG ") and "(UUID:" in s and gpu_uuid:
            profile = s[4:].split()[0] if len(s) > 4 else None
            out[s.rsplit("(UUID:", 1)[1].rstrip(")").strip()] = {"gpu_uuid": gpu_uuid, "mig_profile": profile or ""}
    return out


def normalise_uuid(uuid: str | None) -> str | None:
    """``GPU-5E1F...``, ``MIG-...`` or a bare hex UUID -> the bare lower-case UUID."""
    if not uuid:
        return None
    u = str(uuid).strip().lower()
    for prefix in ("gpu-", "mig-"):
        if u.startswith(prefix):
            u = u[len(prefix):]
    return u


def query_smi(runner: Runner = run_smi) -> list[dict[str, Any]]:
    """One record per GPU nvidia-smi lists, keyed as ``SMI_FIELDS``; fields this driver does not know are None.

    One call with every field; when the driver rejects one ("not a valid field"), each field is asked alone.
    """
    names = {key: alts[0] for key, alts in SMI_FIELDS.items()}

    def ask(fields: Sequence[str]) -> list[dict[str, str | None]] | None:
        out = runner([f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
        if "not a valid field" in out.lower():
            return None
        return parse_smi_csv(out, fields) or None

    rows = ask(["index", *names.values()])
    if rows is None:  # older or newer driver: find the fields it knows, one by one
        if ask(["index"]) is None:
            return []
        for key, alts in SMI_FIELDS.items():
            names[key] = next((a for a in alts if ask(["index", a]) is not None), "")
        fields = [n for n in names.values() if n]
        rows = ask(["index", *fields]) or []
    if names["throttle_reasons_active"]:
        THROTTLE_FIELD[0] = names["throttle_reasons_active"]
    out = []
    for row in rows:
        rec: dict[str, Any] = {key: row.get(name) if name else None for key, name in names.items()}
        rec["smi_index"] = _number(row.get("index"))
        rec["throttle_reasons"] = decode_throttle(rec.get("throttle_reasons_active"))
        for key in ("clock_sm_mhz", "clock_mem_mhz", "clock_sm_max_mhz", "clock_mem_max_mhz",
                    "clock_sm_application_mhz", "clock_mem_application_mhz", "clock_sm_default_application_mhz",
                    "power_limit_w", "power_default_limit_w", "power_enforced_limit_w", "temperature_c",
                    "smi_memory_mib"):
            rec[key] = _number(rec.get(key))
        out.append(rec)
    return out


def _visible_entries(env: dict[str, str]) -> list[str] | None:
    text = env.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return None
    return [e.strip() for e in text.split(",") if e.strip()]


def match_devices(
    torch_devices: Sequence[dict[str, Any]],
    smi_rows: Sequence[dict[str, Any]],
    mig: dict[str, dict[str, str]],
    env: dict[str, str],
) -> list[dict[str, Any]]:
    """Join each CUDA device (``index``, ``uuid`` as torch reports it, name, capability...) to its nvidia-smi row.

    By UUID first (a ``MIG-`` UUID through ``mig``, the parsed ``nvidia-smi -L``); else by the
    ``CUDA_VISIBLE_DEVICES`` entry at that position (an nvidia-smi index or a UUID prefix); else, with no
    ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, by position; otherwise unmatched (fields None),
    never guessed. ``match`` records which rule applied.
    """
    by_uuid = {normalise_uuid(r.get("uuid")): r for r in smi_rows if r.get("uuid")}
    mig_by_uuid = {normalise_uuid(k): v for k, v in mig.items()}
    visible = _visible_entries(env)
    out = []
    for dev in torch_devices:
        rec = dict(dev)
        row, how, mig_info = None, "unmatched", None
        u = normalise_uuid(dev.get("uuid"))
        if u and u in by_uuid:
            row, how = by_uuid[u], "uuid"
        elif u and u in mig_by_uuid:
            mig_info = mig_by_uuid[u]
            row, how = by_uuid.get(normalise_uuid(mig_info["gpu_uuid"])), "mig uuid"
        elif visible is not None and dev["index"] < len(visible):
            entry = visible[dev["index"]]
            if entry.isdigit():
                row = next((r for r in smi_rows if r.get("smi_index") == int(entry)), None)
            else:
                e = normalise_uuid(entry) or ""
                hits = [r for k, r in by_uuid.items() if k and k.startswith(e)]
                migs = [v for k, v in mig_by_uuid.items() if k and k.startswith(e)]
                if len(hits) == 1:
                    row = hits[0]
                elif len(migs) == 1:
                    mig_info = migs[0]
                    row = by_uuid.get(normalise_uuid(mig_info["gpu_uuid"]))
            how = "CUDA_VISIBLE_DEVICES" if row is not None else "unmatched"
        elif visible is None and env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID" and dev["index"] < len(smi_rows):
            row, how = sorted(smi_rows, key=lambda r: r.get("smi_index") or 0)[dev["index"]], "index (PCI_BUS_ID order)"
        for key in SMI_FIELDS:
            if key == "uuid" and rec.get("uuid"):
                continue
            rec[key] = row.get(key) if row else None
        rec["throttle_reasons"] = row.get("throttle_reasons") if row else None
        if row and row.get("uuid"):
            rec["gpu_uuid"] = row["uuid"]  # the physical GPU (the parent of a MIG instance)
        rec["mig_instance"] = dev.get("uuid") if mig_info else None
        rec["mig_profile"] = mig_info["mig_profile"] if mig_info else None
        rec["match"] = how
        out.append(rec)
    return out


def torch_devices() -> list[dict[str, Any]]:
    """What torch says about each visible CUDA device ([] without CUDA)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devs = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        uuid = getattr(p, "uuid", None)
        devs.append({
            "index": i,
            "name": p.name,
            "uuid": str(uuid) if uuid is not None else None,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}",
            "multiprocessors": p.multi_processor_count,
        })
    return devs


def smi_only_devices(smi_rows: Sequence[dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    """CUDA devices as nvidia-smi alone shows them (torch without CUDA, e.g. beside onnxruntime-gpu), in the order
    ``CUDA_VISIBLE_DEVICES`` gives, else nvidia-smi's."""
    rows = sorted(smi_rows, key=lambda r: r.get("smi_index") or 0)
    visible = _visible_entries(env)
    if visible is not None:
        picked = []
        for e in visible:
            n = normalise_uuid(e) or ""
            hit = next((r for r in rows if (e.isdigit() and r.get("smi_index") == int(e))
                        or (not e.isdigit() and (normalise_uuid(r.get("uuid")) or "").startswith(n))), None)
            if hit is not None:
                picked.append(hit)
        rows = picked
    out = []
    for i, r in enumerate(rows):
        mib = r.get("smi_memory_mib")
        out.append({"index": i, "name": r.get("smi_name"), "uuid": r.get("uuid"),
                    "memory_gib": round(mib / 1024, 1) if isinstance(mib, (int, float)) else None,
                    "capability": r.get("smi_compute_cap"), "multiprocessors": None})
    return out


def gpu_devices(runner: Runner = run_smi, env: dict[str, str] | None = None,
                devices: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every visible CUDA device, matched to nvidia-smi (``match_devices``); [] without CUDA devices."""
    env = dict(os.environ) if env is None else env
    smi_rows = query_smi(runner)
    devs = list(devices) if devices is not None else torch_devices()
    if not devs:
        devs = smi_only_devices(smi_rows, env)
        if not devs:
            return []
    mig = parse_smi_list(runner(["-L"])) if any(r.get("mig_mode") == "Enabled" for r in smi_rows) else {}
    return match_devices(devs, smi_rows, mig, env)


_PROCESS_GPUS: list[list[dict[str, Any]]] = []


def process_gpus() -> list[dict[str, Any]]:
    """``environment.gpu_info()`` once per process: every CUDA prepare names its device without running nvidia-smi
    again (a per-block run prepares dozens of blocks). Its clocks are those of the first call (idle)."""
    if not _PROCESS_GPUS:
        from latprof.measure.environment import gpu_info

        _PROCESS_GPUS.append(gpu_info())
    return _PROCESS_GPUS[0]


def runtime_versions() -> dict[str, Any]:
    """CUDA / cuDNN versions each runtime was built with (and onnxruntime's package: onnxruntime or -gpu)."""
    out: dict[str, Any] = {"torch_cuda": None, "torch_cudnn": None, "onnxruntime_package": None,
                           "onnxruntime_cuda": None, "onnxruntime_cudnn": None}
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["torch_cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    except Exception:  # a broken optional runtime is recorded as absent
        pass
    try:
        from onnxruntime.capi import build_and_package_info as info

        out["onnxruntime_package"] = getattr(info, "package_name", None)
        out["onnxruntime_cuda"] = getattr(info, "cuda_version", None)
        out["onnxruntime_cudnn"] = getattr(info, "cudnn_version", None)
    except Exception:
        pass
    return out


def gpu_warnings(gpus: Sequence[dict[str, Any]]) -> list[str]:
    """Set-up that makes GPU figures less repeatable or not comparable."""
    out = []
    for g in gpus:
        name = f"GPU {g.get('index')} ({g.get('name')})"
        if g.get("match") == "unmatched":
            out.append(f"{name}: not matched to an nvidia-smi row (no UUID); driver, clocks and power not recorded")
            continue
        slow = sorted(set(g.get("throttle_reasons") or ()) & SLOWDOWN_REASONS)
        if slow:
            out.append(f"{name}: clocks held down now ({', '.join(slow)})")
        limit, default = g.get("power_limit_w"), g.get("power_default_limit_w")
        if isinstance(limit, (int, float)) and isinstance(default, (int, float)) and limit < default:
            out.append(f"{name}: power limit {limit:g} W is below the default {default:g} W")
        if g.get("persistence_mode") == "Disabled":
            out.append(f"{name}: persistence mode off; the first CUDA call of each process pays driver start-up")
        if g.get("mig_profile"):
            out.append(f"{name}: a MIG instance ({g['mig_profile']}), a slice of the GPU: not comparable with a whole GPU")
    return out


# ------------------------------------------------------------------ clocks under load
LOAD_FIELDS = ("utilization.gpu", "clocks.sm", "clocks.mem", "power.draw", "temperature.gpu")
LOAD_INTERVAL_MS = 500


def parse_load_samples(text: str, fields: Sequence[str] = LOAD_FIELDS, throttle: bool = True) -> dict[str, Any]:
    """Summary of ``nvidia-smi --query-gpu=<fields>[,<throttle>] -lms N`` output, keeping the samples taken under
    load (``utilization.gpu`` > 0: a kernel ran during the sample period).

    Returns ``samples`` (all), ``samples_under_load``, min/median/max of the SM and memory clocks, median power,
    max temperature, and the union of active clock-event reasons under load.
    """
    cols = [*fields, "throttle"] if throttle else list(fields)
    rows = parse_smi_csv(text, cols)
    loaded = [r for r in rows if (_number(r.get("utilization.gpu")) or 0) > 0]

    def stats(key: str) -> dict[str, float] | None:
        vals = sorted(v for v in (_number(r.get(key)) for r in loaded) if v is not None)
        if not vals:
            return None
        mid = len(vals) // 2
        med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
        return {"min": vals[0], "median": med, "max": vals[-1]}

    reasons: set[str] = set()
    for r in loaded:
        reasons.update(decode_throttle(r.get("throttle")) or ())
    power, temp = stats("power.draw"), stats("temperature.gpu")
    return {
        "samples": len(rows),
        "samples_under_load": len(loaded),
        "interval_ms": LOAD_INTERVAL_MS,
        "clock_sm_mhz": stats("clocks.sm"),
        "clock_mem_mhz": stats("clocks.mem"),
        "utilization_percent": stats("utilization.gpu"),
        "power_draw_w_median": power["median"] if power else None,
        "temperature_c_max": temp["max"] if temp else None,
        "throttle_reasons": sorted(reasons - {"gpu_idle"}),
    }


class GpuLoadSampler:
    """nvidia-smi polling one GPU every ``LOAD_INTERVAL_MS`` into a temporary file while a measurement runs.

    One child process, writing to a file (no reader thread in the measuring process, so no GIL hand-offs during
    timed samples); parsed once at ``stop``. Several prepared runs (a sweep's variants) share one sampler through
    ``hold``/``release``: each gets the samples taken while it was held.
    """

    def __init__(self, gpu: str, command: Sequence[str] | None = None) -> None:
        self.gpu = gpu
        self._command = list(command) if command is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._file: Any = None
        self._holds: dict[int, int] = {}
        self._next = 0
        self.error: str | None = None

    def command(self) -> list[str] | None:
        if self._command is not None:
            return self._command
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        throttle = THROTTLE_FIELD[0]
        return [exe, f"--query-gpu={','.join((*LOAD_FIELDS, throttle))}", "--format=csv,noheader,nounits",
                "-i", self.gpu, "-lms", str(LOAD_INTERVAL_MS)]

    def _lines(self) -> list[str]:
        if self._file is None:
            return []
        self._file.flush()
        return Path(self._file.name).read_text(errors="replace").splitlines()

    def hold(self) -> int:
        """Start sampling (once for all holders); a token for ``release``."""
        if self._proc is None and self.error is None:
            cmd = self.command()
            if cmd is None:
                self.error = "not sampled: nvidia-smi not found"
            else:
                self._file = tempfile.NamedTemporaryFile(prefix="latprof-gpuload-", suffix=".csv", delete=False)
                try:
                    self._proc = subprocess.Popen(cmd, stdout=self._file, stderr=subprocess.DEVNULL,
                                                  preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
                except OSError as exc:
                    self.error = f"not sampled: {exc}"
        token = self._next
        self._next += 1
        self._holds[token] = len(self._lines())
        return token

    def release(self, token: int) -> dict[str, Any]:
        """The summary of the samples taken since ``hold`` returned ``token``; stops the child with the last holder."""
        start = self._holds.pop(token, 0)
        if self.error:
            result: dict[str, Any] = {"note": self.error}
        else:
            if not self._holds:
                self._stop()
            result = {**parse_load_samples("\n".join(self._lines()[start:])), "gpu": self.gpu}
        if not self._holds:
            self._discard_output()
        return result

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def _discard_output(self) -> None:
        self._stop()
        self._proc = None
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None


def _die_with_parent() -> None:
    """In the sampler child (Linux): SIGTERM when the measuring process dies, so no nvidia-smi loop outlives a
    crashed worker."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@atexit.register
def _stop_samplers() -> None:
    for sampler in _SAMPLERS.values():
        sampler._stop()


# The throttle field's name on this driver, found when the fingerprint was taken (first entry is used).
THROTTLE_FIELD: list[str] = ["clocks_event_reasons.active"]

_SAMPLERS: dict[str, GpuLoadSampler] = {}


def load_sampler(gpu: str) -> GpuLoadSampler:
    """The process's one sampler for ``gpu`` (a UUID or an nvidia-smi index)."""
    if gpu not in _SAMPLERS:
        _SAMPLERS[gpu] = GpuLoadSampler(gpu)
    return _SAMPLERS[gpu]
