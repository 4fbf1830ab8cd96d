"""Backends: one module per runtime, all behind the ``Backend`` interface and the registry."""

from latprof.backends import compile_backends as _compile_backends  # noqa: F401  (torch-compile, torch-compile-cuda)
from latprof.backends import onnxruntime_backends as _ort_backends  # noqa: F401  (ort-cpu, ort-mobile, ort-cuda)
from latprof.backends import torch_backends as _torch_backends  # noqa: F401  (registers torch-cpu, torch-cuda)
from latprof.backends.base import Backend, BackendError, BackendOptions, PreparedRun, check_output
from latprof.backends.registry import (
    available_backends,
    backend_class,
    backend_names,
    create_backend,
    describe_backends,
    register_backend,
)

__all__ = [
    "Backend",
    "BackendError",
    "BackendOptions",
    "PreparedRun",
    "available_backends",
    "backend_class",
    "backend_names",
    "check_output",
    "create_backend",
    "describe_backends",
    "register_backend",
]
