"""One meta-learning episode: support and query rows, what to read from them, and their labels.

Window layout (SMLMT default and LM tasks) — every row carries exactly one item. SMLMT rows are
`window_len` tokens with one labelled mask (`*_target`), read out at `*_pos` (the mask for pool=mask
and the token variant, the last position for pool=last), labelled `*_labels` ∈ 0…N−1. LM-task rows
are `window_len + 1` tokens: inputs row[:-1], next-token targets row[1:]; they have no positions or
labels.

Dense layout (token variant, `layout="dense"`) — the rows are training sequences of `seq_len` tokens,
shared by support and query (`support_ids` *is* `query_ids`: one backbone pass reads both), and
each row holds several labelled masks. The items are flattened: item i of the support set is the
mask at row `support_row[i]`, position `support_pos[i]` (= `support_target[i]`), labelled
`support_labels[i]`; likewise for the query set. No position is both a support and a query item.
The rows' corpus spans are unknown (they come from the training batch): `*_origin` hold −1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


@dataclass
class Episode:
    task: str  # "smlmt" | "lm"
    support_ids: torch.Tensor  # int64 [Rs, L]
    query_ids: torch.Tensor  # int64 [Rq, L] (dense: the same tensor as support_ids)
    class_ids: torch.Tensor  # int64 [N]: token ids (token), candidate word indices (sentence), [unit] (lm)
    support_origin: torch.Tensor  # int64 [Rs, 2]: corpus span [start, end) each row was cut from (−1: unknown)
    query_origin: torch.Tensor
    support_pos: torch.Tensor | None = None  # int64 [items] read-out position
    query_pos: torch.Tensor | None = None
    support_target: torch.Tensor | None = None  # int64 [items] position of the labelled mask
    query_target: torch.Tensor | None = None
    support_labels: torch.Tensor | None = None  # int64 [items] in 0…N−1
    query_labels: torch.Tensor | None = None
    support_source: torch.Tensor | None = None  # int64 [items] corpus position of the labelled occurrence
    query_source: torch.Tensor | None = None
    layout: str = "window"  # "window": item i is row i; "dense": items at (*_row, *_pos)
    support_row: torch.Tensor | None = None  # int64 [items] row of each item (dense)
    query_row: torch.Tensor | None = None

    @property
    def n_way(self) -> int:
        return int(self.class_ids.numel())

    @property
    def shared_rows(self) -> bool:
        """Support and query items live in the same rows (one backbone pass reads both)."""
        return self.layout == "dense"

    @property
    def n_tokens(self) -> int:
        """Unique training tokens the episode's rows consume (model inputs)."""
        width = self.support_ids.shape[1] - (1 if self.task == "lm" else 0)
        rows = self.support_ids.shape[0] + (0 if self.shared_rows else self.query_ids.shape[0])
        return rows * width

    def realised(self) -> dict[str, float]:
        """The episode as built (DESIGN 2.3; SMLMT only, empty for LM tasks): `episode_classes` — classes
        with at least one labelled item, support or query; `episode_support_min` / `_median` — support
        items per class over the episode's `n_way` classes (a class without any counts 0);
        `episode_query_items` — query items in all. In the window layout these are N, K, K and N·Q; in
        the dense layout K and Q cap items per row, so they depend on the rows. Read on the host,
        where episodes are built (no device sync)."""
        if self.support_labels is None or self.query_labels is None:  # LM tasks: both None
            return {}
        support = np.bincount(self.support_labels.cpu().numpy(), minlength=self.n_way)
        query = np.bincount(self.query_labels.cpu().numpy(), minlength=self.n_way)
        return {"episode_classes": float(np.count_nonzero(support + query)),
                "episode_support_min": float(support.min()), "episode_support_median": float(np.median(support)),
                "episode_query_items": float(query.sum())}

    def item_rows(self, support: bool) -> torch.Tensor:
        """Row index of each support (or query) item."""
        rows = self.support_row if support else self.query_row
        if rows is not None:
            return rows
        ids = self.support_ids if support else self.query_ids
        return torch.arange(ids.shape[0], device=ids.device)

    def to(self, device: torch.device | str) -> "Episode":
        """The episode on `device`; onto CUDA from pinned host memory, so the copies are asynchronous."""
        device = torch.device(device)
        moved: dict[int, torch.Tensor] = {}  # a tensor shared by two fields stays shared

        def move(v):
            if not isinstance(v, torch.Tensor):
                return v
            if id(v) not in moved:
                pinned = v.pin_memory() if device.type == "cuda" and not v.is_cuda else v
                moved[id(v)] = pinned.to(device, non_blocking=True)
            return moved[id(v)]

        return Episode(**{f.name: move(getattr(self, f.name)) for f in fields(self)})
