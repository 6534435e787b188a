"""Comparing runs (DESIGN 2.6): cost to reach a target validation loss, speed-ups with confidence
intervals over seeds, and validation loss at equal compute.

Only the next-token validation loss on the fixed held-out batches is compared — never a training
loss that mixes meta and next-token terms.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
from scipy import stats

MEASURES = ("step", "tokens", "flops", "time")


def val_curve(rows: Sequence[dict]) -> dict[str, list[float]]:
    """The validation curve of a run: every measure and `val_loss` at each evaluation, in step order."""
    evals = sorted((r for r in rows if r.get("val_loss") is not None), key=lambda r: r["step"])
    return {key: [float(r.get(key, 0.0)) for r in evals] for key in (*MEASURES, "val_loss")}


def cost_to_target(curve: dict[str, list[float]], target: float) -> dict[str, float] | None:
    """The cost (in every measure) at the first point where the linearly interpolated validation
    curve reaches `target`; None when it never does."""
    losses = curve["val_loss"]
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0:
                return {m: curve[m][0] for m in MEASURES}
            prev = losses[i - 1]
            frac = (prev - target) / (prev - loss) if prev != loss else 1.0
            return {m: curve[m][i - 1] + frac * (curve[m][i] - curve[m][i - 1]) for m in MEASURES}
    return None


def loss_at(curve: dict[str, list[float]], measure: str, budget: float) -> float | None:
    """Validation loss interpolated at `budget` of `measure` (None outside the evaluated range)."""
    xs, ys = curve[measure], curve["val_loss"]
    if not xs or budget < xs[0] or budget > xs[-1]:
        return None
    return float(np.interp(budget, xs, ys))


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean and a Student-t confidence interval over seeds (no interval from a single value)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "ci": None}
    mean = statistics.fmean(values)
    if n == 1:
        return {"n": 1, "mean": mean, "ci": None}
    sem = statistics.stdev(values) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sem
    return {"n": n, "mean": mean, "ci": [mean - half, mean + half], "level": level}


def speedups(baseline: dict[int, dict | None], arm: dict[int, dict | None]) -> dict:
    """Per measure: speed-up = baseline cost / arm cost for each seed both reached, with mean and CI.
    Seeds where the arm (or the baseline) never reached the target are counted, not given a number."""
    out = {}
    seeds = sorted(set(baseline) & set(arm))
    for m in MEASURES:
        ratios = {s: baseline[s][m] / arm[s][m] for s in seeds
                  if baseline[s] is not None and arm[s] is not None and arm[s][m] > 0}
        out[m] = {"per_seed": ratios, **mean_ci(list(ratios.values())),
                  "not_reached": [s for s in seeds if arm[s] is None]}
    return out
