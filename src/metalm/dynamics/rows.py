"""Reading and writing dynamics rows (JSON lines), robust to a run killed mid-write."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def load_rows(path: str | Path) -> list[dict]:
    """All rows of a JSON-lines file; a missing file gives [], an undecodable line (a half-written
    last line of a killed run) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


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


def drop_rows_after(path: str | Path, step: int) -> int:
    """Remove rows recorded after `step` (a resumed run recomputes them); returns how many."""
    rows = load_rows(path)
    kept = [row for row in rows if row.get("step", 0) <= step]
    if len(kept) != len(rows):
        write_rows(path, kept)
    return len(rows) - len(kept)
