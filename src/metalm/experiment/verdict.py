"""The report's verdict: plain-language findings computed from `summary.json`'s numbers (DESIGN 2.6).

Only "not yet learning" is said of runs at the unigram stage; an effect is credited to
meta-learning only when its meta task was learned, otherwise it is "associated with" the meta arm.
"""

from __future__ import annotations

from typing import Any

from .formatting import _dropped, _interval, _seeds
from .regime import UNIGRAM_MARGIN, UNIGRAM_STAGE
from .summary import ArmSummary, Attribution, ExperimentSummary, MetaTaskSummary, PairedDifference, RealisedEpisode


def _not_learning(summary: ExperimentSummary, arms: list[str]) -> list[str]:
    """Those of `arms` at the unigram stage."""
    return [a for a in arms if a in summary.arms and summary.arms[a].regime.label == UNIGRAM_STAGE]


def _where(pd: PairedDifference, base: str, arm: str) -> str:
    """Which runs a pairing at equal FLOPs read mid-schedule, with the step and LR fraction there."""
    reads = []
    for s, d in pd.per_seed.items():
        for run in d.mid_schedule:
            at = d.read_at(run)
            lr = "" if at.lr_fraction is None else f", LR {at.lr_fraction:.2f} of peak"
            reads.append(f"seed {s}: {base if run == 'baseline' else arm} at step {at.step:.1f}{lr}")
    return "; ".join(reads)


def _paired_line(arm: str, base: str, pd: PairedDifference) -> str:
    matched = pd.against == "matched baseline"
    against = f"{base}'s matched baseline runs" if matched else base
    if not pd.n or pd.mean is None:
        return f"At equal FLOPs no seed of {arm} can be paired with {against} ({_dropped(pd.dropped)})."
    mean, ci = pd.mean, pd.ci
    if ci and ci[0] <= 0 <= ci[1]:
        reading = f"not distinguishable from {against}"
    else:
        reading = f"{'lower' if mean < 0 else 'higher'} than {against}" + ("" if ci else " in the one seed")
    where = ("each seed at the end of both schedules (a baseline run whose final FLOPs match the arm's)"
             if matched else "per seed, the largest budget both runs reached")
    minus = f"that of {against}" if matched else f"{base}'s"
    line = (f"At equal FLOPs ({where}), {arm}'s validation loss minus {minus} is {mean:+.4f} nats/token "
            f"({_interval(pd)}) over {_seeds(pd.per_seed)}: {reading}")
    line += f" ({_dropped(pd.dropped)})." if pd.dropped else "."
    if mid := _where(pd, base, arm):
        line += (f" This pairing reads a run mid-schedule, before its learning rate decayed ({mid}); "
                 "set matched_baselines: true for runs that end there.")
    return line


def _arm_lines(arm: str, entry: ArmSummary, base: str) -> tuple[str, list[str]]:
    """(headline, further lines) of an arm against the baseline: the speed-up when some seed of both
    reached the target, else the paired difference at equal FLOPs."""
    assert entry.speedup is not None and entry.paired_difference_at_equal_flops is not None  # not the baseline
    sp = entry.speedup["flops"]
    paired = _paired_line(arm, base, entry.paired_difference_at_equal_flops)
    if not sp.n or sp.mean is None:
        n = len(entry.cost_to_target)
        return paired, [(f"No speed-up for {arm}: in none of its {n} seed(s) did both {arm} and {base} reach the "
                         f"target ({_dropped(sp.dropped)}).")]
    mean = sp.mean
    line = (f"{arm} reached the target with {1 / mean:.3f}× the FLOPs of {base} (speed-up {mean:.3f}×, "
            f"{_interval(sp, signed=False, digits=3)}) over {_seeds(sp.per_seed)}")
    line += f" ({_dropped(sp.dropped)})" if sp.dropped else ""
    line += f" — {'less' if mean > 1 else 'more'} compute than {base}."
    more = [paired]
    tok, time = entry.speedup["tokens"].mean, entry.speedup["time"].mean
    if tok and time:
        more.append(f"{arm} needed {1 / tok:.3f}× the training tokens and {1 / time:.3f}× the "
                    f"training time of {base} to get there.")
    return line, more


def _not_learning_line(what: str, stalled: list[str], unigram: float | None) -> str:
    return (f"{what}: not yet learning — {', '.join(stalled)} ended less than {UNIGRAM_MARGIN} nat below the unigram "
            f"cross-entropy {unigram:.4f}, so nothing beyond that is concluded (the numbers are in the tables).")


def _attribution_line(att: Attribution, summary: ExperimentSummary) -> str:
    meta = att.effect == "meta-arm"
    what = (f"Meta-arm effect ({att.arm} − its momentum control {att.control})" if meta
            else f"Replay effect (momentum control {att.arm} − skip control {att.control})")
    if not att.n or att.mean is None:
        return f"{what}: no seed has both runs ({_dropped(att.dropped)}); nothing is attributed."
    if stalled := _not_learning(summary, [att.arm, att.control]):
        return _not_learning_line(what, stalled, summary.unigram_ce)
    mean, ci = att.mean, att.ci
    task = summary.meta_task.get(att.arm) if meta else None
    cause = "meta-learning" if meta else "AdamW momentum replay on meta steps"
    if not ci:
        reading = f"one seed, no interval: too few seeds to credit any effect to {cause}"
    elif ci[0] <= 0 <= ci[1]:
        reading = f"not distinguishable from zero: no effect can be credited to {cause}"
    elif meta and not (task is not None and task.learned):
        reading = (f"a {'lower' if mean < 0 else 'higher'} validation loss associated with the meta arm's meta work; "
                   "the meta task was not learned (query accuracy not above chance by its interval), so it is not "
                   "credited to meta-learning")
    elif meta:
        reading = (f"meta-learning {'lowers' if mean < 0 else 'raises'} the validation loss beyond what momentum "
                   "replay alone gives (the meta task was learned)")
    else:
        reading = (f"replaying AdamW momentum on meta steps gives a {'lower' if mean < 0 else 'higher'} validation "
                   "loss than skipping them")
    curve = att.curve_mean
    return (f"{what}, paired at equal optimizer steps over {_seeds(att.per_seed)}: {mean:+.4f} nats/token at the "
            f"final evaluation ({_interval(att)}), {curve.mean:+.4f} averaged over the curve ({_interval(curve)}) — "
            f"{reading}.")


def _meta_task_line(arm: str, task: MetaTaskSummary) -> str:
    acc, gain = task.query_acc, task.inner_loop_gain
    if not acc.n or acc.mean is None:
        return f"Meta task of {arm}: no query accuracy was logged in the {task.window}."
    over = f"over {acc.n} seeds" if task.over == "seeds" else f"over {acc.n} rows of one seed"
    gain_text = (f" The inner loop lowers the support loss by {gain.mean:.4f} nats ({_interval(gain)})."
                 if gain.n and gain.mean is not None else "")
    if task.chance is None:
        line = f"Meta task of {arm}: query accuracy {acc.mean:.4f} ({over}); its N is unknown, so no chance level."
        if task.configured.get("task") == "lm":
            line = (f"Meta task of {arm} (LM tasks): query next-token accuracy after adaptation {acc.mean:.4f} "
                    f"({over}); an LM task has no N-way chance level, so it is not judged learned by accuracy and no "
                    "effect is credited to meta-learning.")
        return line + gain_text
    state = ("learned: query accuracy above chance by its interval" if task.learned
             else "not learned: query accuracy not above chance by its interval")
    line = (f"Meta task of {arm} ({task.n_way}-way, chance {task.chance:.4f}): query accuracy after adaptation "
            f"{acc.mean:.4f} in the {task.window} ({_interval(acc, signed=False)}, {over}) — {state}.")
    line += gain_text
    if task.realised_episode is not None:
        line += " " + _realised_text(task.realised_episode, task.configured)
    return line


def _realised_text(ep: RealisedEpisode, configured: dict[str, Any] | None = None) -> str:
    """The realised N-way K-shot (means over the meta rows), next to the configured one."""
    parts = [f"{ep.classes:.1f}-way"] if ep.classes is not None else []
    if ep.support_min is not None and ep.support_median is not None:
        parts.append(f"{ep.support_median:.1f}-shot (support items per class: median {ep.support_median:.1f}, "
                     f"min {ep.support_min:.1f})")
    if ep.query_items is not None:
        parts.append(f"{ep.query_items:.1f} query items")
    text = f"Realised episodes (mean over {ep.rows} meta rows): " + ", ".join(parts)
    c = configured or {}
    if c.get("n_way") and c.get("layout") == "dense":  # K and Q are caps per row (DESIGN 2.3)
        text += f"; configured {c['n_way']}-way, up to {c.get('k_shot')} support and {c.get('q_query')} query positions per row"
    elif c.get("n_way"):
        text += f"; configured {c['n_way']}-way {c.get('k_shot')}-shot, {c.get('q_query')} queries per class"
    return text + "."


def _regime_line(summary: ExperimentSummary) -> str | None:
    unigram = summary.unigram_ce
    if unigram is None:
        return None
    stalled = _not_learning(summary, list(summary.arms))
    line = (f"Regime: the validation set's unigram cross-entropy is {unigram:.4f} nats/token (training-token "
            "frequencies, add-one smoothed). ")
    if not stalled:
        return line + f"Every arm ended at least {UNIGRAM_MARGIN} nat below it (learning)."
    return line + (f"At the unigram stage (ending less than {UNIGRAM_MARGIN} nat below it): {', '.join(stalled)} — "
                   "not yet learning; nothing beyond that is concluded from them.")


def _tuning_lines(summary: ExperimentSummary) -> list[str]:
    """Which setting each swept arm (and the controls that share its schedule) ran at, and which arms
    ran untuned beside tuned ones (DESIGN 2.6: tuned against tuned); nothing without a sweep."""
    sweeps = summary.sweeps
    if not sweeps:
        return []
    seeds = ", ".join(map(str, sweeps.seeds))
    parts, tuned = [], set()
    for arm, entry in sweeps.arms.items():
        takers = [a for a in entry.taken_by or [arm] if a != arm]
        tuned.update([arm, *takers])
        also = f" (and so did {', '.join(takers)}, sharing its schedule)" if takers else ""
        parts.append(f"{arm} ran at {entry.chosen_name or 'no chosen setting yet'}{also}")
    lines = [f"Tuned against tuned: each swept arm runs at its setting with the lowest mean final validation loss on "
             f"sweep seed(s) {seeds}: " + "; ".join(parts) + "."]
    edges = [f"{arm}: {', '.join(entry.at_edge)}" for arm, entry in sweeps.arms.items() if entry.at_edge]
    if edges:
        lines.append(f"The sweep's choice lies at the edge of its grid ({'; '.join(edges)}): the best setting may lie "
                     "beyond it, so the arms may not be at their best; widen the grid to be sure.")
    untuned = [a for a in summary.arms if a not in tuned]
    if untuned:
        lines.append(f"{', '.join(untuned)} ran at {'its' if len(untuned) == 1 else 'their'} configured settings, not "
                     "swept: comparisons with them are not tuned against tuned.")
    return lines


def verdict(summary: ExperimentSummary) -> list[str]:
    """Plain-language findings: the regime, each arm's headline against the baseline (its speed-up to
    the target, or — when it has none — its paired difference at equal FLOPs; only "not yet
    learning" for runs at the unigram stage), the control-arm attributions at equal steps, whether
    each meta task was learned, the target and every run that missed it, then the details."""
    base, target = summary.baseline, summary.target_loss
    if target is None:
        return ["no validation curve to compare"]
    arms = summary.arms
    headlines, details = [], []
    for arm, entry in arms.items():
        if arm != base and entry.control == "none":
            if stalled := _not_learning(summary, [arm, base]):
                headlines.append(_not_learning_line(f"{arm} against {base}", stalled, summary.unigram_ce))
                continue
            headline, more = _arm_lines(arm, entry, base)
            headlines.append(headline)
            details += more
    regime_line = _regime_line(summary)
    lines = ([regime_line] if regime_line else []) + _tuning_lines(summary) + headlines
    lines += [_attribution_line(att, summary) for att in summary.attributions]
    lines += [_meta_task_line(arm, task) for arm, task in summary.meta_task.items()]
    controls = summary.controls
    for arm in controls.meta_without_control:
        lines.append(f"{arm} has no momentum control arm (meta.control: momentum) in this experiment, so its "
                     f"difference from {base} cannot be credited to meta-learning: it may come from AdamW momentum "
                     f"replay on meta steps (DESIGN 2.4).")
    for arm, why in controls.unpaired.items():
        lines.append(f"Control arm {arm} is paired with no arm ({why}): nothing is attributed from it.")
    for run, problems in summary.metrics_problems.items():
        lines.append(f"Warning: {run}: {'; '.join(problems)} — its curve has holes; its numbers are less certain.")
    lines.append(f"Target validation loss {target:.4f} nats/token ({summary.target_source}).")
    misses = [f"{arm} {_seeds(e.missed_target)}" for arm, e in arms.items() if e.missed_target]
    lines.append("Runs that never reached the target (no cost, no speed-up): " + "; ".join(misses) + "."
                 if misses else "Every run reached the target.")
    return lines + details
