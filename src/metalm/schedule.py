"""Learning-rate schedule: linear warm-up, then cosine / linear decay to `min_lr_ratio · lr`, or constant.

A pure function of the step, so resume needs no scheduler state.
"""

from __future__ import annotations

import math


def lr_at(step: int, train_cfg) -> float:
    """Learning rate for optimizer update `step` (0-based)."""
    base, warmup, total = train_cfg.lr, train_cfg.warmup_steps, train_cfg.steps
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if train_cfg.schedule == "constant" or total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    floor = base * train_cfg.min_lr_ratio
    if train_cfg.schedule == "linear":
        return floor + (base - floor) * (1 - progress)
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
