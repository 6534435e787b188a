"""Whether a meta arm learned its meta task (DESIGN 2.6), and the episodes it actually saw (DESIGN 2.3).

An effect is credited to meta-learning only when the query accuracy after adaptation is above chance
(1/N) by its interval; otherwise the report says the effect is "associated with" the meta arm.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from .compare import mean_ci

LAST_SHARE = 0.25  # the query accuracy is read over the last quarter of training
EPISODE_KEYS = ("episode_classes", "episode_support_min", "episode_support_median", "episode_query_items")


def _last_rows(rows: list[dict], total_steps: int | None) -> list[dict]:
    """The rows with a query accuracy in the last `LAST_SHARE` of `total_steps` (of the last step
    logged when the run's step count is unknown)."""
    meta = [r for r in rows if r.get("query_acc") is not None]
    total = total_steps or max((r["step"] for r in rows), default=0)
    return [r for r in meta if r["step"] > (1 - LAST_SHARE) * total]


def meta_task(rows_by_seed: Mapping[int, list[dict]], n_way: int, total_steps: int | None = None,
              level: float = 0.95, settings: Mapping | None = None) -> dict:
    """`chance` = 1/`n_way` (None for LM tasks, `settings` task "lm": their query accuracy is
    next-token accuracy, with no N-way chance level, so they are never "learned"); `query_acc`: the mean query accuracy over the rows of the last quarter
    of training, with a Student-t interval over seeds (each seed's mean) — over the rows themselves
    when only one seed has such rows (`over` says which); `inner_loop_gain`: support loss before −
    after adaptation over the same rows, likewise; `learned`: the interval's lower bound is above
    chance (never with no interval); `configured`: the episode the arm's `meta` `settings` ask for,
    next to `realised_episode`, the one its rows record."""
    last = {s: r for s, rows in rows_by_seed.items() if (r := _last_rows(rows, total_steps))}
    chance = 1.0 / n_way if n_way and (settings or {}).get("task") != "lm" else None
    gains = {s: [x["support_loss_before"] - x["support_loss_after"] for x in r
                 if x.get("support_loss_before") is not None and x.get("support_loss_after") is not None]
             for s, r in last.items()}
    if len(last) >= 2:
        over = "seeds"
        acc = mean_ci([statistics.fmean(x["query_acc"] for x in r) for r in last.values()], level)
        gain = mean_ci([statistics.fmean(g) for g in gains.values() if g], level)
    else:
        over = "rows"
        acc = mean_ci([x["query_acc"] for r in last.values() for x in r], level)
        gain = mean_ci([v for g in gains.values() for v in g], level)
    acc["per_seed"] = {s: statistics.fmean(x["query_acc"] for x in r) for s, r in last.items()}
    learned = bool(chance is not None and acc.get("ci") and acc["ci"][0] > chance)
    return {"n_way": n_way, "chance": chance, "window": f"last {LAST_SHARE:.0%} of training", "over": over,
            "rows": sum(len(r) for r in last.values()), "query_acc": acc, "inner_loop_gain": gain,
            "learned": learned, "configured": {k: (settings or {}).get(k) for k in ("task", "layout", "n_way", "k_shot", "q_query")},
            "realised_episode": realised_episode(rows_by_seed)}


def realised_episode(rows_by_seed: Mapping[int, list[dict]]) -> dict | None:
    """Means over every meta row of the realised episode (classes, support items per class: min and
    median, query items), or None when the rows do not record it."""
    rows = [r for rows in rows_by_seed.values() for r in rows if r.get(EPISODE_KEYS[0]) is not None]
    if not rows:
        return None
    out = {key.removeprefix("episode_"): statistics.fmean(r[key] for r in rows if r.get(key) is not None)
           for key in EPISODE_KEYS if any(r.get(key) is not None for r in rows)}
    return {**out, "rows": len(rows)}


def query_curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """(steps, query accuracy) of the rows that have one."""
    pairs = [(r["step"], r["query_acc"]) for r in rows if r.get("query_acc") is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]
