"""The unit that flows from sources to the token store: a batch of documents as one flat array.

Readers of text (after encoding) and of token ids both produce `DocBatch`es, so the writer, the
train/validation routing and the token budget handle both the same way, a batch at a time
(never a Python object per token, never a whole corpus in memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DocBatch:
    """Consecutive documents of one source: `tokens` holds them back to back, `lengths[i]` is
    document i's share of it. With `continues`, the last document goes on in the next batch (a
    flat token array read in chunks); otherwise every document here is complete (EOS included)."""

    tokens: np.ndarray  # 1-D, the store's dtype
    lengths: np.ndarray  # int64, one per document (part)
    source: int  # index of the source it came from
    text_bytes: int = 0  # UTF-8 bytes of text it was encoded from (0 for token ids)
    eod_added: int = 0  # documents that got an end-of-document token appended
    continues: bool = False

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def cut(self, n_tokens: int) -> "DocBatch":
        """The batch's first `n_tokens` tokens, its last document ending there (a token budget)."""
        ends = np.cumsum(self.lengths)
        keep = int(np.searchsorted(ends, n_tokens, side="left")) + 1
        lengths = self.lengths[:keep].copy()
        lengths[-1] -= int(ends[keep - 1]) - n_tokens
        return DocBatch(self.tokens[:n_tokens], lengths, self.source, self.text_bytes, self.eod_added, False)


def flat_with_eod(values: np.ndarray, lengths: np.ndarray, missing: np.ndarray, eod: int,
                  dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, int]:
    """Records given as one flat `values` array and their `lengths`: an `eod` inserted after each
    record flagged in `missing` (vectorised)."""
    ends = np.cumsum(lengths)
    insert_at = ends[missing]
    out = np.insert(values.astype(dtype, copy=False), insert_at, np.asarray(eod, dtype=dtype))
    return out, lengths + missing, int(missing.sum())
