"""Ctrl-C while the command line starts up: recorded, then answered with one line and exit 130.

Why not let KeyboardInterrupt fly during start-up: the imports (torch, transformers, pydantic...)
run library code that does not survive it cleanly. Python 3.11 flags an interrupt raised inside
``exec()`` (every dataclass definition runs one) as unhandled and kills the process with SIGINT at
exit even after metalm caught it and printed its line, and an interrupt inside a library's class
creation can surface as a RuntimeError traceback. So while start-up runs, the first Ctrl-C is only
recorded and start-up ends early at the next check; a second Ctrl-C interrupts at once, as usual.
Later, lazy imports can still take the interrupt inside ``exec()``: ``handled()`` clears CPython's
flag once metalm has answered the interrupt, so the exit status stays 130.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from types import FrameType

_pressed = False
_installed = False


def _record(signum: int, frame: FrameType | None) -> None:
    global _pressed
    if _pressed:  # the second Ctrl-C: the user means it now
        raise KeyboardInterrupt
    _pressed = True


def defer() -> None:
    """Record Ctrl-C instead of raising it, until ``resume()``. Only from the main thread, and only
    over Python's default handler (a host program's own handler is left alone)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    signal.signal(signal.SIGINT, _record)
    _installed = True


def resume() -> None:
    """Give Ctrl-C back to Python's default handler; raise KeyboardInterrupt here (in plain Python
    code, where catching it is clean) if one was pressed while deferred."""
    global _installed, _pressed
    if _installed:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _installed = False
    if _pressed:
        _pressed = False
        raise KeyboardInterrupt


def handled() -> None:
    """Tell CPython that the KeyboardInterrupt being answered was handled. CPython 3.11 sets
    ``_Py_UnhandledKeyboardInterrupt`` whenever one leaves an ``exec()`` of source text, caught
    later or not, and may then end the process by SIGINT instead of the exit status metalm chose.
    Where the flag is not exported (other versions), nothing changes."""
    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (AttributeError, ValueError):
        pass
