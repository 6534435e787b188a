"""Where documents come from: local .txt/.jsonl/.parquet files, directories, globs, or a
Hugging Face dataset (`hf:NAME[:CONFIG][@SPLIT]`).

A source yields plain-text documents. `.txt` files hold one document per blank-line-separated
block (or one document per file); `.jsonl` and `.parquet` hold one document per record in
`text_field`. Every problem (missing path, unreadable or undecodable file, no documents) is a
`DataError` naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

SUFFIXES = (".txt", ".jsonl", ".parquet")
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
            raise DataError(f"{spec!r}: expected hf:NAME[:CONFIG][@SPLIT]")
        return cls(name, config or None, split or "train")


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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None


def _txt_documents(path: Path, txt_documents: str) -> Iterator[str]:
    text = _read_text(path)
    if txt_documents == "file":
        if text.strip():
            yield text.strip()
        return
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict) or text_field not in record:
            raise DataError(f"{path}:{lineno}: record has no {text_field!r} field (set data.text_field)")
        value = record[text_field]
        if not isinstance(value, str):
            raise DataError(f"{path}:{lineno}: field {text_field!r} is not a string")
        if value.strip():
            yield value


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[text_field])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: no column {text_field!r} (set data.text_field): {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None
    for value in table.column(text_field).to_pylist():
        if isinstance(value, str) and value.strip():
            yield value


def _hub_documents(ref: HubDataset, text_field: str) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(ref.name, ref.config, split=ref.split)
    except Exception as exc:  # network, missing dataset, bad split: all user-facing
        raise DataError(f"hf:{ref.name}: cannot load dataset ({type(exc).__name__}: {exc})") from None
    if text_field not in ds.column_names:
        raise DataError(f"hf:{ref.name}: no column {text_field!r} (columns: {', '.join(ds.column_names)})")
    for value in ds[text_field]:
        if isinstance(value, str) and value.strip():
            yield value


def iter_documents(source: Path | HubDataset, text_field: str = "text", txt_documents: str = "blank_line") -> Iterator[str]:
    """Documents of one file or hub dataset, in order."""
    if isinstance(source, HubDataset):
        yield from _hub_documents(source, text_field)
    elif source.suffix == ".txt":
        yield from _txt_documents(source, txt_documents)
    elif source.suffix == ".jsonl":
        yield from _jsonl_documents(source, text_field)
    else:
        yield from _parquet_documents(source, text_field)


def fingerprint(sources: list[Path | HubDataset]) -> str:
    """Content hash of the sources: file bytes for local files, name/config/split (and the
    `datasets` fingerprint once loaded) for hub datasets."""
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
