"""Trainer hook: dynamics rows every `dynamics.every` steps, read-out and figures at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .config import DynamicsConfig
from .phases import format_phase_readout
from .probe import dynamics_rows
from .readout import Readout, write_readout
from .rows import append_rows, drop_rows_after, load_rows, write_rows

ROWS_FILE = "dynamics.jsonl"


class DynamicsRecorder:
    """Appends the probe-batch rows of the model to `RUN/dynamics.jsonl` at steps 0, every, 2·every,
    ... and the last step. Use it on the main process only, with the bare model (not a DDP or
    compiled wrapper). `resume_step=None` starts a fresh file; a resumed run passes the checkpoint's
    step so rows recorded after it (by the interrupted run) are dropped and recomputed."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: DynamicsConfig,
        probe_input_ids: torch.Tensor,
        resume_step: int | None = None,
    ):
        self.path = Path(run_dir) / ROWS_FILE
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.probe_input_ids = probe_input_ids
        self.seconds = 0.0  # time spent computing rows (for overhead accounting)
        self._recorded: set[int] = set()
        if not cfg.every:
            return
        if resume_step is None:
            write_rows(self.path, [])
        else:
            drop_rows_after(self.path, resume_step)
            self._recorded = {row["step"] for row in load_rows(self.path)}

    def due(self, step: int) -> bool:
        return bool(self.cfg.every) and step % self.cfg.every == 0 and step not in self._recorded

    def record(self, model: nn.Module, step: int) -> list[dict]:
        """Compute and append the rows of `step` (whatever the cadence)."""
        start = time.perf_counter()
        rows = dynamics_rows(model, self.probe_input_ids, step, self.cfg.groups)
        append_rows(self.path, rows)
        self._recorded.add(step)
        self.seconds += time.perf_counter() - start
        return rows

    def maybe_record(self, model: nn.Module, step: int) -> list[dict] | None:
        """Call after every optimizer step (and once before the first, with step 0)."""
        return self.record(model, step) if self.due(step) else None

    def finish(self, model: nn.Module, step: int, echo: Callable[[str], None] | None = print) -> Readout | None:
        """Record the last step if the cadence missed it, then write `RUN/phases.json` and
        `RUN/plots/`, and echo the read-out table. Nothing when `every` is 0."""
        if not self.cfg.every:
            return None
        if step not in self._recorded:
            self.record(model, step)
        readout = write_readout(self.run_dir, load_rows(self.path), self.cfg.smoothing)
        if echo is not None:
            echo(format_phase_readout(readout.phases))
        return readout
