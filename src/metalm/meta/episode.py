"""One meta-learning episode: support and query rows, what to read from them, and their labels.

Every row carries exactly one item. SMLMT rows are `window_len` tokens with one labelled mask
(`*_target`), read out at `*_pos` (the mask for pool=mask and the token variant, the last position
for pool=last), labelled `*_labels` ∈ 0…N−1. LM-task rows are `window_len + 1` tokens: inputs
row[:-1], next-token targets row[1:]; they have no positions or labels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Episode:
    task: str  # "smlmt" | "lm"
    support_ids: torch.Tensor  # int64 [Rs, L]
    query_ids: torch.Tensor  # int64 [Rq, L]
    class_ids: torch.Tensor  # int64 [N]: token ids (token), candidate word indices (sentence), [unit] (lm)
    support_origin: torch.Tensor  # int64 [Rs, 2]: corpus span [start, end) each row was cut from
    query_origin: torch.Tensor
    support_pos: torch.Tensor | None = None  # int64 [Rs] read-out position
    query_pos: torch.Tensor | None = None
    support_target: torch.Tensor | None = None  # int64 [Rs] position of the labelled mask
    query_target: torch.Tensor | None = None
    support_labels: torch.Tensor | None = None  # int64 [Rs] in 0…N−1
    query_labels: torch.Tensor | None = None
    support_source: torch.Tensor | None = None  # int64 [Rs] corpus position of the labelled occurrence
    query_source: torch.Tensor | None = None

    @property
    def n_way(self) -> int:
        return int(self.class_ids.numel())

    @property
    def n_tokens(self) -> int:
        """Unique training tokens the episode's rows consume (model inputs)."""
        width = self.support_ids.shape[1] - (1 if self.task == "lm" else 0)
        return (self.support_ids.shape[0] + self.query_ids.shape[0]) * width

    def to(self, device: torch.device | str) -> "Episode":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Episode(**{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                          for k, v in values.items()})
