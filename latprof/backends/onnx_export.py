"""Export a workload's module to ONNX, cached on disk by a hash of everything that shapes the exported graph.

Exporter choice: the torch.export-based ("dynamo") exporter first. It is the maintained path and the default since
torch 2.9; the TorchScript exporter is deprecated and warns. If the dynamo exporter fails (it needs onnxscript, and
it cannot capture every module), the TorchScript exporter is tried; the result records which one produced the file.
Both fold BatchNorm into the preceding convolution in eval mode, so ``--ort-opt none`` still runs a BN-folded graph.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from latprof.backends.base import BackendError
from latprof.errors import one_line
from latprof.workloads.registry import Workload

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX file ready for ONNX Runtime and how it was made."""

    path: Path
    exporter: str  # dynamo | torchscript | user-file
    opset: int | None
    cached: bool
    workload_hash: str | None
    fallback_note: str | None = None

    def settings(self) -> dict[str, object]:
        return {
            "onnx_exporter": self.exporter,
            "onnx_opset": self.opset,
            "onnx_path": str(self.path),
            "onnx_cached": self.cached,
            "onnx_export_fallback": self.fallback_note,
        }


def cache_dir() -> Path:
    """``$LATPROF_CACHE`` or ``~/.cache/latprof/onnx``."""
    root = os.environ.get("LATPROF_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "latprof" / "onnx"


def workload_hash(module: torch.nn.Module, input_shape: tuple[int, ...], exporter: str, opset: int) -> str:
    """Hash of module structure, parameters and buffers, input shape, exporter, opset and torch version."""
    h = hashlib.sha256()
    h.update(repr(module).encode())
    h.update(json.dumps([list(input_shape), exporter, opset, torch.__version__]).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress and deprecation warnings; keep the CLI output to latprof's own lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export_dynamo(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    with _quiet():
        torch.onnx.export(module, inputs, str(path), dynamo=True, opset_version=opset, verbose=False,
                          input_names=["input"], output_names=["output"])


def _export_torchscript(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    with _quiet():
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=["input"], output_names=["output"])


EXPORT_FUNCTIONS: dict[str, Callable[[torch.nn.Module, tuple[torch.Tensor, ...], Path, int], None]] = {
    "dynamo": _export_dynamo,
    "torchscript": _export_torchscript,
}


def export_workload(workload: Workload, exporter: str = "dynamo", opset: int = DEFAULT_OPSET,
                    root: Path | None = None) -> ExportedModel:
    """The ONNX file for ``workload``: a user file as is, else a cached or fresh export (other exporter as fallback).

    Raises ``BackendError`` (an error row) when neither exporter can produce the model.
    """
    if workload.module is None:
        if not workload.onnx_path:
            raise BackendError(f"{workload.name}: neither a module nor an ONNX file to run")
        return ExportedModel(Path(workload.onnx_path), "user-file", _file_opset(Path(workload.onnx_path)), False, None)
    if exporter not in EXPORTERS:
        raise BackendError(f"unknown ONNX exporter {exporter!r}; valid: {', '.join(EXPORTERS)}")
    module = workload.module.eval()
    inputs = workload.make_inputs()
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    order = [exporter] + [e for e in EXPORTERS if e != exporter]
    failures: list[str] = []
    for name in order:
        key = workload_hash(module, tuple(workload.input_shape), name, opset)
        path = root / f"{workload.name.replace('/', '_')}-{key}.onnx"
        note = "; ".join(failures) or None
        if path.exists():
            return ExportedModel(path, name, opset, True, key, note)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        try:
            with torch.inference_mode(False), torch.no_grad():
                EXPORT_FUNCTIONS[name](module, inputs, tmp, opset)
            _merge_external_data(tmp)
            os.replace(tmp, path)
        except Exception as exc:  # any exporter failure: try the other one, then an error row
            failures.append(f"{name} exporter failed: {one_line(exc)[:300]}")
            for leftover in root.glob(f"{tmp.name}*"):
                leftover.unlink(missing_ok=True)
            continue
        return ExportedModel(path, name, opset, False, key, "; ".join(failures) or None)
    raise BackendError(f"{workload.name}: ONNX export failed ({' | '.join(failures)})")


def _merge_external_data(path: Path) -> None:
    """Store weights inside the one .onnx file (the dynamo exporter may write them beside it), so caching is one file."""
    import onnx

    model = onnx.load(str(path))
    for leftover in path.parent.glob(f"{path.name}.data"):
        leftover.unlink()
    onnx.save(model, str(path))


def _file_opset(path: Path) -> int | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable file fails later in session creation with ORT's own message
        return None
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
