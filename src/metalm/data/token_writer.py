"""Append-only token files of one split, written incrementally and read back memory-mapped.

`<split>.bin` holds the tokens back to back (uint16/uint32); `<split>_docs.bin` holds int64
document boundaries: 0, then the end of every finished document. Both only grow, so a committed
size pair (tokens, documents) is a consistent prefix that an interrupted tokenization resumes from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_OFFSET = np.dtype(np.int64)


def token_paths(directory: Path, split: str) -> tuple[Path, Path]:
    return directory / f"{split}.bin", directory / f"{split}_docs.bin"


class SplitWriter:
    """Appends documents to a split's token and boundary files, from a committed prefix."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, tokens: int = 0, docs: int = 0):
        self.dtype = np.dtype(dtype)
        tok_path, doc_path = token_paths(directory, split)
        self.tokens_f = open(tok_path, "r+b" if tok_path.exists() else "w+b")
        self.docs_f = open(doc_path, "r+b" if doc_path.exists() else "w+b")
        self.truncate(tokens, docs)

    def truncate(self, tokens: int, docs: int) -> None:
        """Cut both files back to `tokens` tokens and `docs` finished documents."""
        self.tokens_f.truncate(tokens * self.dtype.itemsize)
        self.tokens_f.seek(0, os.SEEK_END)
        self.docs_f.truncate((docs + 1) * _OFFSET.itemsize)
        self.docs_f.seek(0)
        self.docs_f.write(np.zeros(1, _OFFSET).tobytes())  # the leading 0 (rewritten: same bytes)
        self.docs_f.seek(0, os.SEEK_END)
        self.n_tokens, self.n_docs = tokens, docs

    def write(self, tokens: np.ndarray, ends: np.ndarray) -> None:
        """Append `tokens`; `ends` are the ends (relative to `tokens`) of the documents finished here."""
        self.tokens_f.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        if len(ends):
            self.docs_f.write((np.asarray(ends, np.int64) + self.n_tokens).tobytes())
        self.n_tokens += int(tokens.size)
        self.n_docs += len(ends)

    def read(self, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) written so far (flushed first)."""
        self.tokens_f.flush()
        self.tokens_f.seek(start * self.dtype.itemsize)
        out = np.frombuffer(self.tokens_f.read((end - start) * self.dtype.itemsize), dtype=self.dtype)
        self.tokens_f.seek(0, os.SEEK_END)
        return out

    def doc_start(self, doc: int) -> int:
        """Where finished document `doc` starts."""
        self.docs_f.flush()
        self.docs_f.seek(doc * _OFFSET.itemsize)
        value = int(np.frombuffer(self.docs_f.read(_OFFSET.itemsize), _OFFSET)[0])
        self.docs_f.seek(0, os.SEEK_END)
        return value

    def set_doc_end(self, doc: int, end: int) -> None:
        """Rewrite where finished document `doc - 1` ends (boundary entry `doc`)."""
        self.docs_f.seek(doc * _OFFSET.itemsize)
        self.docs_f.write(np.asarray([end], _OFFSET).tobytes())
        self.docs_f.seek(0, os.SEEK_END)

    def sync(self) -> None:
        for f in (self.tokens_f, self.docs_f):
            f.flush()
            os.fsync(f.fileno())

    def state(self) -> dict:
        return {"tokens": self.n_tokens, "docs": self.n_docs}

    def close(self) -> None:
        self.tokens_f.close()
        self.docs_f.close()
