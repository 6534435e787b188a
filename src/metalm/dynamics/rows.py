"""Reading and writing dynamics rows (JSON lines), robust to a run killed mid-write."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..run_log import read_jsonl as load_rows  # one tolerant JSON-lines reader for every run file

DYNAMICS_FILE = "dynamics.jsonl"  # RUN/: rows recorded during training
PROBE_FILE = "probe_batch.safetensors"  # RUN/: the fixed probe batch every row was measured on


def _lines(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def append_rows(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows in one write (a reader sees whole steps); starts a fresh line if the file ends
    in a half-written one."""
    path = Path(path)
    text = _lines(rows)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                text = "\n" + text
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()


def write_rows(path: str | Path, rows: Iterable[dict]) -> None:
    """Replace the file's rows atomically (write aside, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_lines(rows), encoding="utf-8")
    os.replace(tmp, path)
