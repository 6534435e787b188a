"""Packed fixed-length sequences and the batch of each step as a pure function of (seed, step).

The token stream is cut into non-overlapping chunks of `seq_len + 1` tokens (inputs and shifted
targets). Training walks seeded permutations of the chunks, epoch after epoch: item j of the run
is chunk `perm(seed, j // n)[j % n]`, and step s uses items s·B … (s+1)·B − 1. So a resumed run,
an uninterrupted run and a run on any number of processes see exactly the same batches.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import DataError
from .token_store import TokenArray


class PackedSequences:
    """Non-overlapping (seq_len + 1)-token windows over a token array."""

    def __init__(self, data: TokenArray, seq_len: int, name: str = "data"):
        self.tokens = data.tokens
        self.seq_len = seq_len
        self.n = (len(data.tokens) - 1) // seq_len if len(data.tokens) > 1 else 0
        if self.n < 1:
            raise DataError(
                f"{name}: {len(data.tokens)} tokens is shorter than one sequence of "
                f"train.seq_len + 1 = {seq_len + 1} tokens"
            )

    def __len__(self) -> int:
        return self.n

    def gather(self, chunk_ids: np.ndarray) -> np.ndarray:
        """int64 array [len(chunk_ids), seq_len + 1]."""
        starts = np.asarray(chunk_ids, dtype=np.int64) * self.seq_len
        idx = starts[:, None] + np.arange(self.seq_len + 1, dtype=np.int64)[None, :]
        return np.asarray(self.tokens[idx], dtype=np.int64)


class TrainBatches:
    """The global training batch of any step, independent of history and process count."""

    def __init__(self, seqs: PackedSequences, batch_size: int, seed: int):
        self.seqs = seqs
        self.batch_size = batch_size
        self.seed = seed

    @lru_cache(maxsize=4)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5EED, epoch]).permutation(len(self.seqs))

    def chunk_ids(self, step: int) -> np.ndarray:
        items = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        n = len(self.seqs)
        epochs, pos = np.divmod(items, n)
        out = np.empty_like(items)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            out[sel] = self._permutation(int(epoch))[pos[sel]]
        return out

    def batch(self, step: int) -> np.ndarray:
        """int64 [batch_size, seq_len + 1] token windows of optimizer step `step` (0-based)."""
        return self.seqs.gather(self.chunk_ids(step))


def evenly_spaced(n: int, count: int) -> np.ndarray:
    """`count` distinct indices spread evenly over range(n) (all of them when count ≥ n)."""
    if count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def validation_batches(seqs: PackedSequences, batch_size: int, n_batches: int) -> list[np.ndarray]:
    """The fixed validation set: up to n_batches × batch_size windows spread over the held-out
    stream, identical for every run with the same data and seq_len."""
    ids = evenly_spaced(len(seqs), batch_size * n_batches)
    return [seqs.gather(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)]
