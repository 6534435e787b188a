"""Everything the live view knows about one run directory, and the JSON it sends about it.

A `RunState` follows the run's files incrementally (see `tail`) and answers a client's update
request relative to what that client already holds (its cursor): only the metric rows it lacks,
the dynamics views only when they changed, config and phases only when they changed. When the
client's copy is not a prefix of ours any more (file replaced, run resumed from an earlier step)
or would need too many new points, it gets a fresh downsampled copy instead (`"reset": true`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metalm.run_dir import RunDir
from metalm.watch.downsample import even_columns
from metalm.dynamics.heatmap import ATTENTION_GROUP, heatmap_matrix, members
from metalm.watch.phases import component_phase_table, phase_table
from metalm.watch.store import DynamicsStore, MetricsStore
from metalm.watch.tail import FileSnapshot, JsonlTail, parse_json, parse_yaml

RANK_GROUPS = ("activations", "weights", "gradients")
RANK_VALUES = ("erank", "per")
ENTROPY_VALUES = ("entropy_norm", "entropy")


@dataclass(frozen=True)
class Cursor:
    """What a client already holds of one run."""

    generation: int = -1
    n: int = 0
    dynamics: str = ""
    info: int = -1


@dataclass(frozen=True)
class DynamicsSelection:
    """Which effective-rank view the page shows (the attention view is always mean over heads)."""

    group: str = "activations"
    component: str = ""  # "" = mean over the layer's components
    value: str = "erank"
    attention_value: str = "entropy_norm"

    @classmethod
    def from_json(cls, data: Any) -> DynamicsSelection:
        data = data if isinstance(data, dict) else {}
        group = data.get("group") if data.get("group") in RANK_GROUPS else cls.group
        value = data.get("value") if data.get("value") in RANK_VALUES else cls.value
        attention = data.get("attention_value")
        attention = attention if attention in ENTROPY_VALUES else cls.attention_value
        component = data.get("component")
        component = component if isinstance(component, str) and len(component) <= 64 else ""
        return cls(group, component, value, attention)

    def key(self) -> str:
        return f"{self.group}/{self.component}/{self.value}/{self.attention_value}"


def json_safe(value: Any) -> Any:
    """Plain JSON for the page: YAML dates and the like become text, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _matrix_view(layers: list, steps: list[int], matrix: np.ndarray, max_columns: int) -> dict[str, Any]:
    keep = even_columns(len(steps), max_columns)
    z = [[None if not math.isfinite(v) else float(v) for v in row] for row in matrix[:, keep].tolist()]
    return {"layers": [str(layer) for layer in layers], "steps": [steps[j] for j in keep.tolist()], "z": z}


class RunState:
    """The watched copy of one run directory."""

    def __init__(self, path: Path, run_id: int, name: str) -> None:
        self.path = Path(path)
        self.id = run_id
        self.name = name
        self.metrics = MetricsStore()
        self.dynamics = DynamicsStore()
        run = RunDir(self.path)
        within = Path(os.path.realpath(self.path))  # files are read only from the run directory itself
        self._metrics_tail = JsonlTail(run.metrics_path, within)
        self._dynamics_tail = JsonlTail(run.dynamics_path(), within)
        self.status_file = FileSnapshot(run.status_path, parse_json, within)
        self.phases_file = FileSnapshot(run.phases_path(), parse_json, within)
        self.config_file = FileSnapshot(run.config_path, parse_yaml, within)
        self.gone = False
        self._view_cache: tuple[str, dict[str, Any]] | None = None

    def refresh(self) -> None:
        """Read whatever the run wrote since the last refresh."""
        if not self.path.is_dir():
            self.gone = True  # keep the rows already read: the page shows them, marked gone
            return
        self.gone = False
        rows, restarted = self._metrics_tail.poll()
        if restarted:
            self.metrics.reset()
        self.metrics.add(rows)
        rows, restarted = self._dynamics_tail.poll()
        if restarted:
            self.dynamics.reset()
        self.dynamics.add(rows)
        for snapshot in (self.status_file, self.phases_file, self.config_file):
            snapshot.poll()

    @property
    def info_revision(self) -> int:
        return self.phases_file.version * 1_000_003 + self.config_file.version

    def status(self, now: float, stale_after: float) -> dict[str, Any]:
        """State (waiting / running / stale / finished / failed / stopped / gone), step, speed, ETA.

        "stale": the status file says running but neither it nor the metrics file changed for longer
        than `stale_after` seconds (or five logging intervals, if those are longer) - the process was
        most likely killed. Without a status file the same test tells "running" from "stopped".
        """
        status = self.status_file.value if isinstance(self.status_file.value, dict) else {}
        rate = self.metrics.recent_rate()
        updated = status.get("updated")
        activity = [t for t in (updated, self._metrics_tail.mtime) if isinstance(t, (int, float))]
        last_activity = max(activity) if activity else None
        age = now - last_activity if last_activity is not None else None
        limit = max(stale_after, 5 * (rate["seconds_per_row"] or 0.0))
        recent = age is not None and age <= limit
        declared = status.get("state")
        if self.gone:
            state = "gone"
        elif declared in ("finished", "failed"):
            state = declared
        elif self.metrics.n == 0 and (declared == "running" or not declared):
            state = "waiting"
        elif declared == "running" or not declared:
            state = "running" if recent else ("stale" if declared == "running" else "stopped")
        else:
            state = str(declared)
        step = status.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            step = self.metrics.last("step")
        step = int(step) if step is not None else None
        total = status.get("total_steps")
        total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) else None
        eta = None
        if state == "running" and total is not None and step is not None and rate["seconds_per_step"]:
            eta = max(0.0, (total - step) * rate["seconds_per_step"])
        return {
            "state": state,
            "step": step,
            "total_steps": total,
            "tokens": self.metrics.last("tokens"),
            "tokens_per_s": rate["tokens_per_s"],
            "eta_s": eta,
            "age_s": age,
        }

    def _dynamics_key(self, selection: DynamicsSelection, max_columns: int) -> str:
        """Names one dynamics view of one state of the rows: clients echo it back."""
        return f"{self.dynamics.revision}|{selection.key()}|{max_columns}"

    def dynamics_view(self, selection: DynamicsSelection, max_columns: int) -> dict[str, Any]:
        """Layer x step matrices for the selected effective-rank view and for head entropy."""
        key = self._dynamics_key(selection, max_columns)
        if self._view_cache is not None and self._view_cache[0] == key:
            return self._view_cache[1]
        rows = self.dynamics.rows
        component = selection.component or None
        rank = heatmap_matrix(rows, selection.group, selection.value, component=component)
        entropy = heatmap_matrix(rows, ATTENTION_GROUP, selection.attention_value)
        view = {
            "key": key,
            "groups": sorted({row["group"] for row in rows}),
            "components": [str(m) for m in members(rows, selection.group)],
            "rank": _matrix_view(*rank, max_columns),
            "entropy": _matrix_view(*entropy, max_columns),
        }
        self._view_cache = (key, view)
        return view

    def update(
        self,
        cursor: Cursor,
        selection: DynamicsSelection,
        now: float,
        stale_after: float,
        max_points: int,
        max_columns: int,
    ) -> dict[str, Any]:
        """The JSON for this run that brings a client holding `cursor` up to date."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "path": str(self.path)}
        out.update(self.status(now, stale_after))
        metrics = self.metrics
        incremental = (
            cursor.generation == metrics.generation
            and cursor.n <= metrics.n
            and metrics.n - cursor.n <= max_points // 2
        )
        start = cursor.n if incremental else 0
        out["metrics"] = {
            "generation": metrics.generation,
            "n": metrics.n,
            "reset": not incremental,
            "series": metrics.series(start, max_points),
        }
        if self._dynamics_key(selection, max_columns) != cursor.dynamics:
            out["dynamics"] = self.dynamics_view(selection, max_columns)
        if cursor.info != self.info_revision:
            phases = json_safe(self.phases_file.value)
            out["info"] = {
                "revision": self.info_revision,
                "config": json_safe(self.config_file.value),
                "phases": phases,
                "phase_table": phase_table(phases) if phases is not None else None,
                "component_phase_table": component_phase_table(phases) if phases is not None else None,
            }
        return out
