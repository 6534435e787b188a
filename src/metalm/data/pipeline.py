"""From a `data` config section to a tokenizer and tokenized train/validation arrays.

Resolves sources (the `demo` set included), trains or loads the tokenizer, and tokenizes once into
the content-addressed cache. Everything here runs before a run directory is created, so bad data
fails fast and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..atomic import publish_dir
from ..errors import DataError
from ..tokenizer import load_tokenizer, train_tokenizer
from . import token_store
from .demo import resolve_corpus_specs
from .sources import HubDataset, fingerprint, iter_documents, resolve_files
from .token_store import TokenArray


def cache_root(configured: str | None = None) -> Path:
    root = configured or os.environ.get("METALM_CACHE") or Path.home() / ".cache" / "metalm"
    return Path(root).expanduser()


@dataclass
class Corpus:
    """Tokenizer plus tokenized training and validation token arrays."""

    tokenizer: PreTrainedTokenizerBase
    train: TokenArray
    validation: TokenArray
    info: dict  # sources, cache key, sizes: saved into the run directory


def resolve_specs(data_cfg, cache: Path) -> tuple[str | list[str], str | list[str] | None, bool]:
    """(train spec, validation spec, is_demo) with `demo` expanded to the generated demo set."""
    return resolve_corpus_specs(data_cfg.train, data_cfg.validation, cache)


def read_documents(sources: list[Path | HubDataset], data_cfg, what: str) -> list[str]:
    docs = [d for src in sources for d in iter_documents(src, data_cfg.text_field, data_cfg.txt_documents)]
    if not docs:
        names = ", ".join(str(s) for s in sources[:3]) + (" …" if len(sources) > 3 else "")
        raise DataError(f"data.{what}: no documents in {names} (empty or whitespace only)")
    return docs


def tokenizer_sample(docs: list[str], max_bytes: int) -> list[str]:
    """Every k-th document, k chosen so the sample holds at most about `max_bytes` characters:
    what a tokenizer is trained on."""
    total = sum(len(d) for d in docs)
    step = max(1, -(-total // max_bytes))
    return docs[::step]


def obtain_tokenizer(data_cfg, train_docs_fn, train_fp: str, cache: Path) -> PreTrainedTokenizerBase:
    """Load the configured tokenizer, or train a byte-level BPE on the training corpus (cached)."""
    if data_cfg.tokenizer:
        return load_tokenizer(data_cfg.tokenizer)
    key = hashlib.sha256(
        json.dumps([1, train_fp, data_cfg.vocab_size, data_cfg.tokenizer_sample_bytes]).encode()
    ).hexdigest()[:24]
    directory = cache / "tokenizers" / key
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    tok = train_tokenizer(tokenizer_sample(train_docs_fn(), data_cfg.tokenizer_sample_bytes), data_cfg.vocab_size)
    with publish_dir(directory, replace=False) as tmp:  # if another process published first, keep its copy
        tok.save_pretrained(tmp)
    return load_tokenizer(directory)


def prepare_corpus(data_cfg, cache_dir: str | None = None, tokenizer: PreTrainedTokenizerBase | None = None) -> Corpus:
    """Tokenizer and token arrays for a `data` section (cached by content hash)."""
    cache = cache_root(cache_dir)
    train_spec, val_spec, demo = resolve_specs(data_cfg, cache)
    train_sources = resolve_files(train_spec)
    val_sources = resolve_files(val_spec) if val_spec is not None else None
    train_fp = fingerprint(train_sources)
    val_fp = fingerprint(val_sources) if val_sources else f"holdout:{data_cfg.val_fraction}"

    docs_cache: dict[str, list[str]] = {}

    def train_docs() -> list[str]:
        if "train" not in docs_cache:
            docs_cache["train"] = read_documents(train_sources, data_cfg, "train")
        return docs_cache["train"]

    if tokenizer is None:
        tokenizer = obtain_tokenizer(data_cfg, train_docs, train_fp, cache)
    key = hashlib.sha256(json.dumps(
        [token_store.FORMAT_VERSION, token_store.tokenizer_hash(tokenizer), train_fp, val_fp,
         data_cfg.text_field, data_cfg.txt_documents]).encode()).hexdigest()[:24]
    directory = cache / "tokens" / key
    loaded = token_store.load(directory)
    if loaded is None:
        train_tok = token_store.tokenize_documents(train_docs(), tokenizer)
        if val_sources:
            val_tok = token_store.tokenize_documents(read_documents(val_sources, data_cfg, "validation"), tokenizer)
        else:
            train_tok, val_tok = token_store.holdout_split(train_tok, data_cfg.val_fraction)
        dtype = train_tok[0].dtype
        arrays = {"train": token_store.concat(train_tok, dtype), "validation": token_store.concat(val_tok, dtype)}
        info = {"train": [str(s) for s in train_sources],
                "validation": [str(s) for s in val_sources] if val_sources else f"held out {data_cfg.val_fraction} of train documents",
                "demo": demo}
        token_store.save(arrays, info, directory)
        loaded = token_store.load(directory)
    arrays, info = loaded
    info = {**info, "cache": str(directory), "vocab_size": len(tokenizer)}
    if arrays["validation"].tokens.size == 0:
        raise DataError("data.validation: the validation set holds no tokens")
    return Corpus(tokenizer, arrays["train"], arrays["validation"], info)
