"""The predictor file: plain JSON data (kernel samples and settings), never a pickle.

Loading refits the regressors from the samples (``latprof.predict.model``), so a file outlives library versions
(nn-Meter's pickled forests stopped loading with newer scikit-learn). A file from another machine
(``hardware_id``), for another backend or thread count than asked, of another schema, or unreadable is refused
with one line (``LatprofError``: exit 2 on the command line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from latprof.errors import LatprofError, one_line
from latprof.predict.kernels import FEATURES

# 2: cache-cold eager readings; idle module call measured; kernels taken in context (overhead.context_factor,
# overhead.per_kernel_call_ms).
# 3: every kernel read warm too (samples' warm_ms, overhead.warm_*), and the residency curve fitted on calibration
# chains (residency, chains). A version-2 file still reads: it predicts every kernel cold, as it did.
# 4: the residency splits each kernel's cold cost into its weights' part (by the forward's weight bytes) and its
# activations' part (residency.form "split"; chains' weight_bytes). A version-3 file still reads and predicts as it
# did (residency.form "whole").
# 5: every kernel, cell and chain reading scaled to the calibration's median machine state (``state``: the reference
# state, whether readings were scaled, how far the state moved; samples' ``state_factors``). A version-4 file still
# reads and predicts as it did.
# 6: eager kernel samples may be each kernel's time inside its cell's profiled forward (``calibration.kernel_samples``
# "profiled", ``calibration.attribution``), samples may carry a third reading, ``hot_ms`` (the cell's forward run
# back to back), and the residency may be form "hot" (hot, then warm, then cold by the forward's weight bytes). A
# version-5 file still reads and predicts as it did.
SCHEMA_VERSION = 6
READABLE_VERSIONS = (2, 3, 4, 5, 6)
KIND = "latprof-predictor"
REQUIRED = ("schema_version", "kind", "backend", "threads", "hardware_id", "backend_settings", "features", "model",
            "samples", "overhead")


def save(data: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (a torn file never replaces a good one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":"), allow_nan=False))
    os.replace(tmp, path)
    return path


def read(path: str | Path) -> dict[str, Any]:
    """The file's data, checked for shape (not yet for this machine): corrupt or foreign-schema files raise."""
    path = Path(path)
    if not path.is_file():
        raise LatprofError(f"predictor file {path} does not exist; create one with latprof calibrate --backend B -o {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LatprofError(f"predictor file {path} is not readable JSON ({one_line(exc)}); recreate it with "
                           "latprof calibrate") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise LatprofError(f"{path} is not a latprof predictor file (kind {KIND!r} missing)")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise LatprofError(f"predictor file {path} is incomplete (missing {', '.join(missing)}); recreate it with "
                           "latprof calibrate")
    if data["schema_version"] not in READABLE_VERSIONS:
        raise LatprofError(f"predictor file {path} has schema_version {data['schema_version']}, this latprof reads "
                           f"{', '.join(map(str, READABLE_VERSIONS))}; recreate it with latprof calibrate")
    if list(data["features"]) != list(FEATURES):
        raise LatprofError(f"predictor file {path} uses other kernel features than this latprof; recreate it")
    samples = data["samples"]
    if not isinstance(samples, list) or not samples or not all(
            isinstance(s, dict) and isinstance(s.get("latency_ms"), (int, float)) and s["latency_ms"] > 0
            and isinstance(s.get("features"), dict) and isinstance(s.get("op"), str) for s in samples):
        raise LatprofError(f"predictor file {path} has no valid kernel samples; recreate it with latprof calibrate")
    return data


def check_compatible(data: dict[str, Any], path: str | Path, hardware_id: str, backend: str | None = None,
                     threads: int | None = None) -> None:
    """Refuse a predictor calibrated on other hardware, or for another backend / thread count than asked."""
    if data["hardware_id"] != hardware_id:
        raise LatprofError(f"predictor {path} was calibrated on hardware_id {data['hardware_id']}, this machine is "
                           f"{hardware_id}; calibrate here with latprof calibrate --backend {data['backend']}")
    if backend is not None and data["backend"] != backend:
        raise LatprofError(f"predictor {path} is for backend {data['backend']}, not {backend}; calibrate one with "
                           f"latprof calibrate --backend {backend}")
    if threads is not None and data["threads"] != threads:
        raise LatprofError(f"predictor {path} is for {data['threads']} thread(s), not {threads}; calibrate one with "
                           f"--threads {threads}")
