"""The metrics rows of a run: always appended to the run's metrics file (`RunDir.metrics_path`),
mirrored to the optional TensorBoard and W&B loggers, and the status heartbeat.

Rows are append-only JSON lines, so readers (the live view, reports) can follow them; on resume
the rows after the restored checkpoint are dropped (`RunDir.truncate_rows`) so the file reads as
if never interrupted. The metrics file is opened at the first row, so a RunLog may exist (to record
the run's state) before that truncation.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from typing import IO, Any

from .atomic import write_text_atomic
from .errors import ConfigError
from .run_dir import RunDir

STATUS_HEARTBEAT_S = 10.0  # how often a running run refreshes its status (the live view's "running")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def wandb_run_id(run: RunDir) -> str:
    """A W&B run id unique to this run directory, created once and kept in it (so a resumed run —
    even one whose directory moved — continues the same W&B run, and two experiments whose arms
    share a name never write into one)."""
    path = run.path / "wandb" / "metalm-run-id"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = f"{run.path.name}-{uuid.uuid4().hex[:12]}"
    write_text_atomic(path, run_id)
    return run_id


def check_loggers(cfg) -> None:
    """Refuse an optional logger whose package is missing before anything is written."""
    import importlib.util

    for key, package, extra in (("tensorboard", "tensorboard", "tensorboard"), ("wandb", "wandb", "wandb")):
        if getattr(cfg.run, key) and importlib.util.find_spec(package) is None:
            raise ConfigError(f"run.{key}: the {package} package is not installed (pip install 'metalm[{extra}]')")


class RunLog:
    """Appends metrics rows and mirrors scalars to the optional loggers (rank 0 only)."""

    def __init__(self, run: RunDir, cfg, enabled: bool = True):
        self.run = run
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        self.total_steps = cfg.train.steps
        self.status_written = 0.0
        self.status_extra: dict[str, Any] = {}  # fields every later status carries (e.g. metrics_gaps)
        self.file: IO[str] | None = None
        if not enabled:
            return
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard: the tensorboard package is not installed (pip install 'metalm[tensorboard]')") from None
            self.tb = SummaryWriter(str(run.tensorboard_dir))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.wandb: the wandb package is not installed (pip install 'metalm[wandb]')") from None
            # Online or offline as the environment says (WANDB_MODE); nothing is forced here.
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "metalm"), name=cfg.run.name,
                                    dir=str(run.path), config=cfg.to_dict(), resume="allow", id=wandb_run_id(run))

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _clean(v) for k, v in row.items()}
        if self.file is None:
            self.file = open(self.run.metrics_path, "a", encoding="utf-8")
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        step = row["step"]
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def dynamics(self, rows: list[dict]) -> None:
        """Mirror learning-dynamics rows to TensorBoard: a scalar per layer and component (per head
        for attention), and the layer × step heatmaps of the whole run so far as images."""
        if self.tb is None or not rows:
            return
        step = rows[0]["step"]
        for r in rows:
            if r["group"] == "attention":
                self.tb.add_scalar(f"dynamics/attention_entropy/layer{r['layer']}/head{r['head']}", r["entropy"], step)
            elif r.get("erank") is not None:
                self.tb.add_scalar(f"dynamics/{r['group']}_erank/layer{r['layer']}/{r['component']}", r["erank"], step)
        history = self.run.read_dynamics()
        for group, key in (("activations", "erank"), ("attention", "entropy")):
            image = heatmap_image(history, group, key)
            if image is not None:
                self.tb.add_image(f"dynamics/{group}_{key}_heatmap", image, step, dataformats="HWC")

    def status(self, state: str, step: int, **extra: Any) -> None:
        if self.enabled:
            self.status_written = time.time()
            self.run.write_status({"state": state, "step": step, "total_steps": self.total_steps,
                                   "updated": self.status_written, "pid": os.getpid(), **self.status_extra, **extra})

    def heartbeat(self, step: int) -> None:
        """Refresh "running" every few seconds, so the live view can tell a killed run from a slow one."""
        if time.time() - self.status_written > STATUS_HEARTBEAT_S:
            self.status("running", step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def heatmap_image(rows: list[dict], group: str, value_key: str):
    """An RGB array of the layer × step heatmap (the live view's matrix), or None without rows."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .dynamics.heatmap import heatmap_matrix

    layers, steps, matrix = heatmap_matrix(rows, group, value_key)
    if not steps:
        return None
    fig = Figure(figsize=(6, 3), dpi=80)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, aspect="auto", origin="lower", cmap="viridis",
                   extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, len(layers) - 0.5))
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("step")
    ax.set_ylabel("layer")
    ax.set_title(f"{group} {value_key}")
    fig.colorbar(im, ax=ax)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
