"""Sources that already hold token ids: read as tokens, never tokenized again (DESIGN 2.9).

- Records (`.parquet`, `.arrow`, `.jsonl`, a Hub dataset) with a `data.token_field` column (default
  `input_ids`, as the paper's data is distributed) hold one document per record.
- Flat token arrays: `.npy` (1-D: one stream; 2-D: one record per row) and raw `.bin` files of
  `data.bin_dtype` (nanoGPT's layout): a 1-D stream is cut into documents after each
  end-of-document (EOS) token.

The rule for document ends: every record, and the end of every flat array, ends with the
tokenizer's EOS token; one is appended where it is missing (counted as `eod_added` in the data
description), so the stored token count is the file's count plus those. `data.tokenizer` is
required: it fixes the vocabulary (ids outside it are an error naming the file) and the mask token
SMLMT needs (added when missing). Which sources are token sources: `.bin`/`.npy` always; record
files when they have the token column (else their `data.text_field` is read as text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .doc_batch import DocBatch, flat_with_eod
from .sources import (ARRAY_SUFFIXES, HubDataset, hub_batches, hub_columns, jsonl_records, open_hub_dataset,
                      table_batches, table_columns)
from .token_store import token_dtype

ARRAY_CHUNK = 1 << 22  # tokens of a flat array read at a time
_RECORDS_PER_BATCH = 1024


def holds_tokens(source: Path | HubDataset, data_cfg) -> bool:
    """Whether a source is read as token ids (see the module docstring for the rule)."""
    field, text = data_cfg.token_field, data_cfg.text_field
    if isinstance(source, HubDataset):
        columns = hub_columns(open_hub_dataset(source))
    elif source.suffix in ARRAY_SUFFIXES:
        return True
    elif source.suffix in (".parquet", ".arrow"):
        columns = table_columns(source)
    elif source.suffix == ".jsonl":
        first = next(jsonl_records(source), None)
        columns = list(first[1]) if first else []
    else:
        return False
    if field in columns:
        return True
    if text in columns or not columns:
        return False
    name = f"hf:{source.name}" if isinstance(source, HubDataset) else str(source)
    raise DataError(f"{name}: no column {text!r} (text) or {field!r} (token ids); set data.text_field or "
                    f"data.token_field (columns: {', '.join(columns)})")


def require_tokenizer(token_sources: list, data_cfg) -> None:
    if token_sources and not data_cfg.tokenizer:
        raise ConfigError(f"data.tokenizer: {token_sources[0]} holds token ids; name the tokenizer they were made "
                          "with (a local directory or Hub name): it fixes the vocabulary and the mask token")


def _check_ids(values: np.ndarray, vocab: int, where: str, first_record: int | None = None,
               lengths: np.ndarray | None = None, offset: int = 0) -> None:
    """DataError naming the file (and record, or position + `offset` in the file) when an id lies
    outside [0, vocab)."""
    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi < vocab:
        return
    bad = int(np.flatnonzero((values < 0) | (values >= vocab))[0])
    at = f"position {offset + bad}"
    if lengths is not None and first_record is not None:
        record = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
        at = f"record {first_record + record}"
    raise DataError(f"{where}: token id {int(values[bad])} at {at} is outside the tokenizer's vocabulary "
                    f"(ids 0..{vocab - 1}); is data.tokenizer the tokenizer this data was made with?")


def _list_column(column, where: str, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, lengths) of a pyarrow list-of-integers column (nulls count as empty)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or not pa.types.is_integer(column.type.value_type):
        raise DataError(f"{where}: column {field!r} is {column.type}, not a list of integer token ids")
    column = column.fill_null([]) if column.null_count else column
    if pa.types.is_fixed_size_list(column.type):
        lengths = np.full(len(column), column.type.list_size, np.int64)
        values = column.flatten().to_numpy(zero_copy_only=False)
    else:
        offsets = column.offsets.to_numpy()
        lengths = np.diff(offsets).astype(np.int64)
        values = column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_numpy(zero_copy_only=False)
    return values, lengths


def _records_batch(values: np.ndarray, lengths: np.ndarray, where: str, first_record: int, vocab: int, eod: int,
                   dtype: np.dtype, source: int) -> DocBatch:
    _check_ids(values, vocab, where, first_record, lengths)
    keep = lengths > 0
    if not keep.all():
        lengths = lengths[keep]
    ends = np.cumsum(lengths)
    missing = values[ends - 1] != eod if values.size else np.zeros(0, bool)
    tokens, lengths, added = flat_with_eod(values, lengths, missing, eod, dtype)
    return DocBatch(tokens, lengths, source, eod_added=added)


def _table_batches(path: Path, data_cfg, vocab: int, eod: int, dtype, source: int) -> Iterator[DocBatch]:
    first = 0
    for column in table_batches(path, data_cfg.token_field, "data.token_field"):
        values, lengths = _list_column(column, str(path), data_cfg.token_field)
        yield _records_batch(values, lengths, str(path), first, vocab, eod, dtype, source)
        first += len(lengths)


def _jsonl_batches(path: Path, data_cfg, vocab: int, eod: int, dtype, source: int) -> Iterator[DocBatch]:
    field = data_cfg.token_field
    pieces: list[np.ndarray] = []
    first = 0
    for lineno, record in jsonl_records(path):
        ids = record.get(field)
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            missing = "has no" if ids is None else "has a non-list-of-integers"
            raise DataError(f"{path}:{lineno}: record {missing} {field!r} field (token ids; set data.token_field)")
        try:
            piece = np.asarray(ids, dtype=np.int64)
        except OverflowError:  # an id beyond 64 bits is outside any vocabulary
            bad = next(i for i in ids if abs(i) >= 1 << 62)
            raise DataError(f"{path}:{lineno}: token id {bad} is outside the tokenizer's vocabulary "
                            f"(ids 0..{vocab - 1}); is data.tokenizer the tokenizer this data was made with?") from None
        _check_ids(piece, vocab, f"{path}:{lineno}")  # here, to name the line
        pieces.append(piece)
        if len(pieces) == _RECORDS_PER_BATCH:
            yield _pieces_batch(pieces, str(path), first, vocab, eod, dtype, source)
            first += len(pieces)
            pieces = []
    if pieces:
        yield _pieces_batch(pieces, str(path), first, vocab, eod, dtype, source)


def _pieces_batch(pieces: list[np.ndarray], where: str, first: int, vocab: int, eod: int, dtype,
                  source: int) -> DocBatch:
    """Records given as separate arrays, as `_records_batch` takes them (one flat array + lengths)."""
    lengths = np.fromiter((p.size for p in pieces), np.int64, len(pieces))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return _records_batch(flat, lengths, where, first, vocab, eod, dtype, source)


def _hub_token_batches(ref: HubDataset, data_cfg, vocab: int, eod: int, dtype, source: int) -> Iterator[DocBatch]:
    first = 0
    where = f"hf:{ref.name}"
    for values in hub_batches(ref, open_hub_dataset(ref), data_cfg.token_field, "data.token_field"):
        pieces = [np.asarray(v if v is not None else [], dtype=np.int64) for v in values]
        yield _pieces_batch(pieces, where, first, vocab, eod, dtype, source)
        first += len(pieces)


def open_array(path: Path, data_cfg, vocab: int) -> np.ndarray:
    """A flat token file memory-mapped (1-D, or 2-D rows for .npy), checked for shape and dtype."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy array: {exc}") from None
        if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{path}: a token array is a 1-D or 2-D array of integers, not {arr.ndim}-D {arr.dtype}")
        return arr
    name = data_cfg.bin_dtype
    dtype = token_dtype(vocab) if name == "auto" else np.dtype(name)
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {dtype} tokens (set data.bin_dtype)")
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)


def _array_batches(path: Path, data_cfg, vocab: int, eod: int, dtype, source: int) -> Iterator[DocBatch]:
    arr = open_array(path, data_cfg, vocab)
    if arr.ndim == 2:  # one record per row
        rows = max(1, ARRAY_CHUNK // max(1, arr.shape[1]))
        for start in range(0, arr.shape[0], rows):
            block = np.asarray(arr[start:start + rows], dtype=np.int64)
            lengths = np.full(block.shape[0], block.shape[1], np.int64)
            yield _records_batch(block.reshape(-1), lengths, str(path), start, vocab, eod, dtype, source)
        return
    n = arr.shape[0]
    for start in range(0, n, ARRAY_CHUNK):
        chunk = np.asarray(arr[start:start + ARRAY_CHUNK])
        _check_ids(chunk, vocab, str(path), offset=start)
        last = start + chunk.size >= n
        ends = np.flatnonzero(chunk == eod) + 1
        if last and (ends.size == 0 or ends[-1] != chunk.size):  # the array's last document gets its EOS
            tokens = np.append(chunk.astype(dtype, copy=False), np.asarray(eod, dtype=dtype))
            ends = np.append(ends, tokens.size)
            added = 1
        else:
            tokens, added = chunk.astype(dtype, copy=False), 0
        bounds = np.concatenate([[0], ends, [tokens.size]]) if (ends.size == 0 or ends[-1] != tokens.size) \
            else np.concatenate([[0], ends])
        lengths = np.diff(bounds).astype(np.int64)
        yield DocBatch(tokens, lengths, source, eod_added=added, continues=not last and tokens[-1] != eod)


def token_batches(source: Path | HubDataset, index: int, data_cfg, vocab: int, eod: int,
                  dtype: np.dtype) -> Iterator[DocBatch]:
    """The documents of a token source, in order, as `DocBatch`es in the store's `dtype`."""
    if isinstance(source, HubDataset):
        yield from _hub_token_batches(source, data_cfg, vocab, eod, dtype, index)
    elif source.suffix in ARRAY_SUFFIXES:
        yield from _array_batches(source, data_cfg, vocab, eod, dtype, index)
    elif source.suffix == ".jsonl":
        yield from _jsonl_batches(source, data_cfg, vocab, eod, dtype, index)
    else:
        yield from _table_batches(source, data_cfg, vocab, eod, dtype, index)
