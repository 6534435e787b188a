"""One process at a time in a directory (DESIGN 2.9, Integrity): an advisory lock (`fcntl.flock`)
on `.lock` inside it, held for the work's life. The kernel releases it when the holder exits in any
way (a kill included), so a lock is never left behind; the file keeps the holder's PID for the
message a second process gets."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError

LOCK = ".lock"


@contextlib.contextmanager
def hold_lock(directory: str | Path, what: str, advice: str) -> Iterator[None]:
    """Hold `directory`'s lock (the directory is created); ConfigError naming the holder's PID when
    another process holds it. `what` names the directory in the message, `advice` what to do."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise ConfigError(f"{what} {directory} is in use by {'process ' + holder if holder else 'another process'}; "
                          f"{advice}") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock
