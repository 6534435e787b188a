"""The next-token loss shared by training steps and validation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_loss(model: torch.nn.Module, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of predicting windows[:, 1:] from windows[:, :-1] (fp32 logits)."""
    logits = model(input_ids=windows[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1), reduction=reduction)
