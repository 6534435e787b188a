"""Checksums of a checkpoint: `checksums.json` records the size and sha256 of every other file in a
checkpoint directory, so a damaged checkpoint is recognised (and an older one used) instead of
being loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHECKSUMS = "checksums.json"  # inside a checkpoint: size and sha256 of every other file


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces (`hashlib.file_digest` needs Python 3.11)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


def file_digests(directory: str | Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes": size, "sha256": hex digest}} of every file under `directory`."""
    directory = Path(directory)
    digests = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = _sha256(path)
        digests[path.relative_to(directory).as_posix()] = {"bytes": path.stat().st_size, "sha256": digest}
    return digests


def digest_mismatch(directory: str | Path, expected: dict[str, dict[str, Any]]) -> str | None:
    """What differs between the files under `directory` and `expected` (`file_digests`' form) — a
    missing file, a size, a checksum — or None when every listed file is intact."""
    directory = Path(directory)
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, {want.get('bytes')} were written"
    for name, want in expected.items():
        if _sha256(directory / name) != want.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint directory `path` cannot be trusted (a file missing, or its size or sha256
    differing from its `checksums.json`), or None. A checkpoint written before checksums existed
    has nothing to check against: None (its load may still fail)."""
    path = Path(path)
    if not (path / CHECKSUMS).is_file():
        return None
    try:
        expected = json.loads((path / CHECKSUMS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        expected = None
    if not isinstance(expected, dict):
        return f"{CHECKSUMS} is unreadable"
    try:
        return digest_mismatch(path, expected)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
