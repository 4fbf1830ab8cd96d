"""Backend registry: name → class, with availability on this machine."""

from __future__ import annotations

from typing import Any

from latprof.backends.base import MOBILE_THREADS, Backend, BackendOptions, logical_cores
from latprof.errors import LatprofError, unknown_choice

_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    if cls.name in _BACKENDS:
        raise ValueError(f"backend {cls.name!r} registered twice")
    _BACKENDS[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return list(_BACKENDS)


def available_backends() -> list[str]:
    return [n for n, c in _BACKENDS.items() if c.availability()[0]]


def backend_class(name: str, require_available: bool = True) -> type[Backend]:
    """The class for ``name``; an unknown or unavailable backend is a one-line error listing those usable here.

    ``require_available=False`` (fleet runs: the backend must exist on the measuring node, not on the driver) only
    rejects unknown names."""
    if name not in _BACKENDS:
        raise unknown_choice("backend", name, _BACKENDS)
    cls = _BACKENDS[name]
    ok, why = cls.availability()
    if not ok and require_available:
        raise LatprofError(f"backend {name!r} is not available here ({why}); available: {', '.join(available_backends())}")
    return cls


def create_backend(name: str, options: BackendOptions) -> Backend:
    return backend_class(name)(options)


def describe_backends() -> list[dict[str, Any]]:
    out = []
    for name, cls in _BACKENDS.items():
        ok, why = cls.availability()
        out.append({
            "name": name,
            "available": ok,
            "reason": why or None,
            "device_class": cls.device_class,
            "default_batch": cls.fixed_batch or cls.default_batch,
            "precisions": ",".join(cls.precisions),
            "description": cls.description,
        })
    return out


def default_threads_text() -> str:
    """The ``--threads`` default for help texts: ``base.default_threads``'s rule with this machine's core count."""
    mobile = [n for n, c in _BACKENDS.items() if c.device_class == "mobile" and c.default_intra_threads is None]
    on_mobile = f"; {MOBILE_THREADS} on {', '.join(mobile)}" if mobile else ""
    own = "".join(f"; {c.default_intra_threads} on {n}" for n, c in _BACKENDS.items() if c.default_intra_threads is not None)
    return f"all logical cores ({logical_cores()} here){on_mobile}{own}"
