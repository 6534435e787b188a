"""Saving and restoring everything an exact resume needs: weights, the meta-learned extras,
optimizer state, the training state and the RNG states.

A checkpoint is never written with non-finite weights. Restoring takes the newest checkpoint that
is intact (its checksums) and loads; a damaged newer one is skipped with a warning naming the fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .. import checkpoint as ckpt
from ..checksums import checkpoint_problem
from ..errors import CheckpointError, ConfigError, DivergedError, MetalmError
from ..run_dir import CHECKPOINTS, RunDir
from .cadence import Cadence

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


FLAVOUR_KEYS = ("fused", "foreach")  # which AdamW implementation runs: a property of this run's device


def this_flavour(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """The saved optimizer state with the implementation flags of `optimizer` instead of the saved
    ones. `load_state_dict` restores every saved param-group key, so a checkpoint written on the CPU
    (foreach) and resumed on CUDA (fused AdamW, `found_inf` set by the guard) would take the foreach
    path and fail, and a CUDA checkpoint resumed on the CPU would keep the fused kernel and lose the
    CPU's bit-exact resume (`run.device` is an execution key: a run may move). Set before loading,
    so torch also places each `step` counter as this flavour needs it (fused: on the parameter's
    device)."""
    groups = saved.get("param_groups", [])
    if len(groups) != len(optimizer.param_groups):
        return saved  # load_state_dict reports the mismatch
    current = [{k: g[k] for k in FLAVOUR_KEYS if k in g} for g in optimizer.param_groups]
    return {**saved, "param_groups": [{**g, **flags} for g, flags in zip(groups, current)]}


class Checkpointer:
    """Saves every `train.save_every` steps and at the last step (rank 0), keeps the newest
    `train.keep_checkpoints`, and restores the latest checkpoint into the given objects."""

    def __init__(self, run: RunDir, cadence: Cadence, keep: int, model: PreTrainedModel,
                 optimizer: torch.optim.Optimizer, state, meta=None, device: torch.device | None = None,
                 is_main: bool = True, data_key: str | None = None):
        self.run, self.cadence, self.keep = run, cadence, keep
        self.data_key = data_key  # the token-cache key of the data trained on: recorded, and checked on restore
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
        if not self.weights_finite():
            raise DivergedError(f"the weights at step {self.state.step} are not finite; no checkpoint was written")
        payload = {"optimizer": self.optimizer.state_dict(), "rng": self._rng(), "counters": self.state.state_dict(),
                   "data_key": self.data_key}
        extra = self.meta.state_dict() if self.meta is not None else None
        ckpt.save_checkpoint(self.run, self.state.step, self.model, payload, extra)
        ckpt.prune(self.run, self.keep)

    def weights_finite(self) -> bool:
        """Whether every trained tensor (the optimizer's parameters) is finite (one host sync)."""
        tensors = [p for group in self.optimizer.param_groups for p in group["params"]]
        flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
        return bool(torch.stack(flags).all()) if flags else True

    def restore(self) -> int | None:
        """Load the newest usable checkpoint; returns its step (None without checkpoints). Each one
        that is damaged or fails to load is reported and the one before it tried; CheckpointError
        when none is usable (the run is not silently restarted)."""
        found = self.run.checkpoints()
        problems = []
        for step, path in reversed(found):
            problem = checkpoint_problem(path)
            if problem is None:
                try:
                    self._load(path)
                    return step
                except MetalmError:
                    raise
                except Exception as exc:  # a damaged or foreign file: torch, safetensors and key errors alike
                    problem = f"it does not load: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            log.warning("checkpoint %s is damaged (%s); trying the one before it", path, problem)
            problems.append(f"{path.name}: {problem}")
        if found:
            raise CheckpointError(f"no usable checkpoint in {self.run.path / CHECKPOINTS} "
                                  f"({'; '.join(problems[:2])}{' …' if len(problems) > 2 else ''})")
        return None

    def _load(self, path) -> None:
        payload = ckpt.load_state(path)
        saved_key = payload.get("data_key")
        if saved_key is not None and self.data_key is not None and saved_key != self.data_key:
            raise ConfigError(f"checkpoint {path} was trained on other data (token cache entry {saved_key}, now "
                              f"{self.data_key}); resume it on the data it started on or choose another run.dir")
        ckpt.load_weights(self.model, path)
        if self.meta is not None:
            self.meta.load_state_dict(ckpt.load_extra(path))
        self.optimizer.load_state_dict(this_flavour(payload["optimizer"], self.optimizer))
        self.state.load_state_dict(payload["counters"])
        torch.set_rng_state(payload["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in payload["rng"]:
            torch.cuda.set_rng_state(payload["rng"]["cuda"], self.device)
