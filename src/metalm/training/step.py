"""The gradients of one optimizer step, next-token and meta alike, executed from its `StepPlan`.

Meta work runs under the same autocast as next-token work; inner loops are local to each rank and
only the outer gradient is averaged across processes. Under a per-micro-batch plan DDP's own
synchronisation is not used: every gradient, next-token and outer alike, is averaged once across
processes at the end of the step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from ..accounting import Work, ar_work
from ..meta.meta_step import reduce_stats
from .step_plan import StepPlan


class StepRunner:
    """Assembles the `.grad` of one optimizer step from its plan; returns (row fields, work)."""

    def __init__(self, model: torch.nn.Module, ddp, ar_loss: Callable, meta, trainable: list, batches, dist,
                 device: torch.device, autocast: Callable, grad_accum: int, seq_len: int, fwd_flops: int):
        """`meta`: the run's `MetaTask` (None for vanilla); `trainable`: (name, parameter) pairs in the
        order gradients are zeroed and averaged in."""
        self.model, self.ddp, self.ar_loss, self.meta = model, ddp, ar_loss, meta
        self.params = [p for _, p in trainable]
        reached = {id(p) for p in meta.reached_parameters(model)} if meta is not None else set()
        self.reached = [p for p in self.params if id(p) in reached]  # what the meta work writes `.grad` to
        self.batches, self.dist, self.device, self.autocast = batches, dist, device, autocast
        self.accum, self.seq_len, self.fwd_flops = grad_accum, seq_len, fwd_flops
        self.per_rank = batches.batch_size // grad_accum // dist.world_size

    def __call__(self, step: int, plan: StepPlan) -> tuple[dict, Work]:
        if plan.micro_meta is not None:
            fields, work = self._per_micro(step, plan)
        else:
            fields, work = self._whole(step, plan)
        self._finish_gradients(plan)
        fields.update(plan.row)
        return fields, work

    # -- whole-step plans -------------------------------------------------------------------------
    def _whole(self, step: int, plan: StepPlan) -> tuple[dict, Work]:
        fields: dict = {}
        work = Work()
        dense = plan.meta_work and self.meta.cfg.layout == "dense"
        batch = self.batches.batch(step) if plan.ar_weight or dense else None
        if batch is not None and plan.ar_weight:
            fields["loss"], work = self.next_token(batch, plan.ar_weight)
        if plan.meta_work:
            rows = batch if dense else None
            stats = self._meta(step, 0, rows, plan.meta_weight)
            meta_work = stats.pop("work")
            if rows is not None and plan.ar_weight:  # a weighted step's dense episodes reuse the next-token rows
                meta_work.tokens = 0
            work += meta_work
            fields.update(stats)
        return fields, work

    # -- per-micro-batch plans ------------------------------------------------------------------
    def _per_micro(self, step: int, plan: StepPlan) -> tuple[dict, Work]:
        """Each micro-batch is meta or next-token work; gradients summed (each scaled 1/accum)."""
        assert plan.micro_meta is not None
        batch = self.batches.batch(step)
        per_micro = batch.shape[0] // self.accum
        fields: dict = {}
        work = Work()
        ar_total = torch.zeros((), dtype=torch.float64, device=self.device)
        n_ar = sum(not m for m in plan.micro_meta)
        metas: list[dict] = []
        for micro, is_meta in enumerate(plan.micro_meta):
            if not is_meta:
                loss, ar = self._micro(batch, micro, plan.ar_weight, sync=None)
                ar_total += loss.detach().double()
                work += ar
            elif plan.meta_work:
                rows = batch[micro * per_micro:(micro + 1) * per_micro] if self.meta.cfg.layout == "dense" else None
                stats = self._meta(step, micro, rows, plan.meta_weight)
                work += stats.pop("work")
                metas.append(stats)
        if n_ar:
            fields["loss"] = self.dist.all_reduce_sum(ar_total) / (n_ar * self.dist.world_size)
        if metas:  # mean over this step's meta micro-batches (each already a global mean)
            for key in metas[0]:
                values = [m[key] for m in metas]
                fields[key] = sum(values) if key == "episodes" else sum(values) / len(values)
        return fields, work

    # -- next-token work --------------------------------------------------------------------------
    def next_token(self, batch: np.ndarray, scale: float = 1.0) -> tuple[torch.Tensor, Work]:
        """Forward/backward of a step's global batch (this rank's slices), gradients × `scale` (the
        next-token share of a weighted hybrid step); returns the mean loss (a tensor: read on the
        host only when a row is logged) and the work."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        work = Work()
        for micro in range(self.accum):
            loss, w = self._micro(batch, micro, scale / self.accum, sync=micro == self.accum - 1)
            total += loss.detach().double()
            work += w
        return self.dist.all_reduce_sum(total) / (self.accum * self.dist.world_size), work

    def _rank_rows(self, batch: np.ndarray, micro: int) -> torch.Tensor:
        start = micro * self.per_rank * self.dist.world_size + self.dist.rank * self.per_rank
        rows = torch.from_numpy(batch[start:start + self.per_rank])
        if self.device.type == "cuda":
            return rows.pin_memory().to(self.device, non_blocking=True)
        return rows.to(self.device)

    def _micro(self, batch: np.ndarray, micro: int, scale: float, sync: bool | None) -> tuple[torch.Tensor, Work]:
        """Next-token forward/backward of this rank's rows of micro-batch `micro`, gradients × `scale`.
        `sync`: whether DDP all-reduces on this backward (None: bypass DDP, the step averages)."""
        bypass = sync is None or self.ddp is None  # self.ddp wraps the loss (distributed.data_parallel_loss)
        with self.ddp.no_sync() if self.ddp is not None and sync is False else contextlib.nullcontext():
            with self.autocast():
                ids = self._rank_rows(batch, micro)
                loss = self.ar_loss(self.model, ids) if bypass else self.ddp(ids)
            (loss * scale).backward()
        rows = batch.shape[0] // self.accum
        return loss, ar_work(rows * self.seq_len, self.fwd_flops)

    # -- meta work and the gradients' rules ---------------------------------------------------------
    def _meta(self, step: int, micro: int, rows: np.ndarray | None, loss_scale: float) -> dict:
        """This rank's episodes of (step, micro-batch), outer gradient × loss_scale into `.grad`;
        the global statistics (every rank's episodes) with the summed work."""
        batch = self.meta.episodes(step, self.dist.rank, self.dist.world_size, rows=rows, micro=micro)
        with self.autocast():  # statistics stay on the device until a row is logged
            stats = self.meta.runner.run(self.model, batch, loss_scale=loss_scale, as_tensors=True)
        return reduce_stats(stats, self.dist.all_reduce_sum if self.dist.enabled else None, self.device)

    def _finish_gradients(self, plan: StepPlan) -> None:
        """Zero gradients where the plan asks for them, then average what DDP did not. Every rank
        holds gradients for the same parameters (the plan is rank-independent)."""
        zero = self.params if plan.zero == "all" else (self.reached if plan.zero == "reached" else [])
        for p in zero:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.dist.enabled and plan.average:
            # Inner loops are local; only the outer gradient is averaged across processes (next-token
            # gradients already averaged by DDP and identical on every rank are unchanged by this).
            self.dist.average_gradients([p for p in self.params if p.grad is not None])
