"""Phase read-out file and figures of a run's dynamics rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..run_dir import RunDir
from .phases import phase_readout
from .plots import plot_run


@dataclass
class Readout:
    """What `write_readout` produced."""

    phases: dict
    phases_path: Path | None  # None: computed but not written (a read-only run directory)
    plots: list[Path] = field(default_factory=list)


def write_readout(run_dir: RunDir | str | Path, rows: list[dict], smoothing: int = 5, *, posthoc: bool = False,
                  title: str | None = None) -> Readout:
    """Write the phase read-out (`RunDir.write_phases`) and the figures (`plots/`, or `plots/posthoc/`)
    of a run."""
    run = RunDir.of(run_dir)
    phases = phase_readout(rows, smoothing)
    path = run.write_phases(phases, posthoc)
    plots = plot_run(rows, run.plots_dir(posthoc), title=run.path.name if title is None else title)
    return Readout(phases, path, plots)
