"""Parsing and formatting of tensor shapes written as ``1x3x224x224``.

``parse_shape`` returns a ``ParsedShape``: a plain tuple of ints that also remembers the text the user typed, so
an error about the shape can quote ``--input`` as written, not a normalised or batch-rewritten form of it.
"""

from __future__ import annotations

from latprof.errors import LatprofError

Shape = tuple[int, ...]

RANK_LAYOUTS = {1: "N", 2: "NxC", 3: "NxCxL", 4: "NxCxHxW", 5: "NxCxDxHxW"}


class ParsedShape(tuple):
    """A shape parsed from text; ``text`` is what was typed (``shape_text`` falls back to ``format_shape``)."""

    text: str

    def __new__(cls, dims: Shape, text: str) -> ParsedShape:
        obj = super().__new__(cls, dims)
        obj.text = text
        return obj

    def __reduce__(self) -> tuple[object, ...]:
        return (ParsedShape, (tuple(self), self.text))


def parse_shape(text: str) -> Shape:
    """Parse ``NxCxHxW`` (any rank >= 1, positive integers) into a tuple that remembers ``text``."""
    typed = str(text).strip()
    parts = typed.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise LatprofError(
            f"malformed input shape {typed!r}; expected positive integers joined by 'x', e.g. 1x3x224x224"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise LatprofError(
            f"malformed input shape {typed!r}; expected positive integers joined by 'x', e.g. 1x3x224x224"
        )
    return ParsedShape(dims, typed)


def format_shape(shape: Shape | list[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def shape_text(shape: Shape | list[int]) -> str:
    """The shape as the user typed it when it came from ``parse_shape``, else ``format_shape``."""
    text = getattr(shape, "text", None)
    return text if isinstance(text, str) and text else format_shape(shape)


def layout(rank: int) -> str:
    """``NxCxHxW`` for rank 4 and so on; ``rank dimensions`` spelled out for unusual ranks."""
    return RANK_LAYOUTS.get(rank, "x".join(["D"] * rank))


def check_rank(shape: Shape, expected: Shape, model: str) -> None:
    """An ``--input`` whose rank differs from the model's default input is a one-line error quoting the typed text.

    One dimension short reads as a forgotten batch, and the example puts ``1`` in front of what was typed
    (``--input 3x64x64: conv_bn_relu takes 4 dimensions (NxCxHxW), e.g. 1x3x64x64``); otherwise the example is the
    model's default input.
    """
    rank, want = len(shape), len(expected)
    if rank == want:
        return
    if rank == want - 1:
        example = format_shape((1, *tuple(shape)))
        hint = f"e.g. {example} (batch first); its default input is {format_shape(expected)}"
    else:
        hint = f"e.g. {format_shape(expected)} (its default input)"
    plural = "s" if want != 1 else ""
    raise LatprofError(f"--input {shape_text(shape)}: {model} takes {want} dimension{plural} ({layout(want)}), {hint}")


def with_batch(shape: Shape, batch: int | None) -> Shape:
    """Replace the leading (batch) dimension."""
    if batch is None:
        return tuple(shape)
    if batch < 1:
        raise LatprofError(f"--batch must be >= 1, got {batch}")
    return (batch, *shape[1:])
