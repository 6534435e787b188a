"""Phase read-out file and figures of a run's dynamics rows."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .phases import phase_readout
from .plots import plot_run


@dataclass
class Readout:
    """What `write_readout` produced."""

    phases: dict
    phases_path: Path
    plots: list[Path] = field(default_factory=list)


def write_readout(
    run_dir: str | Path,
    rows: list[dict],
    smoothing: int = 5,
    *,
    phases_name: str = "phases.json",
    plots_dir: str = "plots",
    title: str | None = None,
) -> Readout:
    """Write `RUN/<phases_name>` (the phase read-out) and the figures into `RUN/<plots_dir>/`."""
    run = Path(run_dir)
    phases = phase_readout(rows, smoothing)
    path = run / phases_name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(phases, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
    plots = plot_run(rows, run / plots_dir, title=run.name if title is None else title)
    return Readout(phases, path, plots)
