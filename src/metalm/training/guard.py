"""`train.on_nonfinite`: what a step with a non-finite loss or gradient norm does, decided before the
optimizer applies it (one host sync per step, for this check only).

`stop` ends the run (DivergedError: status "diverged", no checkpoint written from the bad step);
`skip` drops the step — gradients cleared, no optimizer update, the step counter and the learning
rate schedule move on — and counts it (`skipped_steps` in the rows), stopping the run when more than
`train.max_skipped_steps` steps in a row are non-finite.
"""

from __future__ import annotations

import torch

from ..errors import DivergedError
from .state import TrainState


class NonFiniteGuard:
    def __init__(self, policy: str, max_skipped: int, state: TrainState):
        self.policy, self.max_skipped, self.state = policy, max_skipped, state

    @staticmethod
    def finite(grad_norm: torch.Tensor) -> bool:
        """Whether the step's total gradient norm is finite (a non-finite loss makes it non-finite)."""
        return bool(torch.isfinite(grad_norm).item())

    def applied(self) -> None:
        self.state.skipped_in_a_row = 0

    def nonfinite(self, step: int, grad_norm: torch.Tensor) -> None:
        """Account for 0-based step `step` being non-finite: DivergedError under `stop`, or once more
        than `max_skipped` steps in a row were skipped; otherwise the step counts as skipped."""
        what = f"gradient norm {float(grad_norm)}"
        if self.policy == "skip" and self.state.skipped_in_a_row < self.max_skipped:
            self.state.skipped_steps += 1
            self.state.skipped_in_a_row += 1
            return
        if self.policy == "skip":
            raise DivergedError(f"training diverged at step {step + 1}: {self.max_skipped} steps in a row were skipped "
                                f"and this one is non-finite too ({what}); lower train.lr")
        raise DivergedError(f"training diverged at step {step + 1}: non-finite {what}; no checkpoint was written "
                            "from it (lower train.lr, or set train.on_nonfinite=skip to drop such steps)")

    def row_fields(self) -> dict:
        return {"skipped_steps": self.state.skipped_steps} if self.policy == "skip" else {}
