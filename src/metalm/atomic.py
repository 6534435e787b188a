"""Atomic publication of files and directories: a reader (or a resumed run) sees the old version or
the complete new one, never half of either.

Every file metalm writes that something later reads goes through here. A file is written to a
hidden temporary name beside its target, flushed and fsynced, then renamed over it; a directory is
assembled under a temporary name and renamed into place (a rename within one file system is atomic).
Temporary files and directories are created private (0600/0700) and given the modes the umask
allows ordinary files and folders before they are published, so results on a shared machine are as
readable as the user's other files.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces `path` (mode `0o666 & ~umask`, like a file opened
    normally) when the block ends without an error; on an error the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _ignore_missing():
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with open_atomic(path) as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent))


def write_jsonl_atomic(path: str | Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place, replacing an older copy (the old copy is moved
    aside first, so at every moment `final` is either the old or the new complete directory)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        trash = final.with_name(f".old-{final.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _temp_prefix(final: Path) -> str:
    return f".tmp-{final.name}."


@contextmanager
def publish_dir(final: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; when the block ends without an error it
    becomes `final` (replacing an older one when `replace`, else kept only if `final` is still
    absent — another process may have published first); on an error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), dir=final.parent))
    try:
        yield tmp
        _follow_umask(tmp)
        if replace:
            replace_dir(tmp, final)
        else:
            try:
                os.replace(tmp, final)  # fails if another writer published a non-empty `final` meanwhile
            except OSError:
                if not final.is_dir():
                    raise
    finally:
        if tmp.exists():  # an error, or another writer's copy kept
            shutil.rmtree(tmp, ignore_errors=True)


def _follow_umask(directory: Path) -> None:
    """Give every file and folder under `directory` the mode the umask allows (some writers, e.g.
    safetensors, create private files)."""
    mask = umask()
    os.chmod(directory, 0o777 & ~mask)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def remove_stale_temps(final: str | Path, max_age_s: float) -> None:
    """Remove `publish_dir` temporary directories of `final` not modified for `max_age_s` seconds:
    left by writers that were killed (a live writer's directory is younger)."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(glob.escape(_temp_prefix(final)) + "*"):
        with _ignore_missing():
            if time.time() - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _ignore_missing():
    try:
        yield
    except FileNotFoundError:
        pass
