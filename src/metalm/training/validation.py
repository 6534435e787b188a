"""Validation loss (DESIGN 2.6): next-token cross-entropy on the same fixed held-out batches for
every run, every `train.eval_every` steps, before the first step and after the last."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .cadence import Cadence
from .losses import next_token_loss


class Validator:
    def __init__(self, model: torch.nn.Module, batches: list[np.ndarray], cadence: Cadence, dist,
                 device: torch.device, autocast: Callable):
        self.model, self.batches, self.cadence = model, batches, cadence
        self.dist, self.device, self.autocast = dist, device, autocast

    def due(self, step: int) -> bool:
        return self.cadence.due(step)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token loss over the validation batches (token-weighted; batches split over ranks)."""
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(self.batches):
            if i % self.dist.world_size != self.dist.rank:
                continue
            windows = torch.from_numpy(batch).to(self.device)
            with self.autocast():
                nll = next_token_loss(self.model, windows, reduction="sum")
            sums[0] += nll.double()
            sums[1] += windows[:, 1:].numel()
        self.dist.all_reduce_sum(sums)
        self.model.train()
        return float(sums[0] / sums[1])
