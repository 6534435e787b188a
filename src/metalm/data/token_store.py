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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..errors import DataError
from .token_writer import token_paths

FORMAT_VERSION = 2


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


def concat(docs: list[np.ndarray], dtype: np.dtype) -> TokenArray:
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(docs).astype(dtype, copy=False) if docs else np.zeros(0, dtype=dtype)
    return TokenArray(tokens, offsets)


def load(directory: Path) -> tuple[dict[str, TokenArray], dict] | None:
    """Memory-map cached token arrays, or None when the cache entry does not exist (or is of
    another format: it is then written again)."""
    info_path = directory / "info.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        return None
    if info.get("format") != FORMAT_VERSION:
        return None
    dtype = np.dtype(info["dtype"])
    arrays = {}
    for name in info["splits"]:
        tok_path, doc_path = token_paths(directory, name)
        tokens = np.memmap(tok_path, dtype=dtype, mode="r") if tok_path.stat().st_size else np.zeros(0, dtype)
        arrays[name] = TokenArray(tokens, np.memmap(doc_path, dtype=np.int64, mode="r"))
    return arrays, info
