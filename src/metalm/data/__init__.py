"""Data: sources (files, hub datasets, the generated `demo` world) → tokenizer → cached token
arrays → packed batches (pure functions of seed, step)."""

from .batches import PackedSequences, TrainBatches, evenly_spaced, validation_batches
from .pipeline import Corpus, cache_root, prepare_corpus
from .token_store import TokenArray

__all__ = [
    "Corpus", "PackedSequences", "TokenArray", "TrainBatches", "cache_root", "evenly_spaced",
    "prepare_corpus", "validation_batches",
]
