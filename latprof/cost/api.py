"""Public counting API: ``count_model``, ``count_workload``, ``workload_counts`` (ONNX: ``latprof.cost.onnx_count``)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from latprof.cost.report import CostReport
from latprof.cost.tracer import CostMode, ModuleStack
from latprof.errors import LatprofError, one_line
from latprof.shapes import format_shape


class UnsupportedOpWarning(UserWarning):
    """Some aten ops had no cost rule: their traffic is counted, their arithmetic is not."""


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list):
        return tuple(inputs)
    return (inputs,)


def _trace(module: nn.Module, inputs: tuple[Any, ...], fold_bn: bool, fake: bool) -> CostMode:
    weights = [(p, True) for p in module.parameters()] + [(b, False) for b in module.buffers()]
    stack = ModuleStack(module)
    try:
        if fake:
            inputs = tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, inputs)
        mode = CostMode(stack, weights, fold_bn, meta=fake)
        with torch.no_grad(), mode:
            module(*inputs)
        return mode
    finally:
        stack.remove()


def count_model(
    module: nn.Module, inputs: Any, fold_bn: bool = False, *, fake: bool = True, name: str | None = None
) -> CostReport:
    """Count ``module`` on ``inputs`` (a tensor or a tuple of them) in eval mode, one row per aten op call.

    ``fake=True`` runs on meta tensors (shapes only: no arithmetic, no activation memory; weights get meta twins
    op by op); if the model does something meta tensors cannot (data-dependent control flow such as ``.item()``),
    the count falls back to a real run. Counts are
    identical either way (tests prove it). A model that rejects the input raises ``LatprofError`` quoting its error.
    """
    args = _as_tuple(inputs)
    shapes = [list(t.shape) for t in args if isinstance(t, torch.Tensor)]
    label = name or type(module).__name__
    training = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        try:
            mode = _trace(module, args, fold_bn, fake)
        except Exception:  # noqa: BLE001  (anything the fake run cannot do: retry for real, which quotes the model)
            if not fake:
                raise
            mode = _trace(module, args, fold_bn, False)
    except LatprofError:
        raise
    except Exception as exc:  # noqa: BLE001  (the model's own error, reported in one line)
        shape_text = ", ".join(format_shape(s) for s in shapes) or "no tensor"
        raise LatprofError(f"{label}: the model rejects input shape {shape_text}: {one_line(exc)}") from None
    finally:
        for m, flag in training:
            m.training = flag
    params = sum(int(p.numel()) for p in module.parameters())
    unsupported = list(mode.unsupported)
    if unsupported:
        warnings.warn(
            f"{label}: no cost rule for aten op(s) {', '.join(unsupported)}; their tensor traffic is counted, "
            "their arithmetic is not", UnsupportedOpWarning, stacklevel=2,
        )
    return CostReport(label, shapes, mode.layers, unsupported, params, fold_bn, "torch")


def count_workload(workload: Any, fold_bn: bool = False) -> CostReport:
    """Count a ``Workload`` on its own input shape (an ONNX-only workload is counted from its graph)."""
    if workload.module is None:
        if not workload.onnx_path:
            raise LatprofError(f"{workload.name}: workload has neither a module nor an ONNX file to count")
        from latprof.cost.onnx_count import count_onnx

        report = count_onnx(workload.onnx_path, workload.input_shape)
        report.model = workload.name
        return report
    return count_model(workload.module, workload.make_inputs(), fold_bn, name=workload.name)


def workload_counts(workload: Any, fold_bn: bool = False) -> dict[str, Any]:
    """The count columns of a result row (``mult_adds, elementwise_ops, mem_access, mem_bytes, params,
    arithmetic_intensity``) for ``workload``. Raises ``LatprofError`` when the model cannot be counted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        return dict(count_workload(workload, fold_bn).totals)


def count_named(model: str, input_shape: Any = None, fold_bn: bool = False, **kwargs: Any) -> CostReport:
    """Count what ``--model`` names: an ``.onnx`` file directly from its graph, anything else through
    ``latprof.workloads.create_workload`` (registered names, ``module:callable``, ``path.py:callable``)."""
    if model.endswith(".onnx"):
        if kwargs:
            raise LatprofError(f"--arg {', '.join(kwargs)} does not apply to an .onnx model ({model})")
        from latprof.cost.onnx_count import count_onnx

        report = count_onnx(model, input_shape)
        report.model = model
        return report
    from latprof.workloads import create_workload

    return count_workload(create_workload(model, input_shape=input_shape, **kwargs), fold_bn)
