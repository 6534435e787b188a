"""Data: sources → tokenizer → cached token arrays → packed batches (pure functions of seed, step)."""

from .batches import PackedSequences, TrainBatches, evenly_spaced, validation_batches
from .pipeline import Corpus, cache_root, prepare_corpus, unigram_entropy
from .token_store import TokenArray

__all__ = [
    "Corpus", "PackedSequences", "TokenArray", "TrainBatches", "cache_root", "evenly_spaced",
    "prepare_corpus", "unigram_entropy", "validation_batches",
]
