"""Which steps get a metrics row, and what the row holds.

A row is written every `train.log_every` steps, on every validation step, and — in a run that mixes
step kinds — for the first step of each kind (ar / meta / mixed) in a log interval, so a hybrid
run's rows show both losses whatever the schedule's phase relative to `log_every`. Which kinds an
interval has logged is derived from the schedule on resume, never stored in a checkpoint.

Throughput since the previous row: `tokens_per_s`, and `mfu` (model FLOPs utilisation) = accounted
FLOPs / seconds / (peak FLOP/s of one device × processes) when a peak is known (`metalm.peak_flops`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .cadence import Cadence
from .state import TrainState


def _value(x):
    """A Python number from a tensor or number (the host sync happens here, only for logged rows):
    a float from a floating-point tensor, an int from an integer one."""
    return x.item() if isinstance(x, torch.Tensor) else x


class RowPolicy:
    def __init__(self, cadence: Cadence, kind_of: Callable[[int], str] | None, peak_flops: float | None = None):
        """`kind_of(step)`: the kind of 0-based optimizer step `step` (None: every step is "ar");
        `peak_flops`: the FLOP/s all processes together can reach (None: no `mfu` column)."""
        self.cadence = cadence
        self.kind_of = kind_of
        self.peak_flops = peak_flops
        self.kinds_logged: set[str] = set()
        self.last_tokens = self.last_flops = 0
        self.last_time = 0.0

    def resume(self, state: TrainState) -> None:
        """Reconstruct the interval's logged kinds and the throughput reference after a restore."""
        self.last_tokens, self.last_flops, self.last_time = state.work.tokens, state.work.flops, state.time
        if self.kind_of is None:
            return
        start = state.step - state.step % self.cadence.every if self.cadence.every else 0
        self.kinds_logged = {self.kind_of(k) for k in range(start, state.step)}

    def due(self, step: int, kind: str, evaluated: bool) -> bool:
        """Whether the row of the step just taken (now at `step`) is written; updates the interval."""
        boundary = self.cadence.due(step)
        first_of_kind = self.kind_of is not None and kind not in self.kinds_logged
        if boundary:
            self.kinds_logged = set()
        elif first_of_kind:
            self.kinds_logged.add(kind)
        return boundary or first_of_kind or evaluated

    def row(self, state: TrainState, kind: str, fields: dict, lr: float, grad_norm, val_loss: float | None,
            meta_run: bool) -> dict:
        row = {"step": state.step, "step_kind": kind, **{k: _value(v) for k, v in fields.items()}, "lr": lr,
               "grad_norm": _value(grad_norm), **state.work.as_dict(), "time": state.time}
        if meta_run:
            row["meta_steps"] = state.meta_steps
        if val_loss is not None:
            row["val_loss"] = val_loss
        seconds = state.time - self.last_time
        row["tokens_per_s"] = (state.work.tokens - self.last_tokens) / seconds if seconds > 0 else None
        if self.peak_flops is not None:
            row["mfu"] = (state.work.flops - self.last_flops) / seconds / self.peak_flops if seconds > 0 else None
        self.last_tokens, self.last_flops, self.last_time = state.work.tokens, state.work.flops, state.time
        return row
