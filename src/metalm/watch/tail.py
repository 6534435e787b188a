"""Incremental readers for files that a training run writes while it is being watched.

`JsonlTail` reads only the bytes appended since its last poll, so watching a run with hundreds of
thousands of rows costs a few bytes per poll rather than re-parsing the whole file. It never
consumes a line without its trailing newline (the writer may be half-way through it), and it
starts over when the file shrinks, is replaced (new inode) or is rewritten in place (the bytes just
before its offset changed) - the watcher must then drop what it had read before.

`FileSnapshot` re-parses a small whole-file document (the run's status, phase read-out and config) when
its size, mtime or inode change, and keeps the last good value while a non-atomic write is caught
half-done.

Both read only regular files that lie in their run directory (`open_regular`): a symbolic link, a
FIFO or a device in its place reads as a missing file, so the live view never serves anything from
outside the watched directories.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def open_regular(path: Path, within: Path | None = None) -> tuple[IO[bytes], os.stat_result] | None:
    """`path` opened for reading with its status, or None when it is missing, is not a regular file,
    is a symbolic link, or (given `within`, a resolved directory) does not lie directly in `within`."""
    if within is not None and os.path.realpath(path.parent) != str(within):
        return None
    try:  # O_NOFOLLOW: a link is refused, not followed; O_NONBLOCK: a FIFO cannot hang the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), st

# Bytes just before the read offset that must be unchanged for the next read to be a continuation.
_SIGNATURE_BYTES = 64


class JsonlTail:
    """Follows an append-only JSON-lines file; `poll()` returns the complete rows added since last time."""

    def __init__(self, path: Path, within: Path | None = None) -> None:
        self.path = Path(path)
        self.within = within  # the resolved directory the file must lie in (see `open_regular`)
        self.mtime: float | None = None  # of the file at the last poll (None: missing)
        self.offset = 0  # byte position just after the last complete line consumed
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read so far
        self._signature = b""  # the bytes [offset - len(signature), offset) as last read
        self.bad_lines = 0  # complete lines that were not a JSON object (skipped, counted)

    def _reset(self) -> None:
        self.offset = 0
        self._identity = None
        self._signature = b""

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """Read new complete rows. Returns (rows, restarted): `restarted` means the file was
        truncated, replaced or deleted since the last poll, so earlier rows are no longer valid."""
        opened = open_regular(self.path, self.within)
        if opened is None:
            restarted = self._identity is not None
            self._reset()
            self.mtime = None
            return [], restarted
        f, st = opened
        self.mtime = st.st_mtime
        identity = (st.st_dev, st.st_ino)
        restarted = False
        if self._identity is not None and (identity != self._identity or st.st_size < self.offset):
            restarted = True
            self._reset()
        with f:
            f.seek(self.offset - len(self._signature))
            data = f.read()
        if self._signature and data[: len(self._signature)] != self._signature:
            # Rewritten in place (same inode, not shorter): read it again from the start.
            self._reset()
            rows, _ = self.poll()
            return rows, True
        self._identity = identity
        new = data[len(self._signature) :]
        end = new.rfind(b"\n")
        if end < 0:
            return [], restarted
        complete = new[: end + 1]
        self.offset += len(complete)
        self._signature = (self._signature + complete)[-_SIGNATURE_BYTES:]
        return self._parse(complete), restarted

    def _parse(self, chunk: bytes) -> list[dict[str, Any]]:
        rows = []
        for line in chunk.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                self.bad_lines += 1  # e.g. a line cut short by a crash, then appended to
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                self.bad_lines += 1
        return rows


class FileSnapshot:
    """The parsed content of a small file, re-read only when it changes on disk."""

    def __init__(self, path: Path, parse: Callable[[bytes], Any], within: Path | None = None) -> None:
        self.path = Path(path)
        self.within = within
        self._parse = parse
        self._signature: tuple[int, int, int, int] | None = None
        self.value: Any = None
        self.version = 0  # bumped whenever `value` changes

    def poll(self) -> bool:
        """Refresh `value`; returns True when it changed. A missing file gives `None`; an
        unparsable one keeps the previous value and is retried at the next poll."""
        opened = open_regular(self.path, self.within)
        if opened is None:
            if self._signature is None and self.value is None:
                return False
            self._signature, self.value = None, None
            self.version += 1
            return True
        f, st = opened
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with f:
            if signature == self._signature:
                return False
            data = f.read()
        try:
            value = self._parse(data)
        except Exception:  # noqa: BLE001 - half-written file: keep the last good value, retry later
            return False
        self._signature = signature
        if value == self.value:
            return False
        self.value = value
        self.version += 1
        return True


def parse_json(data: bytes) -> Any:
    return json.loads(data)


def parse_yaml(data: bytes) -> Any:
    import yaml

    return yaml.safe_load(data)
