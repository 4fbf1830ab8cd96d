"""Numeric precision of a run (``--precision``): which backends run what, the INT8 quantisation settings, and the
output check that suits each precision.

* ``fp32`` (default, ``base.DEFAULT_PRECISION``) on every backend.
* ``int8`` on the ONNX Runtime CPU backends (``ort-cpu``, ``ort-mobile``): static quantisation of the exported
  model with ``onnxruntime.quantization`` (``latprof/backends/onnx_precision.py``), calibrated on fixed seeded
  random inputs, so the same settings give the same quantised file. PyTorch eager has no comparable INT8 path for
  these CPU kernels (its eager quantisation is a separate, deprecated API with other kernels), so ``torch-*``
  backends refuse it in one line.
* ``fp16`` on CUDA: ``torch-cuda`` (``module.half()``, half inputs) and ``ort-cuda`` (the exported model converted
  by ``onnxruntime.transformers.float16``, which ships with onnxruntime: no new dependency). CPU backends refuse it:
  x86 CPUs have no FP16 convolution kernels in these runtimes, so a timing would measure conversions.

Output checks (every row records which one ran in ``output_check``):

* fp32: element-wise against PyTorch eager, ``|d| <= atol + rtol * max|ref|`` (``base.TOLERANCES``).
* fp16: the same rule with the float16 tolerances of ``base.TOLERANCES``, against eager FP32.
* int8: an element-wise FP32 tolerance is the wrong question: every quantised tensor is rounded to one of 255 steps
  of its calibrated range, so a correct INT8 model differs from FP32 by a few per cent everywhere, and more after
  many layers. The check is the signal-to-quantisation-noise ratio against eager FP32, the yardstick quantisation
  tools report per tensor (PyTorch's numeric suite, ONNX Runtime's ``qdq_loss_debug``):
  ``SQNR = 20 log10(||ref|| / ||out - ref||) >= SQNR_MIN_DB``, 10 dB (the error's power at most a tenth of the
  output's; cosine similarity about 0.95 or better). The line is set by what the check is for - catching a *wrong*
  model, not grading accuracy, which needs real weights and real data: a wrong graph, a mis-scaled input, an output
  of another model or saturated activations read near 0 dB (an uncorrelated output of the same power: -3 dB), while
  a correct one reads 35-50 dB on a single layer and lower the deeper the stack, since every layer adds rounding
  noise and random-weight layers amplify it (latprof's own 10-layer depthwise stack, ``kernels/int8-depthwise.toml``,
  reads 18.7 dB at cosine 0.993; a first version's 20 dB line rejected it, although nothing was wrong). The cosine
  similarity, the largest error as a share of the output's range and top-1 agreement are recorded beside it but do
  not gate: the zoo's random-weight classifiers give nearly the same logits for every input (their output is
  mostly the classifier's bias), so top-1 of one random input flips on a near tie and says nothing. The checked
  input (seed 0) is not among the calibration inputs (seeds from ``CALIBRATION_SEED``), so the check is not scored
  on the data the scales were fitted to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from latprof.backends.base import DEFAULT_PRECISION, PRECISIONS, TOLERANCES, BackendError
from latprof.errors import LatprofError, unknown_choice

QUANT_FORMATS = ("QDQ", "QOperator")
QUANT_TYPES = ("QInt8", "QUInt8")
CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")
# Calibration inputs are standard-normal tensors of the workload's input shape drawn with seeds
# CALIBRATION_SEED, CALIBRATION_SEED + 1, ...; the timed and checked input uses seed 0.
CALIBRATION_SEED = 1000
SQNR_MIN_DB = 10.0
# What each precision needs, for the one-line refusal on a backend that lacks it.
NEEDS = {"int8": "static quantisation with ONNX Runtime", "fp16": "a CUDA backend"}

FP32_CHECK = "fp32: |out - eager| <= atol + rtol * max|eager| (atol {atol:g}, rtol {rtol:g})"


@dataclass(frozen=True)
class QuantSettings:
    """How an INT8 model is made (``onnxruntime.quantization.quantize_static``); every field is part of its cache
    key and recorded in every INT8 row. Defaults: ONNX Runtime's recommended QDQ format with signed 8-bit
    activations and weights (S8S8), weights per output channel (per-tensor weight scales cost depthwise
    convolutions most of their accuracy), MinMax calibration."""

    format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "QInt8"
    weight_type: str = "QInt8"
    calibration: str = "MinMax"
    calibration_batches: int = 8
    reduce_range: bool = False

    def __post_init__(self) -> None:
        for name, value, valid in (("format", self.format, QUANT_FORMATS),
                                   ("activation_type", self.activation_type, QUANT_TYPES),
                                   ("weight_type", self.weight_type, QUANT_TYPES),
                                   ("calibration", self.calibration, CALIBRATION_METHODS)):
            if value not in valid:
                raise unknown_choice(f"--quant {name}", str(value), valid)
        for name in ("per_channel", "reduce_range"):
            if not isinstance(getattr(self, name), bool):
                raise LatprofError(f"--quant {name} must be true or false, got {getattr(self, name)!r}")
        n = self.calibration_batches
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LatprofError(f"--quant calibration_batches must be a positive integer, got {n!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> QuantSettings:
        """From a dict (a payload, a spec); unknown keys are a one-line error naming the valid ones."""
        values = dict(values or {})
        valid = [f.name for f in fields(cls)]
        for key in values:
            if key not in valid:
                raise unknown_choice("--quant setting", key, valid)
        return cls(**values)

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> QuantSettings:
        """From ``--quant KEY=VALUE`` items: booleans as true/false (on/off, 1/0), counts as integers."""
        values: dict[str, Any] = {}
        for item in items or ():
            key, sep, text = item.partition("=")
            key, text = key.strip(), text.strip()
            if not sep or not key:
                raise LatprofError(f"malformed --quant {item!r}; expected KEY=VALUE, e.g. per_channel=false")
            values[key] = _typed(key, text)
        return cls.from_dict(values)

    def label(self) -> str:
        """A compact, unambiguous name (part of a row's identity), e.g. ``QDQ per-channel A:S8 W:S8 MinMax x8``."""
        short = {"QInt8": "S8", "QUInt8": "U8"}
        text = (f"{self.format} {'per-channel' if self.per_channel else 'per-tensor'} "
                f"A:{short[self.activation_type]} W:{short[self.weight_type]} {self.calibration} x{self.calibration_batches}")
        return text + (" reduce-range" if self.reduce_range else "")

    def row_fields(self) -> dict[str, Any]:
        return {f"quant_{k}": v for k, v in asdict(self).items()}


def _typed(key: str, text: str) -> Any:
    if key in ("per_channel", "reduce_range"):
        low = text.lower()
        if low in ("true", "on", "1", "yes"):
            return True
        if low in ("false", "off", "0", "no"):
            return False
        raise LatprofError(f"--quant {key} must be true or false, got {text!r}")
    if key == "calibration_batches":
        try:
            return int(text)
        except ValueError:
            raise LatprofError(f"--quant calibration_batches must be a positive integer, got {text!r}") from None
    return text


QUANT_FIELDS = tuple(f"quant_{f.name}" for f in fields(QuantSettings))


def quant_help() -> str:
    """``--quant`` help text with the valid keys and the defaults (from ``QuantSettings``)."""
    d = QuantSettings()
    return (f"INT8 quantisation setting KEY=VALUE, repeated (only with --precision int8): format ({'|'.join(QUANT_FORMATS)}, "
            f"default {d.format}), per_channel (default {str(d.per_channel).lower()}), activation_type and weight_type "
            f"({'|'.join(QUANT_TYPES)}, default {d.activation_type}/{d.weight_type}), calibration "
            f"({'|'.join(CALIBRATION_METHODS)}, default {d.calibration}), calibration_batches (default "
            f"{d.calibration_batches}), reduce_range (default {str(d.reduce_range).lower()})")


def backends_for(precision: str) -> list[str]:
    """Every registered backend that runs ``precision`` (available here or not)."""
    from latprof.backends.registry import _BACKENDS

    return [name for name, cls in _BACKENDS.items() if precision in cls.precisions]


def check_precision(precision: str, backends: Sequence[str], quant: dict[str, Any] | None = None) -> QuantSettings | None:
    """Refuse, in one line, a precision a backend cannot run (naming those that can) and ``--quant`` without int8;
    returns the validated INT8 settings (None for other precisions)."""
    if precision not in PRECISIONS:
        raise unknown_choice("--precision", precision, PRECISIONS)
    from latprof.backends.registry import backend_class

    for name in backends:
        if precision not in backend_class(name).precisions:
            raise LatprofError(f"--precision {precision} is not available on {name}; it needs "
                               f"{NEEDS.get(precision, precision)} and runs on {', '.join(backends_for(precision))}")
    if precision != "int8":
        if quant:
            raise LatprofError(f"--quant sets INT8 quantisation; it needs --precision int8, not {precision}")
        return None
    return QuantSettings.from_dict(quant)


def precision_fields(precision: str, quant: dict[str, Any] | QuantSettings | None) -> dict[str, Any]:
    """Row fields of a precision: ``precision`` and ``quantization`` (both in the row identity) and, for int8,
    every quantisation setting as its own column (None on other rows)."""
    out: dict[str, Any] = {"precision": precision, "quantization": ""}
    out.update(dict.fromkeys(QUANT_FIELDS))
    if precision == "int8":
        q = quant if isinstance(quant, QuantSettings) else QuantSettings.from_dict(quant)
        out["quantization"] = q.label()
        out.update(q.row_fields())
    return out


# ------------------------------------------------------------------ output checks
def fp32_check_text(dtype: torch.dtype = torch.float32) -> str:
    rtol, atol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    return FP32_CHECK.format(atol=atol, rtol=rtol)


def output_check_fields(check: dict[str, Any]) -> dict[str, Any]:
    """The row's output-check columns: what a backend recorded, else the FP32 element-wise rule."""
    return {"output_check": check.get("output_check") or fp32_check_text(),
            **{k: v for k, v in check.items() if k != "output_check"}}


def _as_float64(name: str, actual: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    actual = actual.detach().to("cpu")
    if tuple(actual.shape) != tuple(reference.shape):
        raise BackendError(f"{name}: output shape {tuple(actual.shape)} != reference {tuple(reference.shape)}")
    return actual.to(torch.float64), reference.detach().to("cpu", torch.float64)


def sqnr_db(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """``20 log10(||reference|| / ||actual - reference||)``; inf when they are equal, NaN for NaN outputs."""
    noise = float(torch.linalg.vector_norm(actual - reference))
    signal = float(torch.linalg.vector_norm(reference))
    if noise != noise or signal != signal:
        return float("nan")
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 20.0 * torch.log10(torch.tensor(signal / noise, dtype=torch.float64)).item()


def check_int8_output(name: str, actual: torch.Tensor, reference: torch.Tensor,
                      against: str = "PyTorch eager FP32") -> dict[str, Any]:
    """The INT8 rule (module docstring): pass when SQNR >= ``SQNR_MIN_DB``, else ``BackendError``; returns the
    row's check columns (rule, SQNR, cosine, max error over the output's range, top-1 agreement)."""
    out, ref = _as_float64(name, actual, reference)
    sqnr = sqnr_db(out, ref)
    flat_o, flat_r = out.reshape(-1), ref.reshape(-1)
    norms = float(torch.linalg.vector_norm(flat_o) * torch.linalg.vector_norm(flat_r))
    cosine = float(flat_o @ flat_r) / norms if norms > 0 else float("nan")
    span = float(flat_r.max() - flat_r.min()) if flat_r.numel() else 0.0
    max_err = float((flat_o - flat_r).abs().max()) if flat_r.numel() else 0.0
    fields_: dict[str, Any] = {
        "output_check": f"int8: SQNR >= {SQNR_MIN_DB:g} dB vs {against}",
        "output_sqnr_db": sqnr,
        "output_cosine": cosine,
        "output_max_err_over_range": max_err / span if span > 0 else None,
        "output_top1_agreement": _top1_agreement(out, ref),
    }
    if not sqnr >= SQNR_MIN_DB:  # also catches NaN
        raise BackendError(f"{name}: INT8 output too far from {against}: SQNR {sqnr:.1f} dB < {SQNR_MIN_DB:g} dB "
                           f"(cosine {cosine:.4f})")
    return fields_


def _top1_agreement(out: torch.Tensor, ref: torch.Tensor) -> float | None:
    """Share of batch rows whose arg-max agrees, for (batch, classes) outputs; None for other shapes."""
    if out.dim() != 2 or out.shape[1] < 2:
        return None
    return float((out.argmax(dim=1) == ref.argmax(dim=1)).double().mean())


def check_fp16_output(name: str, actual: torch.Tensor, reference: torch.Tensor,
                      against: str = "PyTorch eager FP32") -> dict[str, Any]:
    """FP16 against FP32: the element-wise rule with float16 tolerances; SQNR recorded beside it."""
    out, ref = _as_float64(name, actual, reference)
    rtol, atol = TOLERANCES[torch.float16]
    err = float((out - ref).abs().max()) if ref.numel() else 0.0
    allowed = atol + rtol * (float(ref.abs().max()) if ref.numel() else 0.0)
    if not err <= allowed:
        raise BackendError(f"{name}: FP16 output differs from {against} (max abs error {err:.3g}, allowed {allowed:.3g})")
    return {"output_check": f"fp16: |out - ref| <= {atol:g} + {rtol:g} * max|ref| vs {against}",
            "output_sqnr_db": sqnr_db(out, ref)}


__all__ = [
    "CALIBRATION_METHODS", "CALIBRATION_SEED", "DEFAULT_PRECISION", "PRECISIONS", "QUANT_FIELDS", "QUANT_FORMATS",
    "QUANT_TYPES", "QuantSettings", "SQNR_MIN_DB", "backends_for", "check_fp16_output", "check_int8_output",
    "check_precision", "output_check_fields", "precision_fields", "quant_help", "sqnr_db",
]
