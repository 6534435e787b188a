"""Comparing runs (DESIGN 2.6): cost to reach a target validation loss, speed-ups with confidence
intervals over seeds, paired differences at equal FLOPs (saying where a run is read mid-schedule),
paired differences at equal optimizer steps (how control arms attribute an effect, DESIGN 2.4) and
at 25/50/75/100% of the budget.

Only the next-token validation loss on the fixed held-out batches is compared — never a training
loss that mixes meta and next-token terms.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
from scipy import stats

from ..config_diff import flatten
from ..schedule import lr_at

MEASURES = ("step", "tokens", "flops", "time")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of the budget, for the curve-level comparison


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


def default_target(final_losses: Sequence[float]) -> float | None:
    """The default target loss: the highest final validation loss among the baseline's seeds, so that
    every baseline seed reaches it."""
    return max(float(v) for v in final_losses) if final_losses else None


def missed_target(costs: Mapping[int, dict | None]) -> list[int]:
    """The seeds whose run never reached the target."""
    return sorted(s for s, c in costs.items() if c is None)


def _dropped_reason(base_missed: bool, arm_missed: bool) -> str:
    if base_missed and arm_missed:
        return "neither run reached the target"
    return "the baseline run did not reach the target" if base_missed else "the arm's run did not reach the target"


def speedups(baseline: dict[int, dict | None], arm: dict[int, dict | None]) -> dict:
    """Per measure: speed-up = baseline cost / arm cost for each seed both reached, with mean and CI.
    Seeds where either run never reached the target get no number: `not_reached` (the arm missed),
    `baseline_not_reached` and `dropped` (seed → why) say which."""
    out = {}
    seeds = sorted(set(baseline) & set(arm))
    dropped = {s: _dropped_reason(baseline[s] is None, arm[s] is None) for s in seeds
               if baseline[s] is None or arm[s] is None}
    for m in MEASURES:
        ratios = {s: b[m] / a[m] for s in seeds if (b := baseline[s]) is not None and (a := arm[s]) is not None
                  and a[m] > 0}
        out[m] = {"per_seed": ratios, **mean_ci(list(ratios.values())),
                  "not_reached": [s for s in seeds if arm[s] is None],
                  "baseline_not_reached": [s for s in seeds if baseline[s] is None],
                  "dropped": {s: dropped.get(s, f"zero {m} to reach the target") for s in seeds if s not in ratios}}
    return out


def schedule_point(curve: dict[str, list[float]], measure: str, budget: float, train: Mapping | None) -> dict:
    """Where a run is read at `budget` of `measure`: the (interpolated) optimizer step, whether that is
    mid-schedule (more than one step before the run's last step) and the LR fraction there (the
    learning rate of that step / the peak `train.lr`; None without the run's `train` settings)."""
    step = float(np.interp(budget, curve[measure], curve["step"]))
    last = curve["step"][-1]
    point = {"step": step, "mid_schedule": step < last - 1, "lr_fraction": None}
    if train and train.get("lr"):
        settings = SimpleNamespace(**{k: train.get(k, d) for k, d in (("lr", 0.0), ("warmup_steps", 0), ("steps", last),
                                                                       ("schedule", "cosine"), ("min_lr_ratio", 0.0))})
        point["lr_fraction"] = lr_at(min(int(step), max(0, int(settings.steps) - 1)), settings) / settings.lr
    return point


def paired_difference(baseline: Mapping[int, dict], arm: Mapping[int, dict], measure: str = "flops",
                      level: float = 0.95, train: tuple[Mapping | None, Mapping | None] = (None, None)) -> dict:
    """Per seed: arm loss − baseline loss at the largest `measure` budget both runs of that seed
    reached (validation curves linearly interpolated), with the mean and a Student-t interval over
    seeds (none from one seed). Seeds without a common budget are listed in `dropped` with why.
    Each seed says where each run was read (`baseline_at`, `arm_at`: `schedule_point`, the LR
    fraction from the runs' `train` settings) and `mid_schedule` lists the runs read mid-schedule."""
    seeds, dropped = _shared(baseline, arm)
    per_seed = {}
    for s in seeds:
        b, a = baseline[s], arm[s]
        budget = min(b[measure][-1], a[measure][-1])
        base_loss, arm_loss = loss_at(b, measure, budget), loss_at(a, measure, budget)
        if base_loss is None or arm_loss is None:
            dropped[s] = f"the validation curves share no {measure} range"
            continue
        at = {"baseline": schedule_point(b, measure, budget, train[0]), "arm": schedule_point(a, measure, budget, train[1])}
        per_seed[s] = {"budget": budget, "arm_loss": arm_loss, "baseline_loss": base_loss,
                       "difference": arm_loss - base_loss, "baseline_at": at["baseline"], "arm_at": at["arm"],
                       "mid_schedule": [run for run, p in at.items() if p["mid_schedule"]]}
    return {"measure": measure, "per_seed": per_seed,
            **mean_ci([d["difference"] for d in per_seed.values()], level), "dropped": dropped}


def _shared(baseline: Mapping[int, dict], arm: Mapping[int, dict]) -> tuple[list[int], dict[int, str]]:
    """The seeds both sides have a validation curve for, and why each other seed is dropped."""
    dropped = {}
    for s in sorted(set(baseline) | set(arm)):
        if s not in baseline or s not in arm:
            dropped[s] = "run only in the " + ("arm" if s in arm else "baseline")
        elif not baseline[s]["val_loss"] or not arm[s]["val_loss"]:
            dropped[s] = "no validation curve"
    return [s for s in sorted(set(baseline) & set(arm)) if s not in dropped], dropped


def paired_at_steps(control: Mapping[int, dict], arm: Mapping[int, dict], level: float = 0.95) -> dict:
    """Attribution at equal optimizer steps (DESIGN 2.6): per seed, arm loss − control loss at every
    evaluation step both runs have after step 0 (at step 0 both are the same initialisation), its mean
    over those steps (`curve_mean`) and the difference at the last shared step (`final`); over
    seeds, the mean and a Student-t interval of each (`curve_mean`, `final`; the top-level `n`,
    `mean`, `ci` are the final point's)."""
    seeds, dropped = _shared(control, arm)
    per_seed = {}
    for s in seeds:
        c = dict(zip(control[s]["step"], control[s]["val_loss"]))
        a = dict(zip(arm[s]["step"], arm[s]["val_loss"]))
        steps = sorted(x for x in set(c) & set(a) if x > 0)
        if not steps:
            dropped[s] = "no shared evaluation step after step 0"
            continue
        diffs = [a[x] - c[x] for x in steps]
        per_seed[s] = {"steps": steps, "differences": diffs, "curve_mean": statistics.fmean(diffs),
                       "final_step": steps[-1], "arm_loss": a[steps[-1]], "control_loss": c[steps[-1]],
                       "difference": diffs[-1]}
    final = mean_ci([d["difference"] for d in per_seed.values()], level)
    return {"axis": "steps", "per_seed": per_seed, **final, "final": final,
            "curve_mean": mean_ci([d["curve_mean"] for d in per_seed.values()], level), "dropped": dropped}


def curve_differences(baseline: Mapping[int, dict], arm: Mapping[int, dict], measure: str,
                      fractions: Sequence[float] = FRACTIONS, level: float = 0.95) -> dict:
    """The curve-level comparison (DESIGN 2.6): per seed, arm loss − baseline loss at each fraction
    of the budget on `measure` (the budget: the largest amount both runs of that seed reached;
    curves linearly interpolated), with the mean and a Student-t interval over seeds per fraction."""
    seeds, dropped = _shared(baseline, arm)
    points = []
    for f in fractions:
        per_seed = {}
        for s in seeds:
            budget = f * min(baseline[s][measure][-1], arm[s][measure][-1])
            b, a = loss_at(baseline[s], measure, budget), loss_at(arm[s], measure, budget)
            if b is not None and a is not None:
                per_seed[s] = {"budget": budget, "arm_loss": a, "baseline_loss": b, "difference": a - b}
        points.append({"fraction": f, "per_seed": per_seed, **mean_ci([d["difference"] for d in per_seed.values()], level)})
    return {"measure": measure, "points": points, "dropped": dropped}


# -- control arms (DESIGN 2.4) ---------------------------------------------------------------------

def control_kind(config: Mapping | None) -> str:
    """`meta.control` of a run's saved config: "momentum", "skip", or "none" (also when absent)."""
    meta = (config or {}).get("meta") or {}
    return str(meta.get("control") or "none")


def is_meta_arm(config: Mapping | None) -> bool:
    """A meta-learning arm proper: meta steps enabled, not a control."""
    return bool(((config or {}).get("meta") or {}).get("enabled")) and control_kind(config) == "none"


def _settings(config: Mapping | None, section: str | None = None) -> dict:
    """The flattened settings that define what an arm computes, without `meta.control` and the `run`
    section (directory, name, seed, device); only `section` when given."""
    flat = flatten(dict(config or {}))
    return {k: v for k, v in flat.items() if k != "meta.control" and not k.startswith("run.")
            and (section is None or k.startswith(section + "."))}


def match_arm(arm: str, configs: Mapping[str, Mapping | None], candidates: Sequence[str]) -> tuple[str | None, str]:
    """The candidate whose config equals `arm`'s except `meta.control` (else, the one whose `meta`
    settings do); (None, why) when there is none or more than one."""
    for section in (None, "meta"):
        found = [c for c in candidates if _settings(configs[c], section) == _settings(configs[arm], section)]
        if len(found) == 1:
            return found[0], ""
        if len(found) > 1:
            return None, f"several candidates ({', '.join(found)}) match {arm!r}"
    return None, f"no arm matches {arm!r}'s settings"


def pair_controls(configs: Mapping[str, Mapping | None]) -> dict:
    """Which arms attribute which effect: `meta_effect` pairs (meta arm − its `momentum` control),
    `replay_effect` pairs (`momentum` control − its `skip` control), each {"arm", "control"};
    `unpaired`: control arms that could not be paired, with why; `meta_without_control`: meta arms
    that have no `momentum` control (their effect cannot be credited to meta-learning)."""
    kinds = {a: control_kind(c) for a, c in configs.items()}
    metas = [a for a, c in configs.items() if is_meta_arm(c)]
    momentum = [a for a, k in kinds.items() if k == "momentum"]
    out: dict = {"meta_effect": [], "replay_effect": [], "unpaired": {}}
    for pairs, controls, candidates in (("meta_effect", momentum, metas),
                                        ("replay_effect", [a for a, k in kinds.items() if k == "skip"], momentum)):
        for control in controls:
            arm, why = match_arm(control, configs, candidates)
            if arm is None:
                out["unpaired"][control] = why
            else:
                out[pairs].append({"arm": arm, "control": control})
    out["meta_without_control"] = [a for a in metas if a not in {p["arm"] for p in out["meta_effect"]}]
    return out
