"""Parsing and formatting of tensor shapes written as ``1x3x224x224``."""

from __future__ import annotations

from latprof.errors import LatprofError

Shape = tuple[int, ...]


def parse_shape(text: str) -> Shape:
    """Parse ``NxCxHxW`` (any rank >= 1, positive integers) into a tuple."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise LatprofError(
            f"malformed input shape {text!r}; expected positive integers joined by 'x', e.g. 1x3x224x224"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise LatprofError(
            f"malformed input shape {text!r}; expected positive integers joined by 'x', e.g. 1x3x224x224"
        )
    return dims


def format_shape(shape: Shape | list[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def with_batch(shape: Shape, batch: int | None) -> Shape:
    """Replace the leading (batch) dimension."""
    if batch is None:
        return tuple(shape)
    if batch < 1:
        raise LatprofError(f"--batch must be >= 1, got {batch}")
    return (batch, *shape[1:])
