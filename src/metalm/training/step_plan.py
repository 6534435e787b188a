"""What each optimizer step does (DESIGN 2.4 hybrid, DESIGN 3), decided once per step from the schedule.

The schedules (`meta.schedule`), as pure functions of (seed, step[, micro-batch]) so a resumed run
and any process count make the same choices:

- `random`: step s is a meta step with probability `hybrid`, from a generator seeded by (seed, s);
- `interleave`: step s is a meta step iff ⌊(s+1)·h⌋ − ⌊s·h⌋ = 1, which spaces meta steps evenly
  and gives exactly ⌊S·h⌋ meta steps among the first S;
- `weighted`: every step is mixed: loss = λ·L_meta + (1 − λ)·L_AR with λ = `weight`;
- `microbatch` (the paper's): each micro-batch m of step s is a meta micro-batch with probability
  `hybrid` (a generator seeded by (seed, s, m)); the micro-batches' gradients are summed into one
  optimizer step, which is then meta, next-token or mixed.

What a meta step does to the parameters its loss does not reach (e.g. the LM head) is
`meta.untouched`: `freeze` leaves them without a gradient, so AdamW neither moves them nor touches
their optimizer state; `momentum` gives them a zero gradient, so AdamW keeps moving them along the
momentum of earlier next-token steps (an effect that must not be credited to meta-learning).

Control arms (`meta.control`) keep the meta arm's schedule but do no meta work: `momentum` applies a
zero gradient to exactly the parameters the arm's meta work reaches (`MetaTask.reached_parameters`)
and treats every other parameter as the arm's `meta.untouched` does, so a momentum control is its
meta arm with the meta gradient's value set to zero (AdamW momentum replay only); `skip` applies
nothing (the step counter and the LR schedule still advance). Under `weighted` and `microbatch` a
control step keeps its next-token share.

This module is the only one that tells the schedules apart; `training.step.StepRunner` executes a plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

_TAG = 0x48594252  # separates this generator's stream from the episode and batch streams

Kind = Literal["ar", "meta", "mixed", "control"]


@dataclass(frozen=True)
class StepPlan:
    """One optimizer step: its work, which gradients are zeroed or averaged, what its row records.

    `micro_meta` (per-micro-batch schedule): whether each micro-batch is meta work (True) or
    next-token work; None under whole-step schedules, where `meta_weight` / `ar_weight` scale the
    step's meta loss and its next-token loss (each 0 when that work is absent)."""

    kind: Kind  # "control": a control arm's meta step ("mixed" stays "mixed")
    micro_meta: tuple[bool, ...] | None
    meta_weight: float
    ar_weight: float
    meta_work: bool  # the meta loss runs (a meta share, and not a control arm)
    zero: Literal["none", "reached", "all"]  # parameters given a zero gradient where they have none
    average: bool  # average every gradient across processes after the step (DDP's averaging is not used)
    row: dict = field(default_factory=dict)  # extra fields of the step's metrics row


class StepPlanner:
    """The plan of every optimizer step of a run (vanilla runs: every step next-token)."""

    def __init__(self, meta_cfg, seed: int, grad_accum: int):
        self.seed = int(seed)
        self.n_micro = int(grad_accum)
        self.enabled = bool(meta_cfg.enabled)
        self.schedule = meta_cfg.schedule
        self.per_micro = self.enabled and meta_cfg.per_micro_batch()
        self.hybrid = float(meta_cfg.hybrid)
        self.weight = float(meta_cfg.weight)
        self.control = meta_cfg.control if self.enabled else "none"
        self.untouched_momentum = meta_cfg.untouched == "momentum"

    @property
    def mixes_kinds(self) -> bool:
        """Whether steps can differ in kind (a meta run)."""
        return self.enabled

    # -- the schedules' draws ---------------------------------------------------------------------
    def _draw(self, step: int, *micro: int) -> bool:
        return bool(np.random.default_rng([self.seed, step, *micro, _TAG]).random() < self.hybrid)

    def micro_meta(self, step: int) -> tuple[bool, ...]:
        """Per-micro-batch schedule: whether each micro-batch of step `step` is meta work."""
        return tuple(self._draw(step, m) for m in range(self.n_micro))

    def weights(self, step: int) -> tuple[float, float]:
        """(meta weight, next-token weight) of step `step` under a whole-step schedule."""
        if not self.enabled:
            return 0.0, 1.0
        if self.schedule == "weighted":
            return self.weight, 1.0 - self.weight
        h = self.hybrid
        if self.schedule == "random":
            meta = self._draw(step)
        else:
            meta = math.floor((step + 1) * h) - math.floor(step * h) == 1
        return (1.0, 0.0) if meta else (0.0, 1.0)

    # -- the plan -----------------------------------------------------------------------------------
    def plan(self, step: int) -> StepPlan:
        if self.per_micro:
            micro = self.micro_meta(step)
            meta_w, ar_w = (1.0 / self.n_micro, 1.0 / self.n_micro)
            has_meta, has_ar = any(micro), not all(micro)
        else:
            micro = None
            meta_w, ar_w = self.weights(step)
            has_meta, has_ar = meta_w > 0, ar_w > 0
        kind: Kind = "mixed" if has_meta and has_ar else ("meta" if has_meta else "ar")
        controlled = self.control != "none" and kind != "ar"
        if kind == "meta" and controlled:
            kind = "control"
        meta_work = has_meta and self.control == "none"
        replay = controlled and self.control == "momentum"
        zero: Literal["none", "reached", "all"] = "none"
        if replay or meta_work:
            zero = "all" if self.untouched_momentum else ("reached" if replay else "none")
        return StepPlan(kind=kind, micro_meta=micro, meta_weight=meta_w if has_meta else 0.0,
                        ar_weight=ar_w if has_ar else 0.0, meta_work=meta_work, zero=zero,
                        average=meta_work or self.per_micro or replay,
                        row={"control": self.control} if controlled else {})

    def forced(self, kind: str) -> StepPlan:
        """A pure next-token ("ar") or pure meta ("meta") step, whatever the schedule (benchmarks)."""
        if kind == "ar":
            return StepPlan(kind="ar", micro_meta=None, meta_weight=0.0, ar_weight=1.0, meta_work=False, zero="none",
                            average=False)
        if kind != "meta" or not self.enabled or self.control != "none":
            raise ValueError(f"a forced step is 'ar', or 'meta' in a meta arm that is not a control; got {kind!r}")
        return StepPlan(kind="meta", micro_meta=None, meta_weight=1.0, ar_weight=0.0, meta_work=True,
                        zero="all" if self.untouched_momentum else "none", average=True)

    def kind(self, step: int) -> Kind:
        return self.plan(step).kind
