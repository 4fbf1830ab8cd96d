"""SIGTERM and SIGHUP take the Ctrl-C path: the running worker is stopped and every finished row is kept.

A CI runner cancelling a job, ``timeout``, or a closed terminal ends a run with SIGTERM or SIGHUP, not SIGINT.
Python's default for those ends the process on the spot: the worker, started in its own session so that a
terminal's Ctrl-C reaches only the parent, ran on unobserved (measuring on a machine the next job already uses)
and its scratch folder stayed behind. Raised as an interrupt where the signal lands, the engine's Ctrl-C handling
runs instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The run was ended by a signal other than Ctrl-C; ``signum`` says which (exit status 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def termination_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only: Python delivers signals
    there, and only it may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    previous = {s: signal.signal(s, raise_terminated) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
