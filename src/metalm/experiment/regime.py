"""The regime a comparison is read in (DESIGN 2.6): the validation set's unigram cross-entropy and
whether a run has learned more than token frequencies.

A model that predicts every token by its training frequency reaches the unigram cross-entropy; a
run that ends less than `UNIGRAM_MARGIN` nats below it is at the *unigram stage*, and nothing but
"not yet learning" is concluded from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..data import token_store
from ..run_dir import RunDir

UNIGRAM_MARGIN = 0.5  # nats/token below the unigram cross-entropy a run must end to be "learning"
UNIGRAM_STAGE, LEARNING = "unigram stage", "learning"


CHUNK = 1 << 24  # tokens counted at a time: a memory-mapped corpus is never loaded whole


def token_counts(tokens: np.ndarray, size: int) -> np.ndarray:
    """How often each id occurs in `tokens` (ids ≥ `size` widen the result), chunk by chunk."""
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(tokens), CHUNK):
        part = np.bincount(np.asarray(tokens[start:start + CHUNK]), minlength=len(counts))
        if len(part) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(part) - len(counts), dtype=np.int64)])
        counts += part
    return counts


def unigram_ce(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of every validation token under the training set's token
    frequencies with add-one smoothing: p(t) = (count(t) + 1) / (n_train + V), V the vocabulary
    (widened to cover every id that occurs)."""
    train_counts, val_counts = token_counts(train_tokens, int(vocab_size)), token_counts(val_tokens, int(vocab_size))
    size = max(len(train_counts), len(val_counts))
    train_counts = np.pad(train_counts, (0, size - len(train_counts))).astype(np.float64)
    val_counts = np.pad(val_counts, (0, size - len(val_counts))).astype(np.float64)
    log_p = np.log(train_counts + 1.0) - math.log(len(train_tokens) + size)
    return float(-(val_counts * log_p).sum() / max(1, len(val_tokens)))


def run_unigram_ce(run: RunDir, cache: dict[str, float] | None = None) -> float | None:
    """`unigram_ce` of a run's data, read from the token cache its `data.json` names (None when the
    run has no data record or its cache entry is gone); `cache` memoises by cache entry."""
    info = run.read_data_info() or {}
    directory = info.get("cache")
    if not directory:
        return None
    if cache is not None and directory in cache:
        return cache[directory]
    loaded = token_store.load(Path(directory))
    if loaded is None or "train" not in loaded[0] or "validation" not in loaded[0]:
        return None
    arrays, _ = loaded
    value = unigram_ce(arrays["train"].tokens, arrays["validation"].tokens, int(info.get("vocab_size") or 0))
    if cache is not None:
        cache[directory] = value
    return value


def regime(finals: Mapping[int, float], unigram: float | None) -> dict:
    """An arm's regime from its seeds' final validation losses: each run is "learning" when it ended
    `UNIGRAM_MARGIN` nats or more below the unigram cross-entropy, else at the unigram stage; the
    arm is at the unigram stage when any of its runs is (the conservative reading). Label None
    without a unigram cross-entropy or runs."""
    if unigram is None or not finals:
        return {"label": None, "unigram_ce": unigram, "per_seed": {}}
    per_seed = {s: {"final_val_loss": v, "below_unigram": unigram - v,
                    "label": LEARNING if unigram - v >= UNIGRAM_MARGIN else UNIGRAM_STAGE} for s, v in finals.items()}
    label = UNIGRAM_STAGE if any(p["label"] == UNIGRAM_STAGE for p in per_seed.values()) else LEARNING
    return {"label": label, "unigram_ce": unigram, "margin": UNIGRAM_MARGIN, "per_seed": per_seed}
