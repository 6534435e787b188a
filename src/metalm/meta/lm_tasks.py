"""LM-task episodes (the proposal's variant, DESIGN 2.3): one document — or one group of documents
(a source file, a language) when groups are given — is the task; support = K of its sequences,
query = Q other sequences of the same unit; the task loss is next-token cross-entropy.

Each document is cut into non-overlapping slots of `window_len + 1` tokens (inputs + shifted
targets), starting at a random shift per episode; K + Q distinct slots are drawn, so support and
query never share a token. Units with fewer than K + Q slots are never drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .episode import Episode


class LMTaskSampler:
    """LM-task episodes of one corpus: its eligible units (documents or groups) and their slots."""

    def __init__(self, doc_offsets: np.ndarray, window: int, k_shot: int, q_query: int,
                 doc_groups: np.ndarray | None = None):
        self.doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        self.window, self.k, self.q = window, k_shot, q_query
        lengths = np.diff(self.doc_offsets)
        self.slots = lengths // (window + 1)
        n_docs = lengths.size
        if doc_groups is None:
            self.unit_docs = np.arange(n_docs)
            self.unit_offsets = np.arange(n_docs + 1)
            self.unit_name = "documents"
        else:
            groups = np.asarray(doc_groups, dtype=np.int64)
            if groups.shape != (n_docs,) or (groups < 0).any():
                raise DataError(f"meta: doc_groups must hold one non-negative group id per document ({n_docs})")
            self.unit_docs = np.argsort(groups, kind="stable")
            counts = np.bincount(groups)
            self.unit_offsets = np.concatenate([[0], np.cumsum(counts)])
            self.unit_name = "groups"
        cum = np.concatenate([[0], np.cumsum(self.slots[self.unit_docs])])
        unit_slots = cum[self.unit_offsets[1:]] - cum[self.unit_offsets[:-1]]
        self.eligible = np.flatnonzero(unit_slots >= k_shot + q_query)

    @property
    def n_units(self) -> int:
        return int(self.eligible.size)

    def episode(self, tokens: np.ndarray, rng: np.random.Generator) -> Episode:
        if self.n_units == 0:
            raise DataError(f"meta.task=lm: no {self.unit_name[:-1]} holds k_shot + q_query non-overlapping "
                            f"sequences of {self.window + 1} tokens")
        w = self.window + 1
        unit = int(self.eligible[rng.integers(self.n_units)])
        docs = self.unit_docs[self.unit_offsets[unit]:self.unit_offsets[unit + 1]]
        slots = self.slots[docs]
        slack = np.diff(self.doc_offsets)[docs] - slots * w
        shift = (rng.random(docs.size) * (slack + 1)).astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(slots)])
        picks = rng.choice(int(cum[-1]), size=self.k + self.q, replace=False)
        d = np.searchsorted(cum, picks, side="right") - 1
        starts = self.doc_offsets[docs[d]] + shift[d] + (picks - cum[d]) * w
        rows = np.asarray(tokens[starts[:, None] + np.arange(w)[None, :]], dtype=np.int64)
        origin = np.stack([starts, starts + w], axis=1)
        return Episode("lm", torch.from_numpy(rows[: self.k]), torch.from_numpy(rows[self.k:]),
                       torch.tensor([unit], dtype=torch.long), torch.from_numpy(origin[: self.k]),
                       torch.from_numpy(origin[self.k:]))
