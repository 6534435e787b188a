"""In-memory copies of a run's metrics and dynamics rows, grown incrementally.

Metrics are kept column-wise in `array('d')` (NaN where a row lacks a key), which holds several
hundred thousand rows in a few tens of MB and lets a curve be cut out and downsampled with numpy.
Both follow "the latest write wins" for resumed runs. In metrics, a row whose step is below the
last step seen means the trainer went back to a checkpoint and re-logs from there, so the rows
from that step on are dropped before it is added (and the store's generation changes, telling
clients that their copy is no longer a prefix of ours). Dynamics rows are kept as written -
post-hoc analysis of checkpoints may append them in any step order - and `heatmap_matrix` lets
the later of two rows for the same cell win.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from metalm.watch.downsample import minmax_downsample

X_KEYS = ("step", "tokens", "flops", "time")
META_SHARE = "meta_share"  # derived: share of the steps so far that were meta steps


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _json_list(values: np.ndarray) -> list[float | None]:
    """Plain JSON numbers (ints where exact) with null for NaN/inf, which JSON cannot carry."""
    out: list[float | None] = []
    for v in values.tolist():
        if not math.isfinite(v):
            out.append(None)
        elif v.is_integer() and abs(v) < 2**53:
            out.append(int(v))
        else:
            out.append(v)
    return out


class MetricsStore:
    """Column store of a run's metrics rows."""

    def __init__(self) -> None:
        self.generation = 0
        self._empty()

    def reset(self) -> None:
        """Forget every row (the file was truncated or replaced)."""
        self._empty()
        self.generation += 1

    def _empty(self) -> None:
        self.columns: dict[str, array] = {key: array("d") for key in X_KEYS}
        self.columns[META_SHARE] = array("d")
        self._meta_counts = array("q")  # cumulative number of meta rows, per row
        self._kind_counts = array("q")  # cumulative number of rows with a step_kind, per row
        self.n = 0

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            step = _number(row.get("step"))
            if step is None:
                continue
            if self.n and step < self.columns["step"][-1]:
                self._truncate(bisect.bisect_left(self.columns["step"], step))
            self._append(row)

    def _truncate(self, n: int) -> None:
        for column in self.columns.values():
            del column[n:]
        del self._meta_counts[n:]
        del self._kind_counts[n:]
        self.n = n
        self.generation += 1

    def _append(self, row: Mapping[str, Any]) -> None:
        nan = math.nan
        seen = set()
        for key, value in row.items():
            number = _number(value)
            if number is None or key == META_SHARE:
                continue
            column = self.columns.get(key)
            if column is None:
                column = self.columns[key] = array("d", [nan]) * self.n
            column.append(number)
            seen.add(key)
        for key, column in self.columns.items():
            if key not in seen and key != META_SHARE:
                column.append(nan)
        kind = row.get("step_kind")
        previous_meta = self._meta_counts[-1] if self.n else 0
        previous_kinds = self._kind_counts[-1] if self.n else 0
        # The step-0 evaluation row has no step_kind and does not count as a step.
        self._meta_counts.append(previous_meta + (kind == "meta"))
        self._kind_counts.append(previous_kinds + (kind in ("ar", "meta")))
        kinds = self._kind_counts[-1]
        self.columns[META_SHARE].append(self._meta_counts[-1] / kinds if kinds else nan)
        self.n += 1

    def last(self, key: str) -> float | None:
        """The last finite value of a column (None when there is none)."""
        column = self.columns.get(key)
        if column is None:
            return None
        for value in reversed(column):
            if math.isfinite(value):
                return value
        return None

    def value_keys(self) -> list[str]:
        return [key for key in self.columns if key not in X_KEYS]

    def _window(self, key: str, start: int) -> np.ndarray:
        """A numpy copy of rows [start, n) of a column (a view would pin the array's buffer and
        make the next append fail)."""
        return np.frombuffer(self.columns[key][start : self.n], dtype=float)

    def series(self, start: int, max_points: int) -> dict[str, dict[str, list]]:
        """For every value column, the rows in [start, n) where it is set, downsampled to at most
        `max_points`, with all four x columns: {key: {"step": [...], "tokens": [...], "flops":
        [...], "time": [...], "y": [...]}}. Keys without a value in that range are left out."""
        out: dict[str, dict[str, list]] = {}
        if start >= self.n:
            return out
        x = {key: self._window(key, start) for key in X_KEYS}
        for key in self.value_keys():
            y = self._window(key, start)
            present = np.flatnonzero(np.isfinite(y))
            if len(present) == 0:
                continue
            keep = present[minmax_downsample(y[present], max_points)]
            series = {name: _json_list(column[keep]) for name, column in x.items()}
            series["y"] = _json_list(y[keep])
            out[key] = series
        return out

    def recent_rate(self, window: int = 20) -> dict[str, float | None]:
        """Seconds per step and tokens per second over the last `window` training rows, from the
        trainer's own clock (so a paused watcher does not distort them)."""
        rate: dict[str, float | None] = {"seconds_per_step": None, "tokens_per_s": None, "seconds_per_row": None}
        time = self.columns["time"]
        rows: list[int] = []
        for i in range(self.n - 1, -1, -1):
            if math.isfinite(time[i]):
                rows.append(i)
                if len(rows) > window:
                    break
        if len(rows) < 2:
            return rate
        last, first = rows[0], rows[-1]
        dt = time[last] - time[first]
        if dt <= 0:
            return rate
        steps = self.columns["step"][last] - self.columns["step"][first]
        tokens = self.columns["tokens"][last] - self.columns["tokens"][first]
        if steps > 0:
            rate["seconds_per_step"] = dt / steps
        if math.isfinite(tokens) and tokens > 0:
            rate["tokens_per_s"] = tokens / dt
        rate["seconds_per_row"] = dt / (len(rows) - 1)
        return rate


class DynamicsStore:
    """A run's dynamics rows, minus their `shape` (not shown), in file order."""

    KEPT = ("step", "group", "layer", "component", "head", "erank", "per", "entropy", "entropy_norm")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.generation = 0

    def reset(self) -> None:
        """Forget every row (the file was truncated or replaced)."""
        self.rows = []
        self.generation += 1

    @property
    def revision(self) -> tuple[int, int]:
        """Changes whenever the rows do; clients re-request derived views when it does."""
        return (self.generation, len(self.rows))

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            step = _number(row.get("step"))
            if step is None or not isinstance(row.get("group"), str):
                continue
            self.rows.append({key: row[key] for key in self.KEPT if key in row})
