"""Digests of files: a full sha256, and one of sampled blocks that costs the same few MiB of reads
at any file size (for checks that run at every start: the token cache, the sources a run names)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLE_BLOCKS = 64  # blocks read: the first, the last, evenly spaced between
SAMPLE_BLOCK_BYTES = 1 << 16


def sampled_digest(path: Path, size: int, blocks: int = SAMPLE_BLOCKS, block_bytes: int = SAMPLE_BLOCK_BYTES) -> str:
    """sha256 of `blocks` blocks of the file, evenly spaced from its start to its end (the whole file
    when it is smaller than those blocks together)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= blocks * block_bytes:
            h.update(f.read())
        else:
            span = size - block_bytes
            for i in range(blocks):
                f.seek(span * i // (blocks - 1))
                h.update(f.read(block_bytes))
    return h.hexdigest()


def full_digest(path: Path) -> str:
    h = hashlib.sha256()  # hashlib.file_digest needs Python 3.11; the project supports 3.10
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
