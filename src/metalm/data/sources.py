"""Where documents come from: local .txt/.jsonl/.parquet/.arrow/.bin/.npy files, directories,
globs, or a Hugging Face dataset (`hf:NAME[:CONFIG][@SPLIT]`, streamed).

Text: `.txt` files hold one document per blank-line-separated block (or one document per file);
`.jsonl`, `.parquet` and `.arrow` records hold one document each in `text_field`. Records that hold
token ids instead, and flat `.bin`/`.npy` token arrays, are read by `data.pretokenized`. Everything is
streamed: no file is ever read whole into memory. Every problem (missing path, unreadable or
undecodable file, no documents) is a `DataError` naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .digest import full_digest, sampled_digest

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

TEXT_SUFFIXES = (".txt",)
RECORD_SUFFIXES = (".jsonl", ".parquet", ".arrow")  # text or token-id records
ARRAY_SUFFIXES = (".bin", ".npy")  # flat token arrays
SUFFIXES = TEXT_SUFFIXES + RECORD_SUFFIXES + ARRAY_SUFFIXES
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class HubDataset:
    """A Hugging Face dataset reference parsed from `hf:NAME[:CONFIG][@SPLIT]`."""

    name: str
    config: str | None
    split: str

    @classmethod
    def parse(cls, spec: str) -> "HubDataset":
        body = spec[len(HF_PREFIX):]
        body, _, split = body.partition("@")
        name, _, config = body.partition(":")
        if not name:
            raise DataError(f"{spec!r}: a Hub dataset is hf:NAME[:CONFIG][@SPLIT], e.g. hf:roneneldan/TinyStories@validation")
        return cls(name, config or None, split or "train")


SPEC_FORMS = "a path, directory or glob of .txt/.jsonl/.parquet/.arrow/.bin/.npy files, hf:NAME[:CONFIG][@SPLIT] or demo"


def check_spec(item) -> None:
    """ValueError saying what a source spec looks like, for anything that is not one (config
    validation turns it into an error naming the key)."""
    if isinstance(item, dict) and len(item) == 1 and None in item.values():
        item = f"{next(iter(item))}:"  # `data.train=hf:` reads as the mapping {hf: null}
    if not isinstance(item, str):
        shown = "a mapping (quote a value that ends with ':')" if isinstance(item, dict) else repr(item)
        raise ValueError(f"expected {SPEC_FORMS}; got {shown}")
    if not item.strip():
        raise ValueError(f"expected {SPEC_FORMS}; got an empty string")
    if item.startswith(HF_PREFIX):
        try:
            HubDataset.parse(item)
        except DataError as exc:
            raise ValueError(str(exc)) from None


def resolve_files(spec: str | list[str]) -> list[Path | HubDataset]:
    """Expand a source spec (path, directory, glob, `hf:` name, or a list of them) to a sorted,
    de-duplicated list of files / hub datasets."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise DataError("no data source given")
    out: list[Path | HubDataset] = []
    for item in specs:
        if item.startswith(HF_PREFIX):
            out.append(HubDataset.parse(item))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not found:
                raise DataError(f"{item}: directory holds no {'/'.join(SUFFIXES)} files")
        elif path.is_file():
            found = [path]
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"{item}: glob matches no file")
        else:
            raise DataError(f"data file not found: {item}")
        for p in found:
            if p.suffix not in SUFFIXES:
                raise DataError(f"{p}: unsupported file type {p.suffix or '(none)'}; use {', '.join(SUFFIXES)}")
        out += [p for p in found if p not in out]
    return out


_CHUNK_CHARS = 1 << 22


def _bad_utf8_offset(path: Path) -> int:
    """Byte offset of the first invalid UTF-8 sequence in `path` (for the error message)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start - len(decoder.getstate()[0])
            offset += len(chunk)
    return offset


def _text_chunks(path: Path) -> Iterator[str]:
    """The file's text in pieces of whole lines (universal newlines, as `Path.read_text`), so a file
    of any size is read in bounded memory."""
    try:
        with open(path, encoding="utf-8") as f:
            carry = ""
            for chunk in iter(lambda: f.read(_CHUNK_CHARS), ""):
                chunk = carry + chunk
                cut = chunk.rfind("\n") + 1
                if cut == 0:
                    carry = chunk
                    continue
                carry = chunk[cut:]
                yield chunk[:cut]
            if carry:
                yield carry
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid UTF-8 text (byte {_bad_utf8_offset(path)})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def _lines(path: Path) -> Iterator[str]:
    """The file's lines as `str.splitlines` cuts them (chunks end at a newline, so no line is split)."""
    for chunk in _text_chunks(path):
        yield from chunk.splitlines()


def _txt_documents(path: Path, txt_documents: str) -> Iterator[str]:
    if txt_documents == "file":
        text = "".join(_text_chunks(path)).strip()
        if text:
            yield text
        return
    block: list[str] = []
    for line in _lines(path):
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSON-lines file, streamed; a line that is not a JSON object is a
    DataError naming the file and line."""
    for lineno, line in enumerate(_json_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: a record is a JSON object, not {type(record).__name__}")
        yield lineno, record


def _json_lines(path: Path) -> Iterator[str]:
    """JSON-lines are separated by newlines only (a U+2028 inside a string is text)."""
    for chunk in _text_chunks(path):
        yield from chunk.split("\n")[:-1] if chunk.endswith("\n") else chunk.split("\n")


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    for lineno, record in jsonl_records(path):
        if text_field not in record:
            raise DataError(f"{path}:{lineno}: record has no {text_field!r} field (set data.text_field)")
        value = record[text_field]
        if not isinstance(value, str):
            raise DataError(f"{path}:{lineno}: field {text_field!r} is not a string")
        if value.strip():
            yield value


def _open_table(path: Path) -> tuple[list[str], pq.ParquetFile | pa.ipc.RecordBatchFileReader
                                                 | pa.ipc.RecordBatchStreamReader]:
    """(column names, reader) of a .parquet file or an .arrow file (Arrow IPC file or stream, as
    `datasets` saves them); a DataError naming the file when it is neither."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix == ".parquet":
            reader = pq.ParquetFile(path)
            return list(reader.schema_arrow.names), reader
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_file(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_stream(source)
        return list(reader.schema.names), reader
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable {path.suffix[1:]} file: {exc}") from None


def table_columns(path: Path) -> list[str]:
    """Column names of a .parquet / .arrow file."""
    return _open_table(path)[0]


def table_batches(path: Path, column: str, what: str) -> Iterator:
    """One column of a .parquet / .arrow file, a row group / record batch at a time (pyarrow arrays)."""
    import pyarrow as pa

    names, reader = _open_table(path)
    if column not in names:
        raise DataError(f"{path}: no column {column!r} (set {what}; columns: {', '.join(names)})")
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    elif isinstance(reader, pa.ipc.RecordBatchStreamReader):
        batches = iter(reader)
    else:
        batches = reader.iter_batches(batch_size=1024, columns=[column])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:  # a damaged page: "Couldn't deserialize thrift", "Corrupt snappy"
            cause = " ".join(str(exc).split())[:200]
            raise DataError(f"{path}: cannot be read, the file is damaged ({cause})") from None
        yield batch.column(column)


def _table_documents(path: Path, text_field: str) -> Iterator[str]:
    for column in table_batches(path, text_field, "data.text_field"):
        for value in column.to_pylist():
            if isinstance(value, str) and value.strip():
                yield value


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False at once when offline mode is set)."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def go_offline() -> None:
    """Hugging Face libraries read only their local caches from now on (no requests, no retries)."""
    import datasets
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True


def open_hub_dataset(ref: HubDataset):
    """The dataset as an iterable: streamed from the Hub (nothing is downloaded whole), or, when the
    Hub cannot be reached, read memory-mapped from the local cache, so an offline machine gets one
    error at once instead of a minute of retries."""
    import datasets

    offline = not hub_reachable()
    if offline:
        go_offline()
    try:
        return datasets.load_dataset(ref.name, ref.config, split=ref.split, streaming=not offline)
    except Exception as exc:  # network, missing dataset, bad split: all user-facing
        if offline:
            raise DataError(f"hf:{ref.name}: the Hugging Face Hub cannot be reached and the dataset is not in "
                            "the local cache (download it once while online)") from None
        raise DataError(f"hf:{ref.name}: cannot load dataset ({type(exc).__name__}: {exc})") from None


def hub_columns(ds) -> list[str]:
    """Column names of a (possibly streamed) dataset; a stream without metadata is peeked at."""
    names = getattr(ds, "column_names", None)
    if names:
        return list(names)
    first = next(iter(ds), None)
    return list(first) if isinstance(first, dict) else []


def hub_batches(ref: HubDataset, ds, column: str, what: str) -> Iterator[list]:
    """Lists of one column's values, a thousand records at a time."""
    names = hub_columns(ds)
    if column not in names:
        raise DataError(f"hf:{ref.name}: no column {column!r} (set {what}; columns: {', '.join(names)})")
    try:
        for batch in ds.iter(batch_size=1000):
            yield batch[column]
    except DataError:
        raise
    except Exception as exc:  # a dropped connection mid-stream
        raise DataError(f"hf:{ref.name}: reading the dataset failed ({type(exc).__name__}: {exc})") from None


def _hub_documents(ref: HubDataset, text_field: str) -> Iterator[str]:
    ds = open_hub_dataset(ref)
    for values in hub_batches(ref, ds, text_field, "data.text_field"):
        for value in values:
            if isinstance(value, str) and value.strip():
                yield value


def iter_documents(source: Path | HubDataset, text_field: str = "text", txt_documents: str = "blank_line") -> Iterator[str]:
    """Text documents of one file or hub dataset, in order, streamed."""
    if isinstance(source, HubDataset):
        yield from _hub_documents(source, text_field)
    elif source.suffix == ".txt":
        yield from _txt_documents(source, txt_documents)
    elif source.suffix == ".jsonl":
        yield from _jsonl_documents(source, text_field)
    elif source.suffix in (".parquet", ".arrow"):
        yield from _table_documents(source, text_field)
    else:
        raise DataError(f"{source}: a {source.suffix} file holds token ids, not text")


def fingerprint(sources: list[Path | HubDataset]) -> str:
    """Content hash of the sources: file bytes for local files, name/config/split for hub datasets."""
    h = hashlib.sha256()
    for src in sources:
        if isinstance(src, HubDataset):
            h.update(f"hf:{src.name}:{src.config}@{src.split}".encode())
            continue
        h.update(src.suffix.encode())
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def source_samples(sources: list[Path | HubDataset]) -> list[dict]:
    """Each local source's size and a digest of 16 sampled 4 KiB blocks (64 KiB read whatever its
    size): recorded with a run, they name the source that changed when the run is resumed on other
    data (the cache key, over every byte, is what refuses it)."""
    out = []
    for src in sources:
        if isinstance(src, Path):
            size = src.stat().st_size
            out.append({"bytes": size, "sample": sampled_digest(src, size, blocks=16, block_bytes=4096)})
        else:
            out.append({"hub": f"{src.name}:{src.config}@{src.split}"})
    return out


def content_digest(specs: list[str]) -> str:
    """sha256 of the content that `specs` name — files, globs, directories (every file under them,
    by relative path) — and of the specs themselves (a Hub dataset is its name): what an evaluation
    result is reused on, so an edited held-out file is evaluated again."""
    h = hashlib.sha256()
    for spec in specs:
        h.update(spec.encode() + b"\0")
        if spec.startswith(HF_PREFIX):
            continue
        root = Path(spec)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else \
            [f for f in resolve_files(spec) if isinstance(f, Path)]
        for f in files:
            h.update(str(f.relative_to(root) if root.is_dir() else f).encode() + b"\0")
            h.update(bytes.fromhex(full_digest(f)))
    return h.hexdigest()
