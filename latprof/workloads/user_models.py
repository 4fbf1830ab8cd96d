"""User models: ``package.module:callable``, ``path/to/file.py:callable``, ``torchvision:NAME``, ``timm:NAME`` and
``file.onnx`` become workloads like the zoo's.

The callable may return an ``nn.Module`` or ``(module, input_shape)``. The input shape comes from ``input_shape``
(``--input``), else from the callable, the package's default config or the ONNX graph; when none of these knows it,
the error says to pass ``--input``. ``weights_file=PATH`` loads a state dict with ``torch.load(weights_only=True)``.
Nothing is downloaded: torchvision and timm models are built without pretrained weights.

``--arg`` values are typed by the callable's signature when it can be inspected (``registry.coerce_kwargs``);
parameters it does not describe (``**kwargs``) read the text as a Python literal. ``Workload.origin`` records what
identifies the code (the file's content hash, the package version) for the ONNX export cache key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latprof.errors import LatprofError, one_line, unknown_choice
from latprof.shapes import Shape, check_rank, parse_shape, shape_text, with_batch
from latprof.workloads.registry import IMAGE_INPUT, Workload, coerce_kwargs


def load_user_model(name: str, input_shape: Shape | None = None, batch: int | None = None, **kwargs: Any) -> Workload:
    """Build the workload a user reference names (see the module docstring for the accepted forms)."""
    weights_file = kwargs.pop("weights_file", None)
    weights_file = str(weights_file) if weights_file is not None else None
    if name.endswith(".onnx"):
        if kwargs or weights_file:
            raise LatprofError(f"{name}: an ONNX file takes no --arg (got {', '.join(sorted(kwargs) or ['weights_file'])})")
        return load_onnx(name, input_shape, batch)
    prefix, sep, target = name.rpartition(":")
    if not sep or not prefix or not target:
        raise LatprofError(
            f"malformed model reference {name!r}; expected package.module:callable, path/to/file.py:callable, "
            "torchvision:NAME, timm:NAME or file.onnx"
        )
    origin: dict[str, Any] = {}
    if prefix == "torchvision":
        kwargs = _typed(name, _torchvision_builder(target), kwargs)
        module, shape, source = *_torchvision_model(target, kwargs), "torchvision"
        origin = {"package": "torchvision", "version": _version("torchvision")}
    elif prefix == "timm":
        kwargs = _typed(name, None, kwargs)
        module, shape, source = *_timm_model(target, kwargs), "timm"
        origin = {"package": "timm", "version": _version("timm")}
    else:
        factory = _callable_from_file(prefix, target) if _is_path(prefix) else _callable_from_module(prefix, target)
        kwargs = _typed(name, factory, kwargs)
        module, shape = _call_factory(name, factory, kwargs)
        source = "user"
        origin = _code_origin(factory, prefix, target)
    if weights_file:
        load_weights(module, weights_file)
        origin["weights_file"] = str(Path(weights_file).expanduser().resolve())
    module.eval()
    if input_shape and shape:
        check_rank(input_shape, shape, name)
    shape = input_shape or shape
    if shape is None:
        raise LatprofError(f"{name}: input shape unknown; pass --input NxCxHxW (e.g. --input 1x3x224x224)")
    doc = (type(module).__doc__ or "").strip().splitlines()
    recorded = {**kwargs, **({"weights_file": weights_file} if weights_file else {})}  # rebuilds the same model
    return Workload(name, module, with_batch(tuple(shape), batch), "network", recorded, source, None,
                    doc[0] if doc else f"user model {name}",
                    input_text=shape_text(input_shape) if input_shape else None, origin=origin)


def _typed(name: str, factory: Callable[..., Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``--arg`` values typed by the callable's signature; without one (or for ``**kwargs``), Python literals."""
    return coerce_kwargs(name, factory if factory is not None else (lambda **kw: None), kwargs)


def _version(package: str) -> str | None:
    try:
        return str(importlib.import_module(package).__version__)
    except Exception:  # not installed or no version attribute: the key still names the package
        return None


def _file_digest(path: str | Path | None) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _code_origin(factory: Callable[..., Any], prefix: str, target: str) -> dict[str, Any]:
    """What identifies a user callable's code: the callable's name and its module file's content hash."""
    mod = sys.modules.get(getattr(factory, "__module__", "") or "")
    path = getattr(mod, "__file__", None) if mod is not None else None
    if _is_path(prefix):
        path = str(Path(prefix).expanduser().resolve())
    return {
        "callable": f"{getattr(factory, '__module__', prefix)}.{getattr(factory, '__qualname__', target)}",
        "file": str(path) if path else None,
        "file_sha256": _file_digest(path),
    }


def _is_path(prefix: str) -> bool:
    return prefix.endswith(".py") or "/" in prefix or "\\" in prefix


def _callable_from_module(module_name: str, attr: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LatprofError(f"cannot import module {module_name!r}: {one_line(exc)}") from None
    except Exception as exc:  # the user's module raised while importing
        raise LatprofError(f"importing {module_name!r} failed: {type(exc).__name__}: {one_line(exc)}") from None
    return _attribute(mod, attr, module_name)


def _callable_from_file(path_text: str, attr: str) -> Callable[..., Any]:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise LatprofError(f"model file not found: {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"latprof_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise LatprofError(f"cannot import {path}: not a Python source file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise LatprofError(f"importing {path} failed: {type(exc).__name__}: {one_line(exc)}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return _attribute(mod, attr, str(path))


def _attribute(mod: Any, attr: str, where: str) -> Callable[..., Any]:
    obj = getattr(mod, attr, None)
    if obj is None:
        public = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        raise unknown_choice(f"callable in {where}", attr, public)
    if not callable(obj):
        raise LatprofError(f"{where}:{attr} is a {type(obj).__name__}, not a callable returning an nn.Module")
    return obj


def _call_factory(name: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[nn.Module, Shape | None]:
    try:
        result = factory(**kwargs)
    except Exception as exc:
        raise LatprofError(f"{name}({_kw(kwargs)}) failed: {type(exc).__name__}: {one_line(exc)}") from None
    shape: Shape | None = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, shape = result[0], _as_shape(name, result[1])
    if not isinstance(result, nn.Module):
        raise LatprofError(
            f"{name} returned {type(result).__name__}; expected an nn.Module or (nn.Module, input_shape)"
        )
    return result, shape


def _as_shape(name: str, value: Any) -> Shape:
    if isinstance(value, str):
        return parse_shape(value)
    try:
        dims = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise LatprofError(
            f"{name} returned input shape {value!r}; expected a tuple of ints like (1, 3, 224, 224)"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise LatprofError(f"{name} returned input shape {value!r}; expected positive ints")
    return dims


def _kw(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _require(package: str, ref: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise LatprofError(f"install {package} to use {package}:{ref} (pip install {package})") from None


def _torchvision_builder(model: str) -> Callable[..., Any] | None:
    """The torchvision builder function (typed keywords like ``num_classes`` reach the model through it)."""
    try:
        return importlib.import_module("torchvision").models.get_model_builder(model)
    except Exception:  # unknown model or no torchvision: _torchvision_model reports it
        return None


def _torchvision_model(model: str, kwargs: dict[str, Any]) -> tuple[nn.Module, Shape]:
    tv = _require("torchvision", model)
    names = tv.models.list_models()
    if model not in names:
        raise unknown_choice("torchvision model", model, names)
    try:
        module = tv.models.get_model(model, weights=None, **kwargs)
    except Exception as exc:
        raise LatprofError(f"torchvision:{model}({_kw(kwargs)}) failed: {type(exc).__name__}: {one_line(exc)}") from None
    size = 299 if model == "inception_v3" else 224
    return module, (1, 3, size, size)


def _timm_model(model: str, kwargs: dict[str, Any]) -> tuple[nn.Module, Shape]:
    timm = _require("timm", model)
    if not timm.is_model(model):
        raise unknown_choice("timm model", model, timm.list_models())
    try:
        module = timm.create_model(model, pretrained=False, **kwargs)
    except Exception as exc:
        raise LatprofError(f"timm:{model}({_kw(kwargs)}) failed: {type(exc).__name__}: {one_line(exc)}") from None
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    return module, (1, *size) if size else IMAGE_INPUT


def load_weights(module: nn.Module, path_text: str) -> None:
    """Load a state dict (or a checkpoint dict holding ``state_dict``) safely: ``weights_only=True``, CPU."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise LatprofError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LatprofError(f"cannot load weights {path} (weights_only=True): {one_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LatprofError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise LatprofError(f"weights {path} do not fit the model: {one_line(exc)}") from None


def onnx_input_shape(path: str | Path) -> tuple[str, list[int | str]]:
    """Name and dims of the graph's first real input (not an initializer); symbolic dims come back as strings."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise LatprofError(f"cannot read ONNX file {path}: {one_line(exc)}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise LatprofError(f"ONNX file {path} has no graph input")
    dims: list[int | str] = []
    for d in inputs[0].type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?"))
    return inputs[0].name, dims


def load_onnx(path_text: str, input_shape: Shape | None = None, batch: int | None = None) -> Workload:
    """An ONNX file as a workload (no PyTorch module); the input shape is the graph's when static.

    A symbolic batch dimension alone is filled with ``batch`` (or 1); any other symbolic dimension needs ``--input``.
    """
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise LatprofError(f"ONNX file not found: {path}")
    input_name, dims = onnx_input_shape(path)
    if input_shape is None:
        static_rest = all(isinstance(d, int) for d in dims[1:])
        if not dims or not static_rest:
            shown = "x".join(str(d) for d in dims) or "unknown"
            raise LatprofError(
                f"{path}: input {input_name!r} has shape {shown} with symbolic dimensions; pass --input NxCxHxW"
            )
        first = dims[0] if isinstance(dims[0], int) else 1
        input_shape = (first, *[int(d) for d in dims[1:]])
    elif len(input_shape) != len(dims) and dims:
        shown = "x".join(str(d) for d in dims)
        raise LatprofError(
            f"--input {shape_text(input_shape)} has rank {len(input_shape)}, but {path} expects rank {len(dims)} "
            f"({shown})"
        )
    return Workload(str(path_text), None, with_batch(tuple(input_shape), batch), "network", {}, "onnx", str(path),
                    f"ONNX model {path.name}",
                    input_text=shape_text(input_shape) if input_shape is not None and dims else None)
