"""Export a workload's module to ONNX, cached on disk by a hash of everything that shapes the exported graph.

Cache key (``workload_hash``; ``key_ingredients`` lists what goes in). Two workloads that differ only in what
``forward`` does (``resnet_bottleneck(shortcut=False)``, the G3 series/parallel blocks) have the same module tree
and the same weights, so a key of ``repr(module)`` plus weights made them share one file and ONNX Runtime ran the
wrong model. The key now holds, besides ``KEY_VERSION``, the exporter, the opset and the versions of torch, onnx,
onnxscript and Python:

* the workload's identity: name, source, kind, resolved (typed) keyword arguments, input shape and ``origin``
  (for user models the callable and its file's content hash, for torchvision/timm the package version);
* the computation itself: the forward is run once on the workload's inputs under a ``TorchDispatchMode`` that
  records every aten op with its non-tensor arguments and its data flow (which earlier result, parameter, buffer or
  input each tensor argument is; constants by content). This is what the exporters capture, since both trace the
  module with the same example input, so a cached file and the module can only share a key when they compute the
  same ops on the same data. It costs one eager forward (tens of ms for the zoo's networks on CPU), far less than a
  ``torch.jit.trace`` (seconds for resnet50) and, unlike ``torch.fx``, it follows data-dependent control flow;
* the module's structure, as a second line of defence when the forward cannot be run under the recorder:
  ``repr(module)``, every submodule's class (for classes outside torch the source of each class in its MRO and the
  content hash of the file that defines it, which covers module-level helpers called from ``forward``), every
  submodule's plain attributes (``vars()`` entries: bools, numbers, strings, tuples, dtypes, callables by name and
  source, plain tensors by content; this catches ``self.shortcut = False``) and its forward hooks;
* every parameter and buffer by content (non-persistent buffers too, which ``state_dict`` leaves out).

The file name carries the 128-bit key, and ``KEY_VERSION`` is hashed in, so entries written under an older key
(whose ingredients could not tell such variants apart) are never reused. Each exported file also records its key
in the ONNX ``metadata_props`` (``latprof_cache_key``), for inspection.

Exporter choice: the torch.export-based ("dynamo") exporter first. It is the maintained path and the default since
torch 2.9; the TorchScript exporter is deprecated and warns. If the dynamo exporter fails (it needs onnxscript, and
it cannot capture every module), the TorchScript exporter is tried; the result records which one produced the file.
Both fold BatchNorm into the preceding convolution in eval mode, so ``--ort-opt none`` still runs a BN-folded graph.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import importlib.metadata
import inspect
import io
import json
import logging
import os
import platform
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latprof.backends.base import BackendError
from latprof.errors import one_line
from latprof.workloads.registry import Workload

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
# Version of the cache key's ingredients; bump it whenever they change so no older entry is ever reused.
# 1: repr(module), state_dict, input shape, exporter, opset, torch version (could not tell forward variants apart).
# 2: workload identity, recorded aten computation, class sources and attributes, all tensors, package versions.
KEY_VERSION = 2


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


def workload_hash(workload: Workload, exporter: str, opset: int) -> str:
    """The export cache key of ``workload`` for this exporter and opset (see the module docstring)."""
    return _digest({**key_ingredients(workload, opset), "exporter": exporter})


def key_ingredients(workload: Workload, opset: int) -> dict[str, Any]:
    """Everything the key hashes except the exporter: identity, computation, structure, tensors, versions."""
    if workload.module is None:
        raise BackendError(f"{workload.name}: an ONNX file is used as is; it has no export cache key")
    module = workload.module
    return {
        "key_version": KEY_VERSION,
        "workload": {
            "name": workload.name,
            "source": workload.source,
            "kind": workload.kind,
            "kwargs": _describe(workload.kwargs),
            "input_shape": [int(d) for d in workload.input_shape],
            "origin": _describe(workload.origin),
        },
        "opset": opset,
        "versions": {
            "torch": torch.__version__,
            "onnx": _dist_version("onnx"),
            "onnxscript": _dist_version("onnxscript"),
            "python": platform.python_version(),
        },
        "computation": computation_digest(module, workload.make_inputs()),
        "structure": structure_digest(module),
        "tensors": tensor_digest(module),
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------ the computation: recorded aten ops
def computation_digest(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    """Hash of the aten ops one forward runs, with arguments and data flow; ``unavailable: ...`` when it fails."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.weak import WeakTensorKeyDictionary

    labels: Any = WeakTensorKeyDictionary()
    for name, p in module.named_parameters(remove_duplicate=False):
        labels.setdefault(p, f"param:{name}")
    for name, b in module.named_buffers(remove_duplicate=False):
        labels.setdefault(b, f"buffer:{name}")
    for i, x in enumerate(inputs):
        labels[x] = f"input:{i}"
    h = hashlib.sha256()
    counter = {"result": 0, "const": 0}

    def arg(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            label = labels.get(v)
            if label is None:  # a tensor made outside the recorded ops (a constant attribute): by content
                counter["const"] += 1
                label = f"const{counter['const']}:{_tensor_id(v)}"
                labels[v] = label
            return label
        return _scalar(v)

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            leaves, spec = tree_flatten((args, kwargs))
            described = [arg(v) for v in leaves]
            out = func(*args, **kwargs)
            results = []
            for v in tree_flatten(out)[0]:
                if isinstance(v, torch.Tensor):
                    counter["result"] += 1
                    labels[v] = f"r{counter['result']}:{v.dtype}{tuple(v.shape)}"
                    results.append(labels[v])
                else:
                    results.append(_scalar(v))
            h.update(f"{func}|{spec}|{','.join(described)}->{','.join(results)}\n".encode())
            return out

    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.no_grad(), Recorder():
            module(*inputs)
    except Exception as exc:  # the export will most likely fail too; the structure digest still keys the file
        return f"unavailable: {type(exc).__name__}"
    return h.hexdigest()


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if v is None or isinstance(v, (bool, int, str, torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return repr(v)
    return _strip_addresses(repr(v))


def _tensor_id(t: torch.Tensor) -> str:
    return f"{t.dtype}{tuple(t.shape)}:{_tensor_bytes_digest(t)}"


def _tensor_bytes_digest(t: torch.Tensor) -> str:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.is_quantized or flat.is_sparse:  # rare layouts: their repr names every value
        return hashlib.sha256(repr(flat).encode()).hexdigest()[:16]
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return hashlib.sha256(data).hexdigest()[:16]


# ------------------------------------------------------------------ the structure: classes, attributes, hooks
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_MODULE_INTERNALS = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})


def _strip_addresses(text: str) -> str:
    return _ADDRESS.sub("0x", text)


def structure_digest(module: torch.nn.Module) -> str:
    """Hash of repr, each submodule's classes (source), plain attributes and hooks (see the module docstring)."""
    h = hashlib.sha256()
    h.update(_strip_addresses(repr(module)).encode())
    for name, m in module.named_modules(remove_duplicate=False):
        attrs = {k: v for k, v in vars(m).items() if k not in _MODULE_INTERNALS and not k.endswith("_hooks")
                 and not k.endswith("_hooks_with_kwargs") and not k.endswith("_hooks_always_called")}
        hooks = {k: [_callable_id(fn) for fn in getattr(m, k, {}).values()]
                 for k in ("_forward_pre_hooks", "_forward_hooks") if getattr(m, k, None)}
        entry = {"name": name, "class": class_id(type(m)), "attrs": _describe(attrs), "hooks": hooks}
        h.update(json.dumps(entry, sort_keys=True, default=str).encode())
    from torch.nn.modules import module as module_mod

    for hook_dict in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        for fn in getattr(module_mod, hook_dict, {}).values():
            h.update(_callable_id(fn).encode())
    return h.hexdigest()


def tensor_digest(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer by name, dtype, shape and bytes (non-persistent buffers included)."""
    h = hashlib.sha256()
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        h.update(f"{name}:{_tensor_id(tensor)}".encode())
    return h.hexdigest()


def _is_torch_code(module_name: str) -> bool:
    return module_name == "torch" or module_name.startswith("torch.") or module_name in ("builtins", "abc", "typing")


@functools.lru_cache(maxsize=4096)
def class_id(cls: type) -> str:
    """A class's qualified name; for code outside torch, also the source of every class in its MRO and the
    content hash of each defining file (torch's own classes are pinned by the torch version in the key)."""
    parts = []
    for klass in cls.__mro__:
        mod = getattr(klass, "__module__", "") or ""
        name = f"{mod}.{getattr(klass, '__qualname__', klass.__name__)}"
        if _is_torch_code(mod):
            parts.append(name)
            continue
        parts.append(f"{name}:{_source_digest(klass)}:{_module_file_digest(mod)}")
    return "|".join(parts)


def _source_digest(obj: Any) -> str:
    try:
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
    except (OSError, TypeError):  # no source (built in a REPL, compiled): hash the code objects instead
        codes = [v for v in vars(obj).values() if isinstance(v, types.FunctionType)] if isinstance(obj, type) \
            else [obj] if isinstance(obj, types.FunctionType) else []
        return "code:" + hashlib.sha256("".join(_code_text(f.__code__) for f in codes).encode()).hexdigest()[:16]


def _code_text(code: types.CodeType) -> str:
    consts = [(_code_text(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}"


@functools.lru_cache(maxsize=1024)
def _file_digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def _module_file_digest(module_name: str) -> str | None:
    path = getattr(sys.modules.get(module_name), "__file__", None)
    return _file_digest(path) if path else None


def _callable_id(fn: Any) -> str:
    """A function by qualified name and source; a partial by its function and bound arguments."""
    if isinstance(fn, functools.partial):
        return f"partial({_callable_id(fn.func)}, {_describe(fn.args)}, {_describe(fn.keywords)})"
    if isinstance(fn, types.MethodType):
        return f"method({_callable_id(fn.__func__)} of {class_id(type(fn.__self__))})"
    mod = getattr(fn, "__module__", "") or ""
    name = f"{mod}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    if isinstance(fn, types.FunctionType) and not _is_torch_code(mod):
        return f"{name}:{_source_digest(fn)}:{_module_file_digest(mod)}"
    if isinstance(fn, type):
        return class_id(fn)
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType)) and callable(fn):
        return f"callable {class_id(type(fn))} {_describe(getattr(fn, '__dict__', {}))}"
    return name


def _describe(value: Any, depth: int = 0) -> Any:
    """A JSON-able, deterministic description of an attribute value (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"enum {type(value).__qualname__}.{value.name}"
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format, torch.Size)):
        return f"{type(value).__name__} {value}"
    if isinstance(value, torch.Tensor):
        return f"tensor {_tensor_id(value)}"
    if depth > 4:
        return f"{type(value).__qualname__} (nested too deep)"
    if isinstance(value, (tuple, list)):
        return [type(value).__name__, *[_describe(v, depth + 1) for v in value]]
    if isinstance(value, (set, frozenset)):
        return ["set", *sorted(json.dumps(_describe(v, depth + 1), sort_keys=True, default=str) for v in value)]
    if isinstance(value, dict):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, torch.nn.Module):
        return f"module {class_id(type(value))}"
    if callable(value):
        return f"callable {_callable_id(value)}"
    if hasattr(value, "__dict__"):
        return {"object": class_id(type(value)), "attrs": _describe(vars(value), depth + 1)}
    return f"{type(value).__qualname__} {_strip_addresses(repr(value))}"


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


_TORCHLIB_REGISTRIES: dict[tuple[type, int], Any] = {}


@contextlib.contextmanager
def _torchlib_registry_reused() -> Iterator[None]:
    """Every dynamo export rebuilds the table of aten-to-ONNX functions (``ONNXRegistry.from_torchlib``: parsing
    onnxscript's torchlib sources, 1.4-1.8 s of an export's 5 s on a slow 2-core VM, where a calibration unit
    exports six cells, chains and fixed blocks). The table depends only on the opset, and the exporter only reads it
    (it adds to it only for a ``custom_translation_table``, which latprof never passes), so one table per opset is
    built per process and reused. The exporter's private class is patched for the call only; where it is not there
    (another torch), exports run as they are."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    cls = getattr(_registration, "ONNXRegistry", None)
    original = vars(cls).get("from_torchlib") if cls is not None else None
    if not isinstance(original, classmethod):
        yield
        return

    def reused(klass: type, opset_version: int = _registration._constants.TORCHLIB_OPSET) -> Any:
        key = (klass, opset_version)
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = original.__func__(klass, opset_version=opset_version)
        return _TORCHLIB_REGISTRIES[key]

    cls.from_torchlib = classmethod(reused)
    try:
        yield
    finally:
        cls.from_torchlib = original


def _export_dynamo(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    with _quiet(), _torchlib_registry_reused():
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
    ingredients = key_ingredients(workload, opset)  # the costly part (one recorded forward), once for both exporters
    for name in order:
        key = _digest({**ingredients, "exporter": name})
        path = root / f"{_file_stem(workload.name)}-{key}.onnx"
        note = "; ".join(failures) or None
        if path.exists():
            return ExportedModel(path, name, opset, True, key, note)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
        try:
            with torch.inference_mode(False), torch.no_grad():
                EXPORT_FUNCTIONS[name](module, inputs, tmp, opset)
            _finalize(tmp, key)
            os.replace(tmp, path)
        except Exception as exc:  # any exporter failure: try the other one, then an error row
            failures.append(f"{name} exporter failed: {one_line(exc)[:300]}")
            for leftover in root.glob(f"{tmp.name}*"):
                leftover.unlink(missing_ok=True)
            continue
        return ExportedModel(path, name, opset, False, key, "; ".join(failures) or None)
    raise BackendError(f"{workload.name}: ONNX export failed ({' | '.join(failures)})")


def _file_stem(name: str) -> str:
    """The workload name made safe for a file name (``g3:fragment_block*10`` → ``g3_fragment_block_10``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "workload"


def _finalize(path: Path, key: str) -> None:
    """Store weights inside the one .onnx file (the dynamo exporter may write them beside it), so caching is one
    file, and record the cache key in the model's metadata."""
    import onnx

    model = onnx.load(str(path))
    for leftover in path.parent.glob(f"{path.name}.data"):
        leftover.unlink()
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"latprof_cache_key": key, "latprof_cache_key_version": str(KEY_VERSION)})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def _file_opset(path: Path) -> int | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # an unreadable file fails later in session creation with ORT's own message
        return None
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
