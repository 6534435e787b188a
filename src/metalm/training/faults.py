"""Fault injection: two hooks the training loop calls in every optimizer step, for tests and drills.

- `before_step(step)`: before the step's gradients are computed (raise KeyboardInterrupt to stop
  the run as Ctrl-C would);
- `after_gradients(step, model)`: once the step's gradients are assembled, before the optimizer
  applies them (e.g. write a NaN into a gradient to exercise `train.on_nonfinite`).

Both are None (no fault) unless set; they are process-local. Tests set them with
`monkeypatch.setattr(metalm.training.faults, "before_step", hook)`, which restores them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

before_step: Callable[[int], None] | None = None
after_gradients: Callable[[int, torch.nn.Module], None] | None = None
