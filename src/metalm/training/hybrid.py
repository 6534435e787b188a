"""The gradients of one optimizer step of a meta run (DESIGN 2.4): next-token, meta, or both.

Per-step schedules (`random`, `interleave`, `weighted`) make a whole optimizer step meta, next-token
or a weighted sum of the two; `microbatch` (the paper's) decides per micro-batch and sums the
micro-batches' gradients into one optimizer step.

What a meta step does to the parameters its loss does not reach (e.g. the LM head) is
`meta.untouched`: `freeze` leaves them without a gradient, so AdamW neither moves them nor touches
their optimizer state; `momentum` gives them a zero gradient, so AdamW keeps moving them along the
momentum of earlier next-token steps (an effect that must not be credited to meta-learning).

Control arms (`meta.control`) keep the meta arm's schedule but do no meta work: `momentum` applies a
zero gradient to exactly the parameters the arm's meta work reaches (`MetaTask.reached_parameters`)
and treats every other parameter as the arm's `meta.untouched` does, so a momentum control is its
meta arm with the meta gradient's value set to zero (AdamW momentum replay only); `skip` applies
nothing (the step counter and the LR schedule still advance). Their work is accounted as none. Under
`weighted` and `microbatch` a control step keeps its next-token share.

Meta work runs under the same autocast as next-token work; inner loops are local to each rank and
only the outer gradient is averaged across processes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..accounting import Work
from ..meta import reduce_stats
from ..meta.schedule import microbatch_is_meta, step_kind_of


class HybridStep:
    """Assembles the `.grad` of optimizer step `step` of a meta run; returns (kind, row fields, work)."""

    def __init__(self, cfg, meta, model: torch.nn.Module, trainable: list[tuple[str, torch.nn.Parameter]], dist,
                 device: torch.device, autocast: Callable, batches, ar_step: Callable, ar_micro: Callable):
        """`ar_step(batch, scale)`: the next-token forward/backward of a whole step's batch (mean loss,
        work); `ar_micro(batch, micro, scale, sync)`: the same for this rank's rows of
        micro-batch `micro` of `batch`, gradients × `scale`; returns the loss tensor and its work."""
        self.cfg, self.meta, self.model = cfg, meta, model
        self.params = [p for _, p in trainable]  # the order gradients are zeroed and averaged in
        reached = {id(p) for p in meta.reached_parameters(model)}
        self.reached = [p for p in self.params if id(p) in reached]  # what the meta work writes `.grad` to
        self.dist, self.device, self.autocast, self.batches = dist, device, autocast, batches
        self.ar_step, self.ar_micro = ar_step, ar_micro
        self.control = cfg.meta.control
        self.accum = cfg.train.grad_accum

    # -- what a step is ---------------------------------------------------------------------------
    def kind(self, step: int) -> str:
        """"ar", "meta", "mixed", or "control" for a control arm's meta step."""
        kind = step_kind_of(step, self.cfg.run.seed, self.cfg.meta, self.accum)
        return "control" if kind == "meta" and self.control != "none" else kind

    def __call__(self, step: int) -> tuple[str, dict, Work]:
        if self.cfg.meta.schedule == "microbatch":
            fields, work, meta_ran = self._microbatch_step(step)
        else:
            fields, work, meta_ran = self._whole_step(step)
        kind = self.kind(step)
        controlled = self.control != "none" and kind != "ar"
        self._finish_gradients(meta_ran, controlled)
        if controlled:
            fields["control"] = self.control
        return kind, fields, work

    # -- per-step schedules ----------------------------------------------------------------------
    def _whole_step(self, step: int) -> tuple[dict, Work, bool]:
        meta_w, ar_w = self.meta.step_weights(step)
        fields: dict = {}
        work = Work()
        dense = meta_w and self.control == "none" and self.cfg.meta.layout == "dense"
        batch = self.batches.batch(step) if ar_w or dense else None
        if ar_w:
            fields["loss"], work = self.ar_step(batch, ar_w)
        meta_ran = False
        if meta_w and self.control == "none":
            rows = batch if dense else None
            stats = self._meta(step, 0, rows, meta_w)
            meta_work = stats.pop("work")
            if rows is not None and ar_w:  # a weighted step's dense episodes reuse the next-token rows
                meta_work.tokens = 0
            work += meta_work
            fields.update(stats)
            meta_ran = True
        return fields, work, meta_ran

    # -- the paper's schedule --------------------------------------------------------------------
    def _microbatch_step(self, step: int) -> tuple[dict, Work, bool]:
        """Each micro-batch is meta or next-token; gradients summed (each scaled 1/accum). DDP's own
        synchronisation is not used here: every gradient, next-token and outer alike, is averaged
        once across processes in `_finish_gradients`."""
        is_meta = microbatch_is_meta(step, self.cfg.run.seed, self.cfg.meta, self.accum)
        batch = self.batches.batch(step)
        per_micro = batch.shape[0] // self.accum
        fields: dict = {}
        work = Work()
        ar_total = torch.zeros((), dtype=torch.float64, device=self.device)
        n_ar = sum(not m for m in is_meta)
        metas: list[dict] = []
        for micro, meta in enumerate(is_meta):
            if not meta:
                loss, ar = self.ar_micro(batch, micro, 1.0 / self.accum, sync=None)
                ar_total += loss.detach().double()
                work += ar
            elif self.control == "none":
                rows = batch[micro * per_micro:(micro + 1) * per_micro] if self.cfg.meta.layout == "dense" else None
                stats = self._meta(step, micro, rows, 1.0 / self.accum)
                work += stats.pop("work")
                metas.append(stats)
        if n_ar:
            fields["loss"] = self.dist.all_reduce_sum(ar_total) / (n_ar * self.dist.world_size)
        if metas:  # mean over this step's meta micro-batches (each already a global mean)
            for key in metas[0]:
                values = [m[key] for m in metas]
                fields[key] = sum(values) if key == "episodes" else sum(values) / len(values)
        return fields, work, bool(metas)

    # -- pieces ---------------------------------------------------------------------------------
    def _meta(self, step: int, micro: int, rows: np.ndarray | None, loss_scale: float) -> dict:
        """This rank's episodes of (step, micro-batch), outer gradient × loss_scale into `.grad`;
        the global statistics (every rank's episodes) with the summed work."""
        batch = self.meta.episodes(step, self.dist.rank, self.dist.world_size, rows=rows, micro=micro)
        with self.autocast():  # statistics stay on the device until a row is logged
            stats = self.meta.runner.run(self.model, batch, loss_scale=loss_scale, as_tensors=True)
        return reduce_stats(stats, self.dist.all_reduce_sum if self.dist.enabled else None, self.device)

    def _finish_gradients(self, meta_ran: bool, controlled: bool) -> None:
        """Zero gradients where the rules ask for them (on a `momentum` control step, the parameters
        the meta work would have reached; on a meta or momentum-control step under `untouched:
        momentum`, every other one too), then average what DDP did not."""
        params = self.params
        replay = controlled and self.control == "momentum"
        zero = []
        if replay or meta_ran:
            zero = params if self.cfg.meta.untouched == "momentum" else (self.reached if replay else [])
        for p in zero:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not self.dist.enabled:
            return
        microbatch = self.cfg.meta.schedule == "microbatch"
        if meta_ran or microbatch or replay:
            # Inner loops are local; only the outer gradient is averaged across processes (next-token
            # gradients already averaged by DDP and identical on every rank are unchanged by this).
            # Every rank holds gradients for the same parameters (the schedule is rank-independent).
            self.dist.average_gradients([p for p in params if p.grad is not None])
