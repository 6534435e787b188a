"""Text → token ids, in parallel: batches of documents are encoded by a pool of `data.num_proc`
processes (default: all cores) and come back in order, with a bounded number in flight, so memory
stays flat however large the corpus.

Each document becomes its token ids followed by the EOS token (no BOS: packing makes EOS the
separator). Small jobs (`num_proc` 1, or less text than `PARALLEL_MIN_BYTES`) are encoded in the
calling process: starting workers would cost more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .doc_batch import DocBatch

PARALLEL_MIN_BYTES = 8 << 20
BATCH_CHARS = 1 << 20  # text per task sent to a worker
BATCH_DOCS = 4096


@dataclass
class TextBatch:
    """Consecutive text documents of one source, not yet encoded."""

    texts: list[str]
    source: int


def text_batches(documents: Iterable[str], source: int) -> Iterator[TextBatch]:
    """Documents grouped into batches of about `BATCH_CHARS` characters (deterministic: a resumed
    tokenization skips whole batches by count)."""
    batch: list[str] = []
    chars = 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield TextBatch(batch, source)
            batch, chars = [], 0
    if batch:
        yield TextBatch(batch, source)


class Encoder:
    """A fast tokenizer's encode, returning `DocBatch`es in the store's dtype."""

    def __init__(self, tokenizer_json: str, eos: int, dtype: str):
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer_json)
        self.eos = eos
        self.dtype = np.dtype(dtype)

    def __call__(self, batch: TextBatch) -> DocBatch:
        encodings = self.backend.encode_batch(batch.texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) + 1 for e in encodings), np.int64, len(encodings))
        tokens = np.empty(int(lengths.sum()), dtype=self.dtype)
        pos = 0
        for enc, n in zip(encodings, lengths.tolist()):
            tokens[pos:pos + n - 1] = enc.ids
            tokens[pos + n - 1] = self.eos
            pos += n
        nbytes = sum(len(t.encode("utf-8")) for t in batch.texts)
        return DocBatch(tokens, lengths, batch.source, text_bytes=nbytes)


_worker_encoder: Encoder | None = None


def _init_worker(tokenizer_json: str, eos: int, dtype: str) -> None:
    global _worker_encoder
    _worker_encoder = Encoder(tokenizer_json, eos, dtype)


def _encode_in_worker(batch: TextBatch) -> DocBatch:
    assert _worker_encoder is not None  # set by _init_worker, the pool's initializer
    return _worker_encoder(batch)


def encoder_for(tokenizer, dtype: np.dtype) -> Encoder:
    return Encoder(tokenizer.backend_tokenizer.to_str(), int(tokenizer.eos_token_id), np.dtype(dtype).name)


def resolve_num_proc(num_proc: int | None) -> int:
    """`data.num_proc`, or every core this process may run on."""
    if num_proc:
        return num_proc
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encode_stream(units: Iterable[TextBatch | DocBatch], encoder: Encoder, processes: int) -> Iterator[DocBatch]:
    """`DocBatch`es in the order of `units`: text batches encoded (by `processes` workers when > 1),
    token batches passed through. At most 2 × processes batches are in flight."""
    if processes <= 1:
        for unit in units:
            yield encoder(unit) if isinstance(unit, TextBatch) else unit
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # each worker encodes on one thread; silences the fork warning
    try:
        pool = multiprocessing.get_context(method).Pool(
            processes, initializer=_init_worker,
            initargs=(encoder.backend.to_str(), encoder.eos, encoder.dtype.name))
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    with pool:  # leaving (also early: a token budget reached, an error) terminates the workers
        pending: deque = deque()
        for unit in units:
            pending.append(pool.apply_async(_encode_in_worker, (unit,)) if isinstance(unit, TextBatch) else unit)
            while len(pending) > 2 * processes:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


def _result(item) -> DocBatch:
    return item if isinstance(item, DocBatch) else item.get()
