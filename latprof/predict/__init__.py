"""Kernel-level latency prediction: ``latprof calibrate`` learns this machine's kernels on one backend;
``latprof.predict.load(path).predict(module, input_shape)`` predicts a network's latency without running it.

Layout: ``kernels`` (the kernel record and its features) · ``torch_kernels`` / ``ort_kernels`` (what PyTorch eager
and ONNX Runtime execute) · ``space`` (calibration cells from the zoo's blocks) · ``measure_cells`` (the worker side
of the ``calibrate`` unit) · ``calibrate`` (rounds within a budget, adaptive) · ``model`` (regressors) · ``store``
(the JSON file) · ``predictor`` (prediction) · ``evaluate`` (against measurements, beside FLOPs/MAC fits;
the figures themselves are ``latprof.analysis.prediction``). ``latprof.views.predict`` prints.
"""

from latprof.predict.predictor import Prediction, Predictor, load, predict_models

__all__ = ["Prediction", "Predictor", "load", "predict_models"]
