"""`train.on_nonfinite`: what a step with a non-finite loss or gradient norm does.

`stop` ends the run (DivergedError: status "diverged", no checkpoint written from the bad step);
`skip` drops the step — gradients cleared, no optimizer update, the step counter and the learning
rate schedule move on — and counts it (`skipped_steps` in the rows), stopping the run when more than
`train.max_skipped_steps` steps in a row are non-finite.

Two ways to decide, with the same outcome:

- immediate (CPU): the gradient norm is read on the host every step (a sync is free there) and the
  optimizer step is applied or not;
- deferred (CUDA, `deferred=True`): nothing is read on the host per step. The decision is a device
  tensor handed to the fused AdamW as `optimizer.found_inf` — the mechanism `torch.amp.GradScaler`
  uses: where it is 1 the kernel leaves parameters and moments untouched and the step counters are
  reverted, exactly as if `optimizer.step()` had not been called. The counters (steps skipped, the
  current run of them, whether and where the run stopped) live on the device and are read by
  `check()` at the loop's sync points — a logged row, an evaluation, a checkpoint, a dynamics probe
  — which raises the same DivergedError as the immediate check, before anything is written. Once the
  stop condition is met every later step is dropped too ("stopped" is sticky), so the weights, the
  optimizer state and the counters at the error are those of the immediate check.
"""

from __future__ import annotations

import torch

from ..errors import DivergedError
from .state import TrainState

# Slots of the deferred counters (one float64 device tensor, read in one transfer).
SKIPPED, IN_A_ROW, STOPPED, STOP_STEP, STOP_NORM = range(5)


class NonFiniteGuard:
    def __init__(self, policy: str, max_skipped: int, state: TrainState, deferred: bool = False):
        """`deferred`: decide on the device (needs an optimizer that honours `found_inf`: fused AdamW)."""
        self.policy, self.max_skipped, self.state, self.deferred = policy, max_skipped, state, deferred
        self.counters: torch.Tensor | None = None  # deferred: created from `state` at the first step

    def step(self, optimizer: torch.optim.Optimizer, step: int, grad_norm: torch.Tensor) -> None:
        """Apply `optimizer` for 0-based step `step` unless its gradient norm is non-finite."""
        if self.deferred:
            self._deferred_step(optimizer, step, grad_norm)
        elif torch.isfinite(grad_norm).item():  # a non-finite loss makes the norm non-finite too
            optimizer.step()
            self.state.skipped_in_a_row = 0
        else:
            self._nonfinite(step, grad_norm)

    # -- immediate -------------------------------------------------------------------------------
    def _nonfinite(self, step: int, grad_norm: torch.Tensor) -> None:
        """Account for 0-based step `step` being non-finite: DivergedError under `stop`, or once more
        than `max_skipped` steps in a row were skipped; otherwise the step counts as skipped."""
        if self.policy == "skip" and self.state.skipped_in_a_row < self.max_skipped:
            self.state.skipped_steps += 1
            self.state.skipped_in_a_row += 1
            return
        raise self.diverged(step, float(grad_norm))

    def diverged(self, step: int, norm: float) -> DivergedError:
        what = f"gradient norm {norm}"
        if self.policy == "skip":
            return DivergedError(f"training diverged at step {step + 1}: {self.max_skipped} steps in a row were "
                                 f"skipped and this one is non-finite too ({what}); lower train.lr")
        return DivergedError(f"training diverged at step {step + 1}: non-finite {what}; no checkpoint was written "
                             "from it (lower train.lr, or set train.on_nonfinite=skip to drop such steps)")

    # -- deferred --------------------------------------------------------------------------------
    def _deferred_step(self, optimizer: torch.optim.Optimizer, step: int, grad_norm: torch.Tensor) -> None:
        """The immediate rules as tensor operations (no host sync); `optimizer.found_inf` drops the update."""
        if self.counters is None:
            device = optimizer.param_groups[0]["params"][0].device
            self.counters = torch.tensor([self.state.skipped_steps, self.state.skipped_in_a_row, 0.0, -1.0, 0.0],
                                         dtype=torch.float64, device=device)
        c = self.counters
        grad_norm = grad_norm.to(c.device, non_blocking=True)  # a step without gradients has a CPU norm
        bad = ~torch.isfinite(grad_norm)
        stopped = c[STOPPED] > 0
        limit = c[IN_A_ROW] >= self.max_skipped if self.policy == "skip" else torch.ones_like(bad)
        stop_now = bad & limit & ~stopped
        now_stopped = stopped | stop_now
        counted = bad & ~now_stopped  # skipped and counted (the stopping step and later ones are not)
        in_a_row = torch.where(now_stopped, c[IN_A_ROW], torch.where(bad, c[IN_A_ROW] + 1, 0.0))
        c.copy_(torch.stack([
            c[SKIPPED] + counted.double(), in_a_row, now_stopped.double(),
            torch.where(stop_now, float(step), c[STOP_STEP]),
            torch.where(stop_now, grad_norm.detach().double(), c[STOP_NORM]),
        ]))
        optimizer.found_inf = (bad | now_stopped).float()  # type: ignore[attr-defined]  # fused AdamW reads it
        optimizer.step()

    def check(self) -> None:
        """Deferred: read the counters (one host sync) into the training state; DivergedError if the
        run stopped since the last check. Immediate: nothing to do."""
        if self.counters is None:
            return
        skipped, in_a_row, stopped, stop_step, stop_norm = self.counters.tolist()
        self.state.skipped_steps, self.state.skipped_in_a_row = int(skipped), int(in_a_row)
        if stopped:
            raise self.diverged(int(stop_step), stop_norm)

    def row_fields(self) -> dict:
        return {"skipped_steps": self.state.skipped_steps} if self.policy == "skip" else {}
