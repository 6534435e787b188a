"""SIGTERM ends a run the way Ctrl-C does: KeyboardInterrupt, so the run records "interrupted" and
the CLI exits with status 130; the same command resumes it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """While the block runs (in the main thread only; elsewhere nothing changes), SIGINT and SIGTERM
    raise KeyboardInterrupt; the previous handlers are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
