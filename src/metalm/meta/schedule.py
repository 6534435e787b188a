"""Which optimizer steps are meta steps (DESIGN 2.4 hybrid) — decided per optimizer step, never per
micro-batch, as a pure function of (seed, step) so a resumed run makes the same choices.

- `random`: step s is a meta step with probability `hybrid`, from a generator seeded by (seed, s);
- `interleave`: step s is a meta step iff ⌊(s+1)·h⌋ − ⌊s·h⌋ = 1, which spaces meta steps evenly
  and gives exactly ⌊S·h⌋ meta steps among the first S;
- `weighted`: every step is mixed: loss = λ·L_meta + (1 − λ)·L_AR with λ = `weight`.
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
    h = float(meta_cfg.hybrid)
    if meta_cfg.schedule == "random":
        meta = bool(np.random.default_rng([seed, step, _TAG]).random() < h)
    else:
        meta = math.floor((step + 1) * h) - math.floor(step * h) == 1
    return (1.0, 0.0) if meta else (0.0, 1.0)


def is_meta_step(step: int, seed: int, meta_cfg) -> bool:
    """True when step `step` runs a meta-learning loss (always, under `weighted`, mixed with AR)."""
    return step_weights(step, seed, meta_cfg)[0] > 0
