"""Which optimizer steps (or micro-batches) are meta-learning work (DESIGN 2.4 hybrid), as pure
functions of (seed, step[, micro-batch]) so a resumed run and any process count make the same choices.

- `random`: step s is a meta step with probability `hybrid`, from a generator seeded by (seed, s);
- `interleave`: step s is a meta step iff ⌊(s+1)·h⌋ − ⌊s·h⌋ = 1, which spaces meta steps evenly
  and gives exactly ⌊S·h⌋ meta steps among the first S;
- `weighted`: every step is mixed: loss = λ·L_meta + (1 − λ)·L_AR with λ = `weight`;
- `microbatch` (the paper's): each micro-batch m of step s is a meta micro-batch with probability
  `hybrid` (a generator seeded by (seed, s, m)); the micro-batches' gradients are summed into one
  optimizer step, which is then meta, next-token or mixed.
"""

from __future__ import annotations

import math

import numpy as np

_TAG = 0x48594252  # separates this generator's stream from the episode and batch streams


def step_weights(step: int, seed: int, meta_cfg) -> tuple[float, float]:
    """(meta weight, next-token weight) of optimizer step `step` (0-based)."""
    if not meta_cfg.enabled:
        return 0.0, 1.0
    if meta_cfg.schedule == "weighted":
        return float(meta_cfg.weight), 1.0 - float(meta_cfg.weight)
    if meta_cfg.schedule == "microbatch":
        raise ValueError("the microbatch schedule decides per micro-batch: use microbatch_is_meta")
    h = float(meta_cfg.hybrid)
    if meta_cfg.schedule == "random":
        meta = bool(np.random.default_rng([seed, step, _TAG]).random() < h)
    else:
        meta = math.floor((step + 1) * h) - math.floor(step * h) == 1
    return (1.0, 0.0) if meta else (0.0, 1.0)


def is_meta_step(step: int, seed: int, meta_cfg) -> bool:
    """True when step `step` runs a meta-learning loss (always, under `weighted`, mixed with AR)."""
    return step_weights(step, seed, meta_cfg)[0] > 0


def microbatch_is_meta(step: int, seed: int, meta_cfg, n_micro: int) -> list[bool]:
    """Under `schedule: microbatch`, whether each of optimizer step `step`'s `n_micro` micro-batches
    is a meta micro-batch (probability `hybrid`, independently per micro-batch)."""
    h = float(meta_cfg.hybrid)
    return [bool(np.random.default_rng([seed, step, m, _TAG]).random() < h) for m in range(n_micro)]


def step_kind_of(step: int, seed: int, meta_cfg, n_micro: int) -> str:
    """"ar", "meta" or "mixed": what optimizer step `step` does, under any schedule."""
    if not meta_cfg.enabled:
        return "ar"
    if meta_cfg.schedule == "microbatch":
        meta = microbatch_is_meta(step, seed, meta_cfg, n_micro)
        return "meta" if all(meta) else ("mixed" if any(meta) else "ar")
    meta_w, ar_w = step_weights(step, seed, meta_cfg)
    return "mixed" if meta_w and ar_w else ("meta" if meta_w else "ar")
