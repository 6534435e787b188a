"""The experiment report: `summary.json` (every number), `report.md` and a self-contained
`report.html` (images embedded), with a plain-language verdict computed from the numbers
(`experiment.verdict`).

The report reads like a paper's results section: the headline figure (validation loss against
FLOPs, every arm's mean over seeds with its min–max band, control arms dashed), the verdict, then
numbered tables — final loss with the regime (`experiment.regime`), cost to the target loss (misses
listed), speed-ups (dropped seeds said), paired differences at equal FLOPs (against matched
baselines, `experiment.matched`, or saying where a run is read mid-schedule), control-arm
attributions at equal optimizer steps (DESIGN 2.4, 2.6), the curve-level comparison, the meta task
(`experiment.metatask`), evaluations and the phase read-out (DESIGN 2.7). Numbers are printed with
fixed decimals (losses with four, `experiment.formatting`).
"""

from __future__ import annotations

import base64
import html
import logging
import platform
import re
from pathlib import Path

import numpy as np
import yaml

from ..atomic import write_json_atomic, write_text_atomic
from ..dynamics.phases import COMPONENT_SECTIONS, SECTIONS, phase_text, section_entries, timeline_text
from ..eval_results import FewshotResult, NerResult, PerplexityResult, read_result
from ..run_dir import RunDir
from .compare import (
    MEASURES,
    control_kind,
    cost_to_target,
    curve_differences,
    default_target,
    is_meta_arm,
    loss_at,
    mean_ci,
    missed_target,
    pair_controls,
    paired_at_steps,
    paired_difference,
    schedule_point,
    speedups,
    val_curve,
)
from .formatting import _amount, _ci, _loss, _signed
from .matched import final_flops
from .metatask import meta_task, query_curve
from .regime import UNIGRAM_MARGIN, regime, run_unigram_ce
from .summary import (
    SUMMARY_FILE,
    ArmSummary,
    AtEqual,
    Attribution,
    CurveDifferences,
    ExperimentSummary,
    MatchedRun,
    MetaTaskSummary,
    PairedDifference,
    PairedSeed,
    Speedup,
    Sweeps,
)
from .verdict import _realised_text, verdict

log = logging.getLogger(__name__)

LABELS = {"step": "optimizer steps", "tokens": "training tokens", "flops": "FLOPs", "time": "seconds (training)"}
EFFECTS = {"meta-arm": "Meta-arm effect", "replay": "Replay effect"}

Table = tuple[str, list[str], list[list[str]]]  # (caption, header, rows)


def _versions() -> dict:
    import torch
    import transformers

    from .. import __version__

    return {"metalm": __version__, "python": platform.python_version(), "torch": str(torch.__version__),
            "transformers": transformers.__version__, "machine": f"{platform.machine()} {platform.system()}",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def read_metrics(runs: dict[str, dict[int, RunDir]]) -> dict[str, dict[int, list[dict]]]:
    """Every run's metrics rows, read once for the whole report."""
    return {a: {s: d.read_metrics() for s, d in seeds.items()} for a, seeds in runs.items()}


def _role(arm: str, baseline: str, config: dict | None) -> str:
    kind = control_kind(config)
    if kind != "none":
        return f"control ({kind})"
    if arm == baseline:
        return "baseline"
    return "meta" if is_meta_arm(config) else "arm"


# -- summary -----------------------------------------------------------------------------------------

def _train(config: dict | None) -> dict | None:
    return (config or {}).get("train")


def _meta_settings(config: dict | None) -> dict:
    return (config or {}).get("meta") or {}


def summarise(runs: dict[str, dict[int, RunDir]], metrics: dict[str, dict[int, list[dict]]], baseline: str,
              target: float | None, matched: dict[str, dict[int, RunDir]] | None = None,
              sweeps: dict | None = None) -> ExperimentSummary:
    """Every number of the report of `runs` (arm → seed → run) against `baseline`, as an
    `ExperimentSummary` (with its verdict)."""
    configs = {a: {s: d.read_config() for s, d in seeds.items()} for a, seeds in runs.items()}
    arm_config = {a: next((c for c in cs.values() if c), None) for a, cs in configs.items()}
    curves = {a: {s: val_curve(rows) for s, rows in by_seed.items()} for a, by_seed in metrics.items()}
    finals = {a: {s: c["val_loss"][-1] for s, c in cs.items() if c["val_loss"]} for a, cs in curves.items()}
    if target is None:
        target = default_target(list(finals[baseline].values()))
        target_source = (f"the highest final validation loss among the {len(finals[baseline])} seed(s) of the "
                         f"{baseline!r} arm, so every {baseline} seed reaches it")
    else:
        target_source = "given"
    memo: dict[str, float] = {}
    unigram = {a: next((u for d in seeds.values() if (u := run_unigram_ce(d, memo)) is not None), None)
               for a, seeds in runs.items()}
    summary: dict = {"baseline": baseline, "target_loss": target, "target_source": target_source,
                     "unigram_ce": unigram.get(baseline) if unigram.get(baseline) is not None
                     else next((u for u in unigram.values() if u is not None), None),
                     "unigram_ce_source": ("the validation set's cross-entropy under the training set's token "
                                           "frequencies, add-one smoothed (nats/token)"), "arms": {}}
    matched_curves, summary["matched_baselines"] = _matched(matched or {}, metrics)
    costs = {a: {s: (cost_to_target(c, target) if target is not None else None) for s, c in cs.items()}
             for a, cs in curves.items()}
    # Equal compute across the whole experiment: the largest budget every run of every arm reached.
    budgets = {m: min((c[m][-1] for cs in curves.values() for c in cs.values() if c[m]), default=None)
               for m in ("tokens", "flops")}
    for arm, seeds in runs.items():
        entry = {"role": _role(arm, baseline, arm_config[arm]), "control": control_kind(arm_config[arm]),
                 "runs": {s: str(d.path) for s, d in seeds.items()},
                 "final_val_loss": {**mean_ci(list(finals[arm].values())), "per_seed": finals[arm]},
                 "regime": regime(finals[arm], unigram[arm]),
                 "cost_to_target": costs[arm],
                 "missed_target": missed_target(costs[arm]) if target is not None else [],
                 "val_loss_at_equal": {m: _at_equal(curves[arm], {s: _train(c) for s, c in configs[arm].items()}, m, b)
                                       for m, b in budgets.items() if b is not None}}
        if arm != baseline:
            entry["speedup"] = speedups(costs[baseline], costs[arm])
            entry.update(_against_baseline(curves[baseline], curves[arm], matched_curves.get(arm), baseline,
                                           (_train(arm_config[baseline]), _train(arm_config[arm]))))
        entry["evaluations"] = _evaluations(seeds)
        summary["arms"][arm] = entry
    summary["meta_task"] = {arm: meta_task(metrics[arm], int(_meta_settings(arm_config[arm]).get("n_way") or 0),
                                           (_train(arm_config[arm]) or {}).get("steps"),
                                           settings=_meta_settings(arm_config[arm]))
                            for arm in runs if is_meta_arm(arm_config[arm])}
    pairs = pair_controls(arm_config)
    summary["attributions"] = [
        {"effect": effect, "arm": p["arm"], "control": p["control"], **paired_at_steps(curves[p["control"]], curves[p["arm"]])}
        for effect, key in (("meta-arm", "meta_effect"), ("replay", "replay_effect")) for p in pairs[key]]
    summary["controls"] = {"unpaired": pairs["unpaired"], "meta_without_control": pairs["meta_without_control"]}
    summary["metrics_problems"] = {f"{a} seed {s}": problems for a, seeds in runs.items() for s, d in seeds.items()
                                   if (problems := d.metrics_problems(metrics[a][s]))}
    if sweeps is not None:
        summary["sweeps"] = sweeps
    summary["versions"] = _versions()
    summary["configs"] = configs
    typed = ExperimentSummary.model_validate(summary)
    return typed.model_copy(update={"verdict": verdict(typed)})


def _against_baseline(base: dict[int, dict], arm: dict[int, dict], matched: dict[int, dict] | None, baseline: str,
                      train: tuple[dict | None, dict | None]) -> dict:
    """An arm's paired difference at equal FLOPs — against its matched baseline runs when it has
    them, else against the baseline at the largest budget both reached, saying where a run is read
    mid-schedule (`train`: the baseline's and the arm's settings, for the LR fraction) — and its
    curve-level differences on the steps, tokens and FLOPs axes (FLOPs: against the same runs)."""
    against = "matched baseline" if matched else baseline
    pd = paired_difference(matched, arm) if matched else paired_difference(base, arm, train=train)
    curves = {m: {**curve_differences(matched if (m == "flops" and matched) else base, arm, m),
                  "against": against if m == "flops" else baseline} for m in ("step", "tokens", "flops")}
    if not matched:
        curves["flops"]["note"] = ("no matched baseline: at equal FLOPs the run with more FLOPs is read earlier in "
                                   "its schedule (at a higher LR) than the other; paired_difference_at_equal_flops "
                                   "says where")
    return {"paired_difference_at_equal_flops": {**pd, "against": against}, "curve_differences": curves}


def _at_equal(curves: dict[int, dict], trains: dict[int, dict | None], measure: str, budget: float) -> dict:
    """An arm's mean validation loss at `budget` of `measure`, and the seeds read there mid-schedule
    (each with its step and LR fraction)."""
    losses = {s: v for s, c in curves.items() if (v := loss_at(c, measure, budget)) is not None}
    points = {s: schedule_point(curves[s], measure, budget, trains.get(s)) for s in losses}
    return {"budget": budget, **mean_ci(list(losses.values())),
            "mid_schedule": {s: p for s, p in points.items() if p["mid_schedule"]}}


def _matched(matched: dict[str, dict[int, RunDir]], metrics: dict[str, dict[int, list[dict]]]) -> tuple[dict, dict]:
    """(arm → seed → validation curve of its matched baseline, the `matched_baselines` summary: per arm
    and seed the matched run, its steps and final FLOPs, the arm's final FLOPs, both final losses)."""
    curves: dict = {}
    out: dict = {}
    for arm, seeds in matched.items():
        for seed, run in seeds.items():
            rows = run.read_metrics()
            curve = val_curve(rows)
            if not curve["val_loss"]:
                continue
            curves.setdefault(arm, {})[seed] = curve
            arm_rows = metrics.get(arm, {}).get(seed, [])
            arm_curve = val_curve(arm_rows)
            out.setdefault(arm, {})[str(seed)] = {
                "run": str(run.path), "steps": int(curve["step"][-1]), "final_flops": final_flops(rows),
                "arm_final_flops": final_flops(arm_rows), "final_val_loss": curve["val_loss"][-1],
                "arm_final_val_loss": arm_curve["val_loss"][-1] if arm_curve["val_loss"] else None}
    return curves, out


def _evaluations(seeds: dict[int, RunDir]) -> dict:
    """Per evaluation, seed → its stored result (NER: per result name, seed → the summary per test
    language), each read through its type (a malformed file is left out) and kept as that object."""
    evals: dict = {}
    for s, run in seeds.items():
        perplexity = read_result(PerplexityResult, run.read_eval(PerplexityResult.NAME))
        fewshot = read_result(FewshotResult, run.read_eval(FewshotResult.NAME))
        for name, res in ((PerplexityResult.NAME, perplexity), (FewshotResult.NAME, fewshot)):
            if res is not None:
                evals.setdefault(name, {})[s] = res
        for name in run.eval_names("ner-"):
            ner = read_result(NerResult, run.read_eval(name))
            if ner is not None:
                evals.setdefault("ner", {}).setdefault(name, {})[s] = ner.summary
        phases = run.read_phases()
        if phases:
            evals.setdefault("phases", {})[s] = phases
    return evals


# -- figures -----------------------------------------------------------------------------------------

def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _mean_band(curves: list[dict], measure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, mean, min, max of the seeds' validation curves, interpolated onto the union of their x values
    within the range every seed covers."""
    curves = [c for c in curves if c[measure]]
    if len(curves) == 1:
        ys = np.asarray(curves[0]["val_loss"])
        return np.asarray(curves[0][measure]), ys, ys, ys
    lo, hi = max(c[measure][0] for c in curves), min(c[measure][-1] for c in curves)
    xs = np.unique([x for c in curves for x in c[measure] if lo <= x <= hi])
    ys = np.array([np.interp(xs, c[measure], c["val_loss"]) for c in curves])
    return xs, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def _plot_arms(ax, curves: dict[str, list[dict]], roles: dict[str, str], measure: str, legend: bool) -> None:
    palette = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")
    for color, (arm, cs) in zip(palette * 4, curves.items()):
        if not any(c[measure] for c in cs):
            continue
        xs, mean, low, high = _mean_band(cs, measure)
        control = roles[arm].startswith("control")
        n = len(cs)
        ax.plot(xs, mean, color=color, linestyle="--" if control else "-",
                label=f"{arm}{', ' + roles[arm] if control else ''}, {n} seed{'s' * (n > 1)}")
        if n > 1:
            ax.fill_between(xs, low, high, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel(LABELS[measure])
    ax.set_ylabel("validation loss (nats/token)")
    if legend:
        ax.legend(fontsize="small")


def headline_plot(curves: dict[str, list[dict]], roles: dict[str, str], target: float | None, out: Path) -> Path:
    """Validation loss against FLOPs: every arm's mean over seeds, its min–max band, controls dashed,
    the target loss as a dotted line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), dpi=110, layout="constrained")
    ax = fig.subplots()
    _plot_arms(ax, curves, roles, "flops", legend=False)
    if target is not None:
        ax.axhline(target, color="0.4", linestyle=":", linewidth=1, label=f"target {target:.4f}")
    ax.legend(fontsize="small")
    FigureCanvasAgg(fig).print_png(str(out))
    return out


def loss_plot(curves: dict[str, list[dict]], roles: dict[str, str], out: Path) -> Path:
    """Validation loss against steps, tokens and seconds (the FLOPs view is the headline figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 3.8), dpi=90, layout="constrained")
    for i, (ax, m) in enumerate(zip(fig.subplots(1, 3), ("step", "tokens", "time"))):
        _plot_arms(ax, curves, roles, m, legend=i == 0)
    FigureCanvasAgg(fig).print_png(str(out))
    return out


def query_acc_plot(metrics: dict[str, dict[int, list[dict]]], tasks: dict[str, MetaTaskSummary], out: Path) -> Path:
    """Each meta arm's query accuracy after adaptation over steps (one line per seed) with its chance
    level (1/N) dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4), dpi=100, layout="constrained")
    ax = fig.subplots()
    palette = ("tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
    for color, (arm, task) in zip(palette * 4, tasks.items()):
        for i, (_seed, rows) in enumerate(sorted(metrics[arm].items())):
            steps, acc = query_curve(rows)
            ax.plot(steps, acc, color=color, alpha=0.8, linewidth=1, label=f"{arm}" if i == 0 else None)
        if task.chance is not None:
            ax.axhline(task.chance, color=color, linestyle=":", linewidth=1.2, label=f"{arm}: chance 1/{task.n_way}")
    ax.set_xlabel(LABELS["step"])
    ax.set_ylabel("query accuracy after adaptation")
    ax.legend(fontsize="small")
    FigureCanvasAgg(fig).print_png(str(out))
    return out


# -- tables ------------------------------------------------------------------------------------------

def _equal_cell(at: AtEqual | None) -> str:
    """A mean loss at the experiment's equal budget, with the mean LR fraction of the seeds read there
    mid-schedule."""
    if at is None:
        return "–"
    cell = _loss(at.mean)
    mid = at.mid_schedule
    if mid:
        fractions = [p.lr_fraction for p in mid.values() if p.lr_fraction is not None]
        lr = f", LR {np.mean(fractions):.2f} of peak" if fractions else ""
        cell += f" (mid-schedule in {len(mid)} seed{'s' * (len(mid) > 1)}{lr})"
    return cell


def tables(summary: ExperimentSummary) -> list[Table]:
    """(caption, header, rows) of every table, shared by the markdown and HTML renderings."""
    base, target = summary.baseline, summary.target_loss
    arms = summary.arms
    tasks = summary.meta_task
    out: list[Table] = []
    rows = []
    for arm, e in arms.items():
        f = e.final_val_loss
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in f.per_seed.items()) or "–"
        task = tasks.get(arm)
        rows.append([arm, e.role, str(f.n), _loss(f.mean), _ci(f.ci), per_seed, e.regime.label or "–",
                     *[_equal_cell(e.val_loss_at_equal.get(m)) for m in ("tokens", "flops")],
                     _loss(task.query_acc.mean, 3) if task else "–"])
    unigram = summary.unigram_ce
    regime_text = ("" if unigram is None else
                   f" Regime: against the validation set's unigram cross-entropy {unigram:.4f} (a run ending less than "
                   f"{UNIGRAM_MARGIN} nat below it is at the unigram stage).")
    out.append((("Final validation loss (nats/token): mean over seeds with its 95% t-interval, each seed's value, "
                 "the regime, and the mean loss at the largest token and FLOPs budgets every run of the experiment "
                 "reached (a run read there before the end of its schedule is marked mid-schedule, with the mean "
                 "LR fraction there); the meta task's query accuracy over the last quarter of training." + regime_text),
                ["arm", "role", "seeds", "final (mean)", "95% CI", "final per seed", "regime", "at equal tokens",
                 "at equal FLOPs", "meta query acc (last quarter)"], rows))
    out += _sweep_tables(summary.sweeps)
    if target is not None:
        rows = [[arm, str(s), *(["missed"] * len(MEASURES) if c is None else [_amount(m, c[m]) for m in MEASURES])]
                for arm, e in arms.items() for s, c in e.cost_to_target.items()]
        out.append(((f"Cost to reach the target validation loss {target:.4f} ({summary.target_source}): the first "
                     "point where the linearly interpolated validation curve reaches it; 'missed' = never reached."),
                    ["arm", "seed", *[LABELS[m] for m in MEASURES]], rows))
    rows = [row for arm, e in arms.items() if e.speedup is not None for row in _speedup_rows(arm, e.speedup)]
    if rows:
        out.append(((f"Speed-up over {base} (baseline cost / arm cost) to the target loss, for the seeds where both "
                     "runs reached it; every other seed is listed as dropped, with why (one line for an arm with no "
                     "speed-up in any seed)."),
                    ["arm", "measure", "speed-up (mean)", "95% CI", "per seed", "seeds dropped"], rows))
    rows = []
    for arm, e in arms.items():
        if e.paired_difference_at_equal_flops is not None:
            rows += _paired_rows(arm, e.paired_difference_at_equal_flops)
    if rows:
        matched = bool(summary.matched_baselines)
        out.append(((f"Paired difference at equal FLOPs: for each seed, the arm's validation loss minus {base}'s "
                     + ("matched baseline run's (a baseline run whose schedule ends at the arm's final FLOPs) at the "
                        "end of both runs" if matched else "at the largest FLOPs budget both runs reached")
                     + " (curves linearly interpolated); mean and 95% t-interval over seeds. 'read at' says where a run "
                     "is read before the end of its schedule (its step and LR fraction). Negative: lower loss than "
                     "the baseline."),
                    ["arm", "seed", "FLOPs budget", "arm loss", "baseline loss", "difference", "95% CI", "read at"],
                    rows))
    rows = _matched_rows(summary.matched_baselines)
    if rows:
        out.append((("Matched baselines: per arm and seed, the baseline run whose step count makes its final FLOPs "
                     "equal the arm's (within one baseline step), with the same schedule shape."),
                    ["arm", "seed", "matched run", "steps", "its final FLOPs", "arm's final FLOPs", "its final loss",
                     "arm's final loss"], rows))
    rows = []
    for att in summary.attributions:
        rows += _attribution_rows(f"{EFFECTS[att.effect]}: {att.arm} − {att.control}", att)
    if rows:
        out.append((("Attribution with control arms (DESIGN 2.4), paired at equal optimizer steps (the runs share the "
                     "schedule, the next-token micro-batches and the LR at every step): meta-arm effect = meta arm − "
                     "its momentum control (meta steps apply a zero gradient); replay effect = momentum control − skip "
                     "control (meta steps do nothing). Per seed the difference at the last evaluation and its mean "
                     "over every evaluation after step 0; mean and 95% t-interval over seeds."),
                    ["effect", "seed", "final step", "loss", "control loss", "difference (final)", "95% CI (final)",
                     "mean over curve", "95% CI (curve)"], rows))
    rows = [row for arm, e in arms.items() for row in _curve_rows(arm, e.curve_differences or {})]
    if rows:
        flops = ("FLOPs against the matched baselines" if summary.matched_baselines else
                 "without matched baselines, on the FLOPs axis the run with more FLOPs is read earlier in its "
                 "schedule than the other: where, in the equal-FLOPs table")
        out.append(((f"Curve-level comparison: the arm's validation loss minus {base}'s at 25/50/75/100% of the budget "
                     f"(per seed, the largest amount both runs reached) on the steps, tokens and FLOPs axes ({flops}); "
                     "mean and 95% t-interval over seeds."),
                    ["arm", "axis", "against", "share of budget", "budget (mean)", "difference (mean)", "95% CI"], rows))
    rows = [_meta_task_row(arm, task) for arm, task in tasks.items()]
    if rows:
        out.append((("The meta task (DESIGN 2.6): query accuracy after adaptation over the last quarter of training "
                     "against chance (1/N), with its 95% t-interval (over seeds; over rows when one seed), the "
                     "inner-loop gain (support loss before − after adaptation), whether the task was learned (the "
                     "interval above chance), and the realised episode (mean over meta rows)."),
                    ["arm", "chance", "query acc", "95% CI", "inner-loop gain", "learned", "realised episode"], rows))
    out += _evaluation_tables(arms)
    out += phase_tables(summary)
    return out


def _sweep_tables(sweeps: Sweeps | None) -> list[Table]:
    """The sweep: setting × swept arm, the final validation loss per sweep seed, the chosen setting
    marked, and which arms ran with it."""
    if not sweeps:
        return []
    rows = []
    for arm, entry in sweeps.arms.items():
        for row in entry.settings:
            per_seed = ", ".join(f"{s}: {_loss(v)}" if v is not None else f"{s}: {row.state[s]}"
                                 for s, v in row.final_val_loss.items())
            chosen = row.setting == entry.chosen
            rows.append([arm, row.name, per_seed, _loss(row.mean),
                         ("chosen: " + ", ".join(entry.taken_by or [arm])) if chosen else ""])
    overlap = sweeps.selected_on_arm_seeds
    caveat = (f" The sweep seeds {', '.join(map(str, overlap))} are also arms' seeds: on them a swept arm's final loss "
              "was selected (slightly optimistic against arms that were not swept, e.g. controls)." if overlap else "")
    return [((f"Sweep (tuned against tuned, DESIGN 2.6): each swept arm at every setting of the grid on seeds "
              f"{', '.join(map(str, sweeps.seeds))}; the chosen setting has the lowest mean final validation loss "
              "(a diverged or unfinished setting is never chosen) and is run by the arm and its controls." + caveat),
             ["arm", "setting", "final validation loss per seed", "mean", "chosen (run by)"], rows)]


def _speedup_rows(arm: str, speedup: dict[str, Speedup]) -> list[list[str]]:
    """One row per measure, or one line when no seed has a speed-up on any measure."""
    if not any(sp.per_seed for sp in speedup.values()):
        dropped = next(iter(speedup.values())).dropped
        return [[arm, "every measure", "–", "–", "–",
                 "no seed: " + ("; ".join(f"{s}: {why}" for s, why in dropped.items()) or "none reached the target")]]
    return [[arm, LABELS[m], _loss(sp.mean, 3), _ci(sp.ci, 3),
             ", ".join(f"{s}: {v:.3f}" for s, v in sp.per_seed.items()) or "–",
             "; ".join(f"{s}: {why}" for s, why in sp.dropped.items()) or "–"]
            for m, sp in speedup.items()]


def _read_at(d: PairedSeed) -> str:
    reads = []
    for run in d.mid_schedule:
        at = d.read_at(run)
        lr = "" if at.lr_fraction is None else f", LR {at.lr_fraction:.2f}"
        reads.append(f"{run} mid-schedule: step {at.step:.1f}{lr}")
    return "; ".join(reads) or "end of both"


def _paired_rows(label: str, pd: PairedDifference) -> list[list[str]]:
    rows = [[label, str(s), _amount("flops", d.budget), _loss(d.arm_loss), _loss(d.baseline_loss),
             _signed(d.difference), "–", _read_at(d)] for s, d in pd.per_seed.items()]
    rows += [[label, str(s), "dropped", why, "", "", "", ""] for s, why in pd.dropped.items()]
    rows.append([label, f"mean of {pd.n}", "", "", "", _signed(pd.mean), _ci(pd.ci, signed=True), ""])
    return rows


def _attribution_rows(label: str, att: Attribution) -> list[list[str]]:
    rows = [[label, str(s), str(d.final_step), _loss(d.arm_loss), _loss(d.control_loss),
             _signed(d.difference), "–", _signed(d.curve_mean), "–"] for s, d in att.per_seed.items()]
    rows += [[label, str(s), "dropped", why, "", "", "", "", ""] for s, why in att.dropped.items()]
    curve = att.curve_mean
    rows.append([label, f"mean of {att.n}", "", "", "", _signed(att.mean), _ci(att.ci, signed=True),
                 _signed(curve.mean), _ci(curve.ci, signed=True)])
    return rows


def _matched_rows(matched: dict[str, dict[int, MatchedRun]]) -> list[list[str]]:
    return [[arm, str(s), Path(m.run).parent.name, str(m.steps), _amount("flops", m.final_flops),
             _amount("flops", m.arm_final_flops), _loss(m.final_val_loss), _loss(m.arm_final_val_loss)]
            for arm, seeds in matched.items() for s, m in seeds.items()]


def _curve_rows(arm: str, curves: dict[str, CurveDifferences]) -> list[list[str]]:
    rows = []
    for measure, cd in curves.items():
        for point in cd.points:
            budgets = [d.budget for d in point.per_seed.values()]
            rows.append([arm, LABELS[measure], cd.against, f"{point.fraction:.0%}",
                         _amount(measure, float(np.mean(budgets))) if budgets else "–", _signed(point.mean),
                         _ci(point.ci, signed=True)])
    return rows


def _meta_task_row(arm: str, task: MetaTaskSummary) -> list[str]:
    acc, gain = task.query_acc, task.inner_loop_gain
    ep = task.realised_episode
    return [arm, _loss(task.chance), _loss(acc.mean), _ci(acc.ci), _signed(gain.mean),
            "yes" if task.learned else "no", _realised_text(ep, task.configured) if ep else "not recorded"]


def _evaluation_tables(arms: dict[str, ArmSummary]) -> list[Table]:
    out: list[Table] = []
    rows = []
    for arm, e in arms.items():
        for key, per_seed in e.evaluations.ner.items():
            seeds = list(per_seed.values())
            for lang in seeds[0]:
                vals = [s[lang].f1.mean for s in seeds]
                strict = [s[lang].strict_f1.mean for s in seeds]
                rows.append([arm, key, lang, f"{100 * np.mean(vals):.1f}", f"{100 * np.mean(strict):.1f}"])
    if rows:
        out.append(("NER F1 (× 100, mean over seeds).", ["arm", "evaluation", "test language", "F1", "strict F1"], rows))
    rows = []
    for arm, e in arms.items():
        sets: dict[str, list[float]] = {}
        for res in e.evaluations.perplexity.values():
            for r in res.sets:
                sets.setdefault(r.data, []).append(r.perplexity)
        rows += [[arm, Path(k).name or k, f"{np.mean(v):.2f}"] for k, v in sets.items()]
        acc = [r.accuracy for r in e.evaluations.fewshot.values()]
        if acc:
            rows.append([arm, "few-shot query acc before → after",
                         (f"{np.mean([a['query_acc_before'].mean for a in acc]):.3f} → "
                          f"{np.mean([a['query_acc_after'].mean for a in acc]):.3f}")])
    if rows:
        out.append(("Perplexity and few-shot accuracy (mean over seeds).", ["arm", "set", "value"], rows))
    return out


_NOW = {"collapse": "collapsing", "diversify": "diversifying", "compress": "compressing"}


def _phase_cell(entry: dict) -> str:
    """'trough step → peak step, current phase' of one layer's read-out ('–' for a step not reached)."""
    phase = entry.get("phase")
    if not phase:  # none, or an older read-out's empty label
        return "–"
    now = _NOW.get(str(phase).rsplit("-", 1)[-1])
    if now is None:  # flat, one step, or an older read-out's key
        return phase_text(phase, short=True)
    steps = [("–" if entry.get(k) is None else str(entry[k])) for k in ("trough_step", "peak_step")]
    return f"{steps[0]} → {steps[1]}, {now}"


def phase_tables(summary: ExperimentSummary) -> list[Table]:
    """The dynamics phase read-out side by side: per metric, one row per layer (activation effective
    rank, head entropy) or per component (weight and gradient PER, averaged over layers) and one
    column per arm × seed, each cell the step of the first trough, of the post-trough peak, and the
    phases; then each run's specialisation timeline."""
    runs = [(arm, seed, ph) for arm, e in summary.arms.items() for seed, ph in sorted(e.evaluations.phases.items())]
    out: list[Table] = []
    timelines = []
    for key, title in SECTIONS.items():
        cells: dict[str, dict[int, str]] = {}
        per = "component" if key in COMPONENT_SECTIONS else "layer"
        for i, (arm, seed, ph) in enumerate(runs):
            entries = section_entries(ph.get(key))
            for entry in entries:
                cells.setdefault(entry["name"], {})[i] = _phase_cell(entry)
            if entries:
                timelines.append([f"{arm} seed {seed}", title, timeline_text(ph[key]) or "–"])
        if cells:
            rows = [[name] + [by_run.get(i, "–") for i in range(len(runs))] for name, by_run in cells.items()]
            what = "per layer" if per == "layer" else "per component, averaged over layers"
            out.append(((f"Phase read-out, {title} (DESIGN 2.7): {what}, the step of the first trough (end of the "
                         "initial collapse) → the step of the post-trough peak (end of diversifying: the phase "
                         "boundary), and the phase the run ended in; '–': not reached. A trough or peak counts only "
                         "when it exceeds the curve's noise threshold; a curve that moves less reads 'flat'."),
                        [per] + [f"{arm} seed {seed}" for arm, seed, _ in runs], rows))
    if timelines:
        out.append((("Specialisation timeline: layers (or components) in the order they reach their phase boundary "
                     "(step in brackets); those still diversifying or collapsing have not reached it."),
                    ["run", "metric", "timeline"], timelines))
    return out


# -- rendering ---------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[\[\]\d.,:e+\-×→ ]*\d[\[\]\d.,:e+\-×→ ]*")  # numbers, intervals, "seed: value" lists


def _numeric_columns(header: list[str], rows: list[list[str]]) -> list[bool]:
    """Columns whose filled cells are all numbers (right-aligned)."""
    cols = []
    for i in range(len(header)):
        cells = [r[i] for r in rows if i < len(r) and r[i] not in ("", "–", "missed")]
        cols.append(bool(cells) and all(_NUMBER.fullmatch(c) for c in cells))
    return cols


def _markdown_table(number: int, caption: str, header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---:" if num else "---" for num in _numeric_columns(header, rows)]
    return [f"**Table {number}.** {caption}", "", "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows], ""]


def _html_table(number: int, caption: str, header: list[str], rows: list[list[str]]) -> str:
    nums = _numeric_columns(header, rows)

    def cls(i: int) -> str:
        return " class='num'" if nums[i] else ""

    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return (f"<table><caption><b>Table {number}.</b> {html.escape(caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


_STYLE = (
    "body{font-family:Georgia,'Times New Roman',serif;font-size:17px;line-height:1.5;color:#222;max-width:1100px;"
    "margin:2em auto;padding:0 1.5em}h1,h2{font-weight:normal}h2{margin-top:2em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;margin:1.5em 0;font-size:15px;border-top:2px solid #333;border-bottom:2px solid #333}"
    "caption{caption-side:top;text-align:left;padding-bottom:.5em;font-size:15px}"
    "th{border-bottom:1px solid #333;font-weight:normal;font-style:italic}"
    "td,th{padding:3px 10px;text-align:left;vertical-align:top}"
    ".num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:15px}"
    "pre{font-size:13px;background:#f7f7f7;padding:1em;overflow-x:auto}"
)


def unfinished_runs(expected: dict[str, dict[int, RunDir]], evaluations: list[str]) -> list[str]:
    """One line per run of an experiment that is missing, not finished (training, interrupted,
    stopped) or without one of the `evaluations` results: what the report of an unfinished
    experiment says first."""
    lines = []
    for arm, seeds in expected.items():
        for seed, run in seeds.items():
            status = run.read_status() if run.path.is_dir() else None
            if status is None:
                lines.append(f"{arm} seed {seed}: not started")
            elif status.get("state") != "finished":
                lines.append(f"{arm} seed {seed}: {status.get('state', 'unknown')} at step "
                             f"{status.get('step', '?')} of {status.get('total_steps', '?')}")
            elif missing := [e for e in evaluations if not run.eval_path(e).is_file()]:
                lines.append(f"{arm} seed {seed}: trained; no result yet for {', '.join(missing)}")
    return lines


def write_report(out_dir: Path, runs: dict[str, dict[int, RunDir]], baseline: str, target: float | None,
                 matched: dict[str, dict[int, RunDir]] | None = None, unfinished: list[str] | None = None,
                 sweeps: dict | None = None) -> Path:
    """The report of `runs` (arm → seed → run directory) against `baseline`; `matched`: arm → seed →
    its matched baseline run (`experiment.matched`), against which equal FLOPs are paired;
    `unfinished`: `unfinished_runs`' lines, said at the top (the numbers are then partial); `sweeps`:
    the experiment's sweep (`runner._sweep_summary`), tabled and kept in summary.json."""
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(runs)
    summary = summarise(runs, metrics, baseline, target, matched, sweeps)
    summary = summary.model_copy(update={"unfinished": list(unfinished or [])})
    for which, problems in summary.metrics_problems.items():
        log.warning("%s: %s", which, "; ".join(problems))
    curves = {a: [val_curve(rows) for rows in seeds.values()] for a, seeds in metrics.items()}
    roles = {a: e.role for a, e in summary.arms.items()}
    headline = (("Validation loss against training FLOPs: each arm's mean over seeds (line) and min–max over seeds "
                 "(band); control arms dashed; dotted: the target loss."),
                headline_plot(curves, roles, summary.target_loss, plots / "val_loss_vs_flops.png"))
    figures = [(("Validation loss against optimizer steps, training tokens and training seconds (mean over seeds; "
                 "band: min–max)."), loss_plot(curves, roles, plots / "loss.png"))]
    if summary.meta_task:
        figures.append((("Query accuracy after adaptation over optimizer steps (each meta arm, one line per seed); "
                         "dotted: chance (1/N)."), query_acc_plot(metrics, summary.meta_task, plots / "query_acc.png")))
    from ..dynamics.posthoc import compare_runs

    base = next(iter(runs[baseline].values()))
    for arm, seeds in runs.items():
        seed, run = next(iter(seeds.items()))
        for name, title in (("erank_heatmap.png", "effective rank"), ("entropy_heatmap.png", "head entropy")):
            if (run.plots_dir() / name).is_file():
                figures.append((f"{arm} (seed {seed}): {title}, layer × step.", run.plots_dir() / name))
        if arm != baseline and run.dynamics_path().is_file() and base.dynamics_path().is_file():
            for p in compare_runs(base, run, out_dir=plots / f"overlay-{arm.replace('/', '-')}",
                                  labels=[baseline, arm]):
                figures.append((f"{baseline} vs {arm}: {p.stem.replace('_', ' ')}.", p))
    write_json_atomic(out_dir / SUMMARY_FILE, summary.to_json())

    def rel(path: Path) -> Path:
        return path.relative_to(out_dir) if path.is_relative_to(out_dir) else path

    arms_text = ", ".join(f"{a} ({e.role}, {len(e.runs)} seed{'s' * (len(e.runs) > 1)})"
                          for a, e in summary.arms.items())
    intro = (f"Arms: {arms_text}. Baseline: {baseline}. Only the next-token validation loss on the fixed held-out "
             "batches is compared (DESIGN 2.6).")
    warning = ("**Unfinished experiment**: these runs are missing or not done, so the numbers below are partial.")
    md = ["# metalm experiment report", "",
          *([warning, "", *[f"- {u}" for u in summary.unfinished], ""] if summary.unfinished else []),
          intro, "", f"![Figure 1]({rel(headline[1])})", "",
          f"**Figure 1.** {headline[0]}", "", "## Verdict", "", *[f"- {v}" for v in summary.verdict], "",
          "## Results", ""]
    body = ["<h1>metalm experiment report</h1>",
            *(["<p><b>Unfinished experiment</b>: these runs are missing or not done, so the numbers below are "
               "partial.</p><ul>", *[f"<li>{html.escape(u)}</li>" for u in summary.unfinished], "</ul>"]
              if summary.unfinished else []),
            f"<p>{html.escape(intro)}</p>",
            (f"<figure><img alt='Figure 1' src='data:image/png;base64,{_png(headline[1])}'>"
             f"<figcaption><b>Figure 1.</b> {html.escape(headline[0])}</figcaption></figure>"),
            "<h2>Verdict</h2><ul>", *[f"<li>{html.escape(v)}</li>" for v in summary.verdict], "</ul>",
            "<h2>Results</h2>"]
    for number, (caption, header, rows) in enumerate(tables(summary), start=1):
        md += _markdown_table(number, caption, header, rows)
        body.append(_html_table(number, caption, header, rows))
    md += ["## Further figures", ""]
    body.append("<h2>Further figures</h2>")
    for number, (caption, path) in enumerate(figures, start=2):
        md += [f"![Figure {number}]({rel(path)})", "", f"**Figure {number}.** {caption}", ""]
        body.append(f"<figure><img alt='Figure {number}' src='data:image/png;base64,{_png(path)}'>"
                    f"<figcaption><b>Figure {number}.</b> {html.escape(caption)}</figcaption></figure>")
    configs = yaml.safe_dump(summary.configs, sort_keys=False)
    versions = yaml.safe_dump(summary.versions, sort_keys=False)
    md += ["## Software", "", "```", versions, "```", "", "## Configs", "", "```yaml", configs, "```"]
    body += ["<h2>Software</h2><pre>", html.escape(versions), "</pre><h2>Configs</h2><pre>", html.escape(configs), "</pre>"]
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    write_text_atomic(
        out_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>metalm report</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>")
    return out_dir / "report.md"
