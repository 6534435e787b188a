"""Learning dynamics during training: rows of the current weights on the fixed probe batch every
`dynamics.every` steps (rank 0; not counted as training time), and the phase read-out at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..run_dir import RunDir
from ..training.cadence import Cadence
from .probe import dynamics_rows

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class DynamicsRecorder:
    def __init__(self, run: RunDir, model: PreTrainedModel, probe: torch.Tensor | None, cfg, last_step: int,
                 is_main: bool, mirror=None):
        """`probe`: the probe batch (None when `cfg.every` is 0: nothing is recorded);
        `mirror(rows)`: also send the rows elsewhere (TensorBoard)."""
        self.run, self.model, self.probe, self.cfg = run, model, probe, cfg
        self.enabled = cfg.every > 0 and is_main and probe is not None
        self.cadence = Cadence(cfg.every, last_step)
        self.mirror = mirror

    def due(self, step: int) -> bool:
        return self.enabled and (step == 0 or self.cadence.due(step))

    def maybe_record(self, step: int) -> None:
        if not self.due(step) or self.probe is None:
            return
        rows = dynamics_rows(self.model, self.probe, step, self.cfg.groups)
        self.run.append_dynamics(rows)
        if self.mirror is not None:
            self.mirror(rows)

    def readout(self, title: str):
        """Phase read-out (saved through `RunDir.write_phases`) and plots of the recorded rows, or None when none were recorded."""
        if not self.enabled:
            return None
        from .readout import write_readout

        return write_readout(self.run, self.run.read_dynamics(), self.cfg.smoothing, title=title)
