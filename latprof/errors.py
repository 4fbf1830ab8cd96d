"""User-facing errors: one line that names the bad value and the valid choices; the CLI maps them to exit 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LatprofError(Exception):
    """A problem with the user's input or environment, reported as one line without a traceback."""


def unknown_choice(what: str, value: str, choices: Iterable[str]) -> LatprofError:
    """Build the error for an unknown name, with close-match suggestions and the valid choices."""
    valid = sorted(set(choices))
    close = difflib.get_close_matches(value, valid, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    listing = ", ".join(valid) if len(valid) <= 40 else ", ".join(valid[:40]) + f", ... ({len(valid)} in all)"
    return LatprofError(f"unknown {what} {value!r}{hint}; valid: {listing}")


def one_line(text: object) -> str:
    """Collapse an exception message to its first non-empty line (the CLI never prints tracebacks)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return type(text).__name__ if isinstance(text, BaseException) else ""
