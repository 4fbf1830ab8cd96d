"""INT8 and FP16 versions of an exported ONNX model, cached beside the FP32 file.

INT8 (``int8_model``): ``onnxruntime.quantization.quant_pre_process`` (shape inference and ONNX Runtime's basic graph
optimisation, which the quantiser's documentation asks for), then ``quantize_static`` with the ``QuantSettings``,
calibrated on ``calibration_batches`` standard-normal inputs of the workload's shape drawn from fixed seeds
(``precision.CALIBRATION_SEED`` onwards). Same FP32 model + same settings + same onnxruntime = the same file.

FP16 (``fp16_model``): ``onnxruntime.transformers.float16.convert_float_to_float16`` (part of the onnxruntime
wheel), inputs and outputs float16 too (``keep_io_types=False``), as ``torch-cuda`` runs ``module.half()`` on half
inputs.

Cache key: the FP32 file's key (``onnx_export.workload_hash``; a user's ``.onnx`` file by its content hash), the
precision, every quantisation setting, the calibration inputs' recipe, ``LOWP_KEY_VERSION`` and the onnxruntime
version (its quantiser decides the graph). The file sits beside the FP32 one as
``<fp32 stem>.<precision>-<key>.onnx`` (a user file's in the cache directory, never in the user's folder), with the
key and the settings in its ``metadata_props``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from latprof.backends.base import BackendError
from latprof.backends.onnx_export import ExportedModel, _quiet, cache_dir
from latprof.backends.precision import CALIBRATION_SEED, QuantSettings
from latprof.errors import one_line
from latprof.workloads.registry import Workload

# Bump whenever what goes into the key (or how the file is made) changes, so no older file is reused.
LOWP_KEY_VERSION = 1
# Node types that show a graph really is quantised (QDQ pairs, or QOperator's fused ops).
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "MatMulInteger",
             "ConvInteger", "QGemm", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearMul", "QLinearSigmoid")


@dataclass(frozen=True)
class LowPrecisionModel:
    """A converted model file and how it was made."""

    path: Path
    precision: str
    key: str
    cached: bool
    seconds: float  # conversion time (0 when cached)
    node_counts: dict[str, int]

    def settings(self) -> dict[str, Any]:
        return {
            "lowp_path": str(self.path),
            "lowp_key": self.key,
            "lowp_cached": self.cached,
            "lowp_convert_s": round(self.seconds, 3),
            "lowp_quant_nodes": {k: v for k, v in self.node_counts.items() if k in QUANT_OPS},
        }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def calibration_recipe(workload: Workload, settings: QuantSettings) -> dict[str, Any]:
    """What the calibration inputs are, for the key: shape, distribution and seeds."""
    seeds = list(range(CALIBRATION_SEED, CALIBRATION_SEED + settings.calibration_batches))
    return {"shape": [int(d) for d in workload.input_shape], "distribution": "standard normal", "seeds": seeds}


def lowp_key(exported: ExportedModel, precision: str, workload: Workload, settings: QuantSettings | None) -> str:
    """The cache key of the ``precision`` version of ``exported`` (see the module docstring)."""
    source = exported.workload_hash or f"file:{_file_digest(exported.path)}"
    ingredients: dict[str, Any] = {"version": LOWP_KEY_VERSION, "source": source, "precision": precision,
                                   "onnxruntime": _ort_version()}
    if precision == "int8":
        assert settings is not None
        ingredients["quant"] = asdict(settings)
        ingredients["calibration_inputs"] = calibration_recipe(workload, settings)
    return _digest(ingredients)


def lowp_path(exported: ExportedModel, precision: str, key: str) -> Path:
    """Beside the FP32 file for exports; in the cache directory for a user's own file."""
    folder = exported.path.parent if exported.workload_hash else cache_dir()
    return folder / f"{exported.path.stem}.{precision}-{key}.onnx"


def node_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


class _Calibration:
    """``CalibrationDataReader`` over the fixed seeded inputs (built lazily: onnxruntime's base class)."""

    def __new__(cls, input_name: str, workload: Workload, settings: QuantSettings) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                seeds = calibration_recipe(workload, settings)["seeds"]
                self._feeds = iter([{input_name: workload.make_inputs(seed=s)[0].numpy()} for s in seeds])

            def get_next(self) -> dict[str, Any] | None:
                return next(self._feeds, None)

        return Reader()


def _input_name(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BackendError(f"{path.name}: latprof calibrates models with one input tensor; this one takes {len(inputs)}")
    return inputs[0]


def _quantize(source: Path, target: Path, workload: Workload, settings: QuantSettings) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="latprof-quant-") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(source), str(pre))
        quantize_static(
            str(pre), str(target), _Calibration(_input_name(pre), workload, settings),
            quant_format=getattr(QuantFormat, settings.format),
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=getattr(QuantType, settings.activation_type),
            weight_type=getattr(QuantType, settings.weight_type),
            calibrate_method=getattr(CalibrationMethod, settings.calibration),
        )


def _to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=False)
    onnx.save(model, str(target))


def _stamp(path: Path, key: str, precision: str, settings: QuantSettings | None) -> None:
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"latprof_lowp_key": key, "latprof_precision": precision,
                  "latprof_lowp_key_version": str(LOWP_KEY_VERSION)})
    if settings is not None:
        props["latprof_quant_settings"] = json.dumps(asdict(settings), sort_keys=True)
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def convert_model(exported: ExportedModel, precision: str, workload: Workload,
                  settings: QuantSettings | None = None) -> LowPrecisionModel:
    """The cached ``precision`` (int8 | fp16) version of ``exported``, made on a miss; ``BackendError`` when the
    converter fails (an error row)."""
    if precision not in ("int8", "fp16"):
        raise BackendError(f"no low-precision conversion for {precision!r}; valid: int8, fp16")
    if precision == "int8":
        settings = settings or QuantSettings()
    key = lowp_key(exported, precision, workload, settings)
    path = lowp_path(exported, precision, key)
    if path.exists():
        return LowPrecisionModel(path, precision, key, True, 0.0, node_counts(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    t0 = time.perf_counter()
    try:
        with _quiet():
            if precision == "int8":
                assert settings is not None
                _quantize(exported.path, tmp, workload, settings)
            else:
                _to_fp16(exported.path, tmp)
        _stamp(tmp, key, precision, settings)
        os.replace(tmp, path)
    except BackendError:
        raise
    except Exception as exc:  # quantiser / converter failure on this graph → error row
        raise BackendError(f"{workload.name}: {precision} conversion failed: {one_line(exc)[:300]}") from None
    finally:
        for leftover in path.parent.glob(f"{tmp.name}*"):
            leftover.unlink(missing_ok=True)
    return LowPrecisionModel(path, precision, key, False, time.perf_counter() - t0, node_counts(path))
