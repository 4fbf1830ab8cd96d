"""Table rows of predictions for the command line (kept out of ``latprof/cli.py``)."""

from __future__ import annotations

from typing import Any

from latprof.predict.predictor import Prediction


def prediction_rows(predictions: list[Prediction]) -> list[list[Any]]:
    return [[p.model, "x".join(map(str, p.input_shape)), p.predicted_ms, p.kernels_ms, p.overhead_ms,
             sum(k.count for k in p.kernels), f"{p.predict_s:.3f}"] for p in predictions]


def kernel_rows(p: Prediction) -> list[list[Any]]:
    return [[k.op, k.label, k.count, k.ms_each, k.ms] for k in sorted(p.kernels, key=lambda k: -k.ms)]
