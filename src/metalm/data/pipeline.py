"""From a `data` config section to a tokenizer and tokenized train/validation arrays.

Resolves sources (the `demo` set included), tells text from token-id sources, trains or loads the
tokenizer, and tokenizes once into the content-addressed cache (`data.tokenization`). Everything
here runs before a run directory is created, so bad data fails fast and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ..atomic import publish_dir
from ..errors import DataError
from ..tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from . import encode, token_store
from .demo import resolve_corpus_specs
from .encode import encoder_for, resolve_num_proc
from .pretokenized import holds_tokens, require_tokenizer
from .sources import HubDataset, fingerprint, iter_documents, resolve_files, source_samples
from .token_store import TokenArray
from .tokenization import Phase, StoreBuilder


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


def read_documents(sources: list[Path | HubDataset], data_cfg, key: str) -> list[str]:
    """Every text document of `sources` in memory: for evaluation sets, which are small (`key`: the
    setting or flag that named them, for the message when they hold none)."""
    docs = [d for src in sources for d in iter_documents(src, data_cfg.text_field, data_cfg.txt_documents)]
    if not docs:
        names = ", ".join(str(s) for s in sources[:3]) + (" …" if len(sources) > 3 else "")
        raise DataError(f"{key}: no documents in {names} (empty or whitespace only)")
    return docs


def tokenizer_sample(documents: Callable[[], Iterable[str]], max_bytes: int, prefix: bool = False) -> list[str]:
    """What a tokenizer is trained on: every k-th document, k chosen so the sample holds at most
    about `max_bytes` characters (one pass counts, a second picks: the stream is never held whole);
    with `prefix` (a Hub stream, or a `data.max_tokens` budget), the first documents up to
    `max_bytes` characters instead."""
    if prefix:
        sample, chars = [], 0
        for doc in documents():
            if chars >= max_bytes:
                break
            sample.append(doc)
            chars += len(doc)
        return sample
    total = sum(len(d) for d in documents())
    step = max(1, -(-total // max_bytes))
    return [d for i, d in enumerate(documents()) if i % step == 0]


def obtain_tokenizer(data_cfg, text_documents: Callable[[], Iterable[str]], train_fp: str, cache: Path,
                     prefix: bool) -> PreTrainedTokenizerBase:
    """Load the configured tokenizer, or train a byte-level BPE on the training text (cached)."""
    if data_cfg.tokenizer:
        return load_tokenizer(data_cfg.tokenizer)
    parts = [1, train_fp, data_cfg.vocab_size, data_cfg.tokenizer_sample_bytes]
    if prefix:
        parts.append(["prefix", data_cfg.max_tokens])
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    directory = cache / "tokenizers" / key
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    sample = tokenizer_sample(text_documents, data_cfg.tokenizer_sample_bytes, prefix)
    if not sample:
        raise DataError("data.train: no documents to train a tokenizer on (the text sources are empty or "
                        "whitespace only)")
    tok = train_tokenizer(sample, data_cfg.vocab_size)
    with publish_dir(directory, replace=False) as tmp:  # if another process published first, keep its copy
        save_tokenizer(tok, tmp)
    return load_tokenizer(directory)


def prepare_corpus(data_cfg, cache_dir: str | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                   progress: bool = True, verify: bool = False) -> Corpus:
    """Tokenizer and memory-mapped token arrays for a `data` section (cached by content hash;
    tokenized, streamed and in parallel, on the first use). A cached entry is checked before use
    (sizes and sampled blocks; `verify`: every byte) and written again when damaged."""
    cache = cache_root(cache_dir)
    train_spec, val_spec, demo = resolve_specs(data_cfg, cache)
    train_sources = resolve_files(train_spec)
    val_sources = resolve_files(val_spec) if val_spec is not None else None
    train_tok = [holds_tokens(s, data_cfg) for s in train_sources]
    val_tok = [holds_tokens(s, data_cfg) for s in val_sources] if val_sources else []
    require_tokenizer([s for s, t in zip(train_sources + (val_sources or []), train_tok + val_tok) if t], data_cfg)
    train_fp = fingerprint(train_sources)
    val_fp = fingerprint(val_sources) if val_sources else f"holdout:{data_cfg.val_fraction}"

    def text_documents() -> Iterator[str]:
        for src, tokens in zip(train_sources, train_tok):
            if not tokens:
                yield from iter_documents(src, data_cfg.text_field, data_cfg.txt_documents)

    if tokenizer is None:
        prefix = data_cfg.max_tokens is not None or any(isinstance(s, HubDataset) for s in train_sources)
        tokenizer = obtain_tokenizer(data_cfg, text_documents, train_fp, cache, prefix)
    key = hashlib.sha256(json.dumps(
        [token_store.KEY_VERSION, token_store.tokenizer_hash(tokenizer), train_fp, val_fp,
         data_cfg.text_field, data_cfg.txt_documents, data_cfg.token_field, data_cfg.bin_dtype,
         data_cfg.max_tokens]).encode()).hexdigest()[:24]
    directory = cache / "tokens" / key
    loaded = token_store.load(directory, full=verify)
    if loaded is None:
        phases = [Phase("data.train", train_sources, train_tok, "train" if val_sources else None, data_cfg.max_tokens)]
        if val_sources:
            phases.append(Phase("data.validation", val_sources, val_tok, "validation"))
        info: dict = {"train": [str(s) for s in train_sources],
                      "validation": [str(s) for s in val_sources] if val_sources else f"held out {data_cfg.val_fraction} of train documents",
                      "demo": demo}
        processes = resolve_num_proc(data_cfg.num_proc)
        local_bytes = sum(s.stat().st_size for s in train_sources + (val_sources or []) if isinstance(s, Path))
        remote = any(isinstance(s, HubDataset) for s in train_sources + (val_sources or []))
        if not remote and local_bytes < encode.PARALLEL_MIN_BYTES:
            processes = 1
        builder = StoreBuilder(directory, phases, encoder_for(tokenizer, token_store.token_dtype(len(tokenizer))), len(tokenizer),
                               data_cfg, processes, progress)
        builder.build(lambda: token_store.load(directory, full=verify, warn=False) is not None, info)
        loaded = token_store.load(directory)
        if loaded is None:
            raise DataError(f"the token cache entry {directory} just written does not pass its own check; is the "
                            "cache's disk failing?")
    arrays, info = loaded
    samples = [{"split": split, "source": str(src), **sample}
               for split, srcs in (("data.train", train_sources), ("data.validation", val_sources or []))
               for src, sample in zip(srcs, source_samples(srcs))]
    info = {**info, "cache": str(directory), "key": key, "source_samples": samples, "vocab_size": len(tokenizer)}
    if arrays["validation"].tokens.size == 0:
        raise DataError("data.validation: the validation set holds no tokens")
    return Corpus(tokenizer, arrays["train"], arrays["validation"], info)


def data_changes(saved: dict, current: dict) -> str:
    """What differs between the data a run recorded (`saved`, its data.json) and `current` (a
    corpus' info): the sources whose size or sampled blocks changed, that appeared or went; else
    the content elsewhere in them, or the tokenization."""
    def by_source(info: dict) -> dict[tuple[str, str], tuple]:
        return {(d["split"], d["source"]): tuple(sorted((k, v) for k, v in d.items() if k not in ("split", "source")))
                for d in info.get("source_samples") or [] if isinstance(d, dict) and {"split", "source"} <= d.keys()}

    old, new = by_source(saved), by_source(current)
    if not old:
        return "the data's cache key differs"
    changes = [f"{split} {source} changed" for (split, source), sample in new.items()
               if (split, source) in old and old[split, source] != sample]
    changes += [f"{split} {source} is new" for split, source in new.keys() - old.keys()]
    changes += [f"{split} {source} is no longer read" for split, source in old.keys() - new.keys()]
    return "; ".join(sorted(changes)) or "the sources' content changed, or they are tokenized differently"
