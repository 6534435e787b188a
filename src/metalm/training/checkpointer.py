"""Saving and restoring everything an exact resume needs: weights, the meta-learned extras,
optimizer state, the training state and the RNG states."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .. import checkpoint as ckpt
from ..run_dir import RunDir
from .cadence import Cadence

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves every `train.save_every` steps and at the last step (rank 0), keeps the newest
    `train.keep_checkpoints`, and restores the latest checkpoint into the given objects."""

    def __init__(self, run: RunDir, cadence: Cadence, keep: int, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, state, meta=None, device: torch.device | None = None,
                 is_main: bool = True):
        self.run, self.cadence, self.keep = run, cadence, keep
        self.model, self.optimizer, self.state, self.meta = model, optimizer, state, meta
        self.device = device or torch.device("cpu")
        self.is_main = is_main

    def due(self, step: int) -> bool:
        return self.cadence.due(step)

    def maybe_save(self, step: int, after_save: Callable[[], None] | None = None) -> bool:
        if not self.due(step):
            return False
        if self.is_main:
            self.save()
            if after_save is not None:
                after_save()
        return True

    def _rng(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def save(self) -> None:
        payload = {"optimizer": self.optimizer.state_dict(), "rng": self._rng(), "counters": self.state.state_dict()}
        extra = self.meta.state_dict() if self.meta is not None else None
        ckpt.save_checkpoint(self.run, self.state.step, self.model, payload, extra)
        ckpt.prune(self.run, self.keep)

    def restore(self) -> int | None:
        """Load the latest checkpoint (if any); returns its step."""
        latest = self.run.latest_checkpoint()
        if latest is None:
            return None
        step, path = latest
        ckpt.load_weights(self.model, path)
        if self.meta is not None:
            self.meta.load_state_dict(ckpt.load_extra(path))
        payload = ckpt.load_state(path)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state.load_state_dict(payload["counters"])
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in payload["rng"]:
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
        return step
