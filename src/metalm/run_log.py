"""What a run writes as it goes: `metrics.jsonl` (always), `status.json`, and optional
TensorBoard / W&B (offline) loggers receiving the same rows.

Files are append-only JSON lines, so readers (the live view, reports) can follow them; on resume
the rows after the restored checkpoint are dropped so the file reads as if never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError

METRICS = "metrics.jsonl"
STATUS = "status.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file ([] when missing); an undecodable line (the half-written last line
    of a killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_after(path: Path, step: int) -> None:
    """Keep only complete rows with `step` ≤ the restored checkpoint's step (atomically)."""
    if not path.is_file():
        return
    keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Appends metrics rows and mirrors scalars to the optional loggers (rank 0 only)."""

    def __init__(self, run_dir: Path, cfg, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        self.status_written = 0.0
        if not enabled:
            return
        self.file = open(run_dir / METRICS, "a", encoding="utf-8")
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("run.tensorboard: the tensorboard package is not installed (pip install 'metalm[tensorboard]')") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if cfg.run.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("run.wandb: the wandb package is not installed (pip install 'metalm[wandb]')") from None
            self.wandb = wandb.init(project="metalm", name=cfg.run.name, dir=str(run_dir), mode="offline",
                                    config=cfg.to_dict(), resume="allow", id=cfg.run.name)

    def row(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {k: _clean(v) for k, v in row.items()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        step = row["step"]
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def dynamics(self, rows: list[dict], history_path: Path) -> None:
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
        history = read_jsonl(history_path)
        for group, key in (("activations", "erank"), ("attention", "entropy")):
            image = heatmap_image(history, group, key)
            if image is not None:
                self.tb.add_image(f"dynamics/{group}_{key}_heatmap", image, step, dataformats="HWC")

    def status(self, state: str, step: int, total_steps: int, **extra: Any) -> None:
        if self.enabled:
            self.status_written = time.time()
            write_json_atomic(self.run_dir / STATUS, {"state": state, "step": step, "total_steps": total_steps,
                                                     "updated": time.time(), "pid": os.getpid(), **extra})

    def close(self) -> None:
        if not self.enabled:
            return
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

    from .watch.heatmap import heatmap_matrix

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


def read_status(run_dir: Path) -> dict | None:
    path = run_dir / STATUS
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
