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
import os
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
            raise DataError(f"{spec!r}: a Hub dataset is hf:NAME[:CONFIG][@SPLIT], e.g. hf:roneneldan/TinyStories@validation")
        return cls(name, config or None, split or "train")


SPEC_FORMS = "a path, directory or glob of .txt/.jsonl/.parquet files, hf:NAME[:CONFIG][@SPLIT] or demo"


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


def _hub_documents(ref: HubDataset, text_field: str) -> Iterator[str]:
    """The dataset's documents; when the Hub cannot be reached, from the local cache only, so an
    offline machine gets one error at once instead of a minute of retries."""
    import datasets

    offline = not hub_reachable()
    if offline:
        go_offline()
    try:
        ds = datasets.load_dataset(ref.name, ref.config, split=ref.split)
    except Exception as exc:  # network, missing dataset, bad split: all user-facing
        if offline:
            raise DataError(f"hf:{ref.name}: the Hugging Face Hub cannot be reached and the dataset is not in "
                            "the local cache (download it once while online)") from None
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
