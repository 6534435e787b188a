"""Tokenized corpora as memory-mapped token arrays, cached by content hash.

A corpus is tokenized once: documents are concatenated, each followed by the EOS token, into a
flat `uint16`/`uint32` array (`tokens`), with `doc_offsets[d]:doc_offsets[d+1]` the span of
document d. Arrays live in the cache under a key that hashes the tokenizer and the source bytes,
so re-runs (and other runs on the same data) skip tokenization entirely. `data.tokenization`
writes an entry (streamed, in parallel); this module reads one, memory-mapped: nothing is loaded
whole, however large.

Format 2: document boundaries are a raw int64 file (`<split>_docs.bin`, written
incrementally) instead of a `.npy`; the tokens themselves are the same as format 1 wrote, so an
entry of format 1 is simply written again once.

Format 3 (same cache key as format 2, so a format-2 entry is rewritten in place once) records what
every file should be: its size, a digest of sampled blocks and a full digest (`checks` in info.json).
Each open checks the sizes and the sampled blocks (a few MiB read, however large the entry); `metalm
data --verify` checks the full digests. A damaged entry is reported and written again, never read
(DESIGN 2.9, Integrity).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from transformers import PreTrainedTokenizerBase

from ..errors import DataError
from . import digest
from .token_writer import token_paths

log = logging.getLogger("metalm.data")

FORMAT_VERSION = 3
KEY_VERSION = 2  # in the cache key: entries of formats 2 and 3 share it (a format-2 entry is rewritten in place)
SAMPLE_BLOCKS = digest.SAMPLE_BLOCKS  # blocks of each file read by the check at open (tests lower them)
SAMPLE_BLOCK_BYTES = digest.SAMPLE_BLOCK_BYTES


@dataclass
class TokenArray:
    """A tokenized corpus: flat token ids plus document boundaries."""

    tokens: np.ndarray  # 1-D uint16/uint32 (memory-mapped when loaded from the cache)
    doc_offsets: np.ndarray  # int64, len n_docs + 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def __len__(self) -> int:
        return len(self.tokens)


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise DataError("the tokenizer must be a fast (Rust) tokenizer")
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """The store's element type: uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def tokenize_documents(docs: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> list[np.ndarray]:
    """Token ids of each document followed by EOS, in memory (evaluation sets; a training corpus is
    streamed by `data.tokenization` through the same `Encoder`)."""
    from .encode import encoder_for, text_batches

    encoder = encoder_for(tokenizer, token_dtype(len(tokenizer)))
    out: list[np.ndarray] = []
    for batch in text_batches(docs, 0):
        encoded = encoder(batch)
        out += np.split(encoded.tokens, np.cumsum(encoded.lengths)[:-1])
    return out


def concat(docs: list[np.ndarray], dtype: DTypeLike) -> TokenArray:
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(docs).astype(dtype, copy=False) if docs else np.zeros(0, dtype=dtype)
    return TokenArray(tokens, offsets)


def _sampled(path: Path, size: int) -> str:
    return digest.sampled_digest(path, size, SAMPLE_BLOCKS, SAMPLE_BLOCK_BYTES)


def entry_checks(directory: Path, splits: Iterable[str]) -> dict[str, dict]:
    """{file name: {"bytes", "sample", "sha256"}} of every token and boundary file of `splits`."""
    checks = {}
    for split in splits:
        for path in token_paths(directory, split):
            size = path.stat().st_size
            checks[path.name] = {"bytes": size, "sample": _sampled(path, size), "sha256": digest.full_digest(path)}
    return checks


def entry_problem(directory: Path, info: dict, full: bool = False) -> str | None:
    """What is wrong with a cache entry (a file missing, of another size than recorded or than its
    token and document counts imply, or whose sampled blocks — with `full`, whose bytes — differ
    from when it was written), or None."""
    checks = info.get("checks")
    try:
        dtype = np.dtype(info["dtype"])
        splits = info["splits"]
        if not isinstance(checks, dict):
            return "info.json records no checks"
        for split, figures in splits.items():
            expected = {f"{split}.bin": figures["tokens"] * dtype.itemsize,
                        f"{split}_docs.bin": (figures["documents"] + 1) * 8}
            for name, size in expected.items():
                path, check = directory / name, checks[name]
                if not path.is_file():
                    return f"{name} is missing"
                actual = path.stat().st_size
                if actual != size or actual != check["bytes"]:
                    return f"{name} holds {actual:,} bytes, {size:,} recorded"
                if _sampled(path, actual) != check["sample"]:
                    return f"{name}: its content differs from when it was written (sampled blocks)"
                if full and digest.full_digest(path) != check["sha256"]:
                    return f"{name}: its content differs from when it was written (full digest)"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"info.json is incomplete ({type(exc).__name__}: {exc})"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


def load(directory: Path, full: bool = False, warn: bool = True) -> tuple[dict[str, TokenArray], dict] | None:
    """Memory-map cached token arrays after checking them (`entry_problem`; `full`: every byte), or
    None when the cache entry does not exist, is of another format or is damaged (it is then
    written again; `warn`: a damaged entry is reported, naming what is wrong)."""
    info_path = directory / "info.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        info = None
    if not isinstance(info, dict):
        if warn:
            log.warning("token cache entry %s is damaged (info.json is unreadable); tokenizing again", directory)
        return None
    if info.get("format") != FORMAT_VERSION:
        return None
    problem = entry_problem(directory, info, full)
    if problem is not None:
        if warn:
            log.warning("token cache entry %s is damaged (%s); tokenizing again", directory, problem)
        return None
    dtype = np.dtype(info["dtype"])
    arrays = {}
    for name in info["splits"]:
        tok_path, doc_path = token_paths(directory, name)
        tokens = np.memmap(tok_path, dtype=dtype, mode="r") if tok_path.stat().st_size else np.zeros(0, dtype)
        arrays[name] = TokenArray(tokens, np.memmap(doc_path, dtype=np.int64, mode="r"))
    return arrays, info
