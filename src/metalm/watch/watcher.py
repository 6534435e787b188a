"""The set of runs one `metalm watch` follows, refreshed on demand and at most once per interval.

Files are read when a client asks for an update, never more often than half the poll interval
however many pages are open, and never when nobody watches - so watching cannot slow a run down
beyond a few stat() calls. Runs are rediscovered at each refresh, so an experiment's later runs
appear and deleted ones are shown as gone. A watched experiment directory's `summary.json`, once its
report is written, is read through `ExperimentSummary` and its verdict shown above the runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metalm.config_diff import differing_keys, flatten
from metalm.errors import MetalmError
from metalm.experiment.summary import SUMMARY_FILE, ExperimentSummary
from metalm.watch.discover import discover_runs, display_name
from metalm.watch.run_state import Cursor, DynamicsSelection, RunState, json_safe
from metalm.watch.tail import FileSnapshot


def parse_summary(data: bytes) -> ExperimentSummary:
    """An experiment's summary.json; anything malformed raises (the snapshot keeps its last value)."""
    return ExperimentSummary.from_json(json.loads(data))


def experiment_answer(root: Path, summary: ExperimentSummary) -> dict[str, Any]:
    """What the page shows of a finished (or partial) experiment report: where it is, the verdict,
    the runs it lacked, and each arm's role and mean final validation loss."""
    return {"name": root.name, "report": str(root / "report.md"), "verdict": summary.verdict,
            "unfinished": summary.unfinished,
            "arms": [{"arm": arm, "role": e.role, "seeds": len(e.runs), "final_val_loss": json_safe(e.final_val_loss.mean)}
                     for arm, e in summary.arms.items()]}


def differences_table(configs: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted config keys whose values differ between runs (what tells the runs apart):
    {"keys": [...], "values": {run_name: [value-or-None per key]}}. Runs without a config are
    left out; with fewer than two configs there is nothing to compare."""
    flat = {name: flatten(config) for name, config in configs.items() if isinstance(config, dict)}
    if len(flat) < 2:
        return {"keys": [], "values": {}}
    keys = differing_keys(configs)
    values = {name: [json_safe(flat_values.get(key)) for key in keys] for name, flat_values in flat.items()}
    return {"keys": keys, "values": values}


class Watcher:
    """The runs under the watched paths and the update answers built from them."""

    def __init__(
        self,
        paths: Sequence[Path],
        poll_interval: float = 1.0,
        stale_after: float = 120.0,
        max_points: int = 2000,
        max_columns: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not paths:
            raise MetalmError("watch: give at least one run or experiment directory")
        self.roots = [Path(p).expanduser().resolve() for p in paths]
        for root in self.roots:
            if not root.is_dir():
                raise MetalmError(f"watch: {root} is not a directory (expected a run or experiment directory)")
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self.max_points = max_points
        self.max_columns = max_columns
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[Path, RunState] = {}
        self._summaries = {root: FileSnapshot(root / SUMMARY_FILE, parse_summary, root) for root in self.roots}
        self._listed: list[Path] = []
        self._last_refresh = -float("inf")

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            self._refresh_locked(force)

    def _refresh_locked(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_refresh < self.poll_interval / 2:
            return
        self._last_refresh = now
        listed: list[Path] = []
        several = len(self.roots) > 1
        for root in self.roots:
            for run in discover_runs(root):
                if run not in self._runs:
                    self._runs[run] = RunState(run, len(self._runs), display_name(run, root, several))
                if run not in listed:
                    listed.append(run)
        # Runs seen before but no longer found stay listed (as gone) if their directory vanished;
        # a watched path that was a placeholder and turned into an experiment is dropped.
        for run in self._listed:
            if run not in listed and not run.is_dir():
                listed.append(run)
        self._listed = listed
        for run in listed:
            self._runs[run].refresh()
        for snapshot in self._summaries.values():
            snapshot.poll()

    def update(self, cursors: Mapping[int, Cursor], selection: DynamicsSelection) -> dict[str, Any]:
        """The update answer for a client holding `cursors` (run id -> cursor)."""
        with self._lock:
            self._refresh_locked(force=False)
            now = self._clock()
            runs = [self._runs[path] for path in self._listed]
            answers = [
                run.update(
                    cursors.get(run.id, Cursor()),
                    selection,
                    now,
                    self.stale_after,
                    self.max_points,
                    self.max_columns,
                )
                for run in runs
            ]
            differences = differences_table({run.name: run.config_file.value for run in runs})
            experiments = [experiment_answer(root, s.value) for root, s in self._summaries.items() if s.value is not None]
        return {
            "time": now,
            "poll_interval": self.poll_interval,
            "max_points": self.max_points,
            "runs": answers,
            "config_differences": differences,
            "experiments": experiments,
        }
