"""The experiment report: `summary.json` (every number), `report.md` and a self-contained
`report.html` (images embedded), with a plain-language verdict computed from the numbers.

The report reads like a paper's results section: the headline figure (validation loss against
FLOPs, every arm's mean over seeds with its min–max band, control arms dashed), the verdict, then
numbered tables — final loss, cost to the target loss (misses listed), speed-ups (dropped seeds
said), paired differences at equal FLOPs, control-arm attributions (DESIGN 2.4), evaluations and
the phase read-out (DESIGN 2.7). Numbers are printed with fixed decimals (losses with four).
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
from ..dynamics.phases import SECTIONS, phase_text, timeline_text
from ..run_dir import RunDir
from .compare import (
    MEASURES,
    control_kind,
    cost_to_target,
    default_target,
    is_meta_arm,
    loss_at,
    mean_ci,
    missed_target,
    pair_controls,
    paired_difference,
    speedups,
    val_curve,
)

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


def read_metrics(runs: dict[str, dict[int, Path]]) -> dict[str, dict[int, list[dict]]]:
    """Every run's metrics rows, read once for the whole report."""
    return {a: {s: RunDir(d).read_metrics() for s, d in seeds.items()} for a, seeds in runs.items()}


# -- numbers -----------------------------------------------------------------------------------------

def _loss(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.4f}"


def _ci(ci: list[float] | None, digits: int = 4, signed: bool = False) -> str:
    if not ci:
        return "–"
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if signed else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _amount(measure: str, v: float | None) -> str:
    """A cost or budget: steps and seconds with one decimal, tokens and FLOPs in scientific notation."""
    if v is None:
        return "–"
    return f"{v:.1f}" if measure in ("step", "time") else f"{v:.3e}"


def _seeds(seeds) -> str:
    seeds = list(seeds)
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def _role(arm: str, baseline: str, config: dict | None) -> str:
    kind = control_kind(config)
    if kind != "none":
        return f"control ({kind})"
    if arm == baseline:
        return "baseline"
    return "meta" if is_meta_arm(config) else "arm"


# -- summary -----------------------------------------------------------------------------------------

def summarise(runs: dict[str, dict[int, Path]], metrics: dict[str, dict[int, list[dict]]], baseline: str,
              target: float | None) -> dict:
    configs = {a: {s: RunDir(d).read_config() for s, d in seeds.items()} for a, seeds in runs.items()}
    arm_config = {a: next((c for c in cs.values() if c), None) for a, cs in configs.items()}
    curves = {a: {s: val_curve(rows) for s, rows in by_seed.items()} for a, by_seed in metrics.items()}
    finals = {a: {s: c["val_loss"][-1] for s, c in cs.items() if c["val_loss"]} for a, cs in curves.items()}
    if target is None:
        target = default_target(list(finals[baseline].values()))
        target_source = (f"the highest final validation loss among the {len(finals[baseline])} seed(s) of the "
                         f"{baseline!r} arm, so every {baseline} seed reaches it")
    else:
        target_source = "given"
    summary = {"baseline": baseline, "target_loss": target, "target_source": target_source, "arms": {}}
    costs = {a: {s: (cost_to_target(c, target) if target is not None else None) for s, c in cs.items()}
             for a, cs in curves.items()}
    # Equal compute across the whole experiment: the largest budget every run of every arm reached.
    budgets = {m: min((c[m][-1] for cs in curves.values() for c in cs.values() if c[m]), default=None)
               for m in ("tokens", "flops")}
    for arm, seeds in runs.items():
        entry = {"role": _role(arm, baseline, arm_config[arm]), "control": control_kind(arm_config[arm]),
                 "runs": {str(s): str(d) for s, d in seeds.items()},
                 "final_val_loss": {**mean_ci(list(finals[arm].values())), "per_seed": finals[arm]},
                 "cost_to_target": {str(s): c for s, c in costs[arm].items()},
                 "missed_target": missed_target(costs[arm]) if target is not None else [],
                 "val_loss_at_equal": {m: {"budget": b, **mean_ci([v for v in (loss_at(c, m, b) for c in curves[arm].values())
                                                                  if v is not None])}
                                       for m, b in budgets.items() if b is not None}}
        if arm != baseline:
            entry["speedup"] = speedups(costs[baseline], costs[arm])
            entry["paired_difference_at_equal_flops"] = paired_difference(curves[baseline], curves[arm])
        entry["evaluations"] = _evaluations(seeds)
        entry["meta_query_acc_last"] = mean_ci([r["query_acc"] for rows in metrics[arm].values()
                                                for r in rows[-20:] if r.get("query_acc") is not None])
        summary["arms"][arm] = entry
    pairs = pair_controls(arm_config)
    summary["attributions"] = [
        {"effect": effect, "arm": p["arm"], "control": p["control"], **paired_difference(curves[p["control"]], curves[p["arm"]])}
        for effect, key in (("meta-arm", "meta_effect"), ("replay", "replay_effect")) for p in pairs[key]]
    summary["controls"] = {"unpaired": pairs["unpaired"], "meta_without_control": pairs["meta_without_control"]}
    summary["metrics_problems"] = {f"{a} seed {s}": problems for a, seeds in runs.items() for s, d in seeds.items()
                                   if (problems := RunDir(d).metrics_problems(metrics[a][s]))}
    summary["verdict"] = verdict(summary)
    summary["versions"] = _versions()
    summary["configs"] = configs
    return summary


def _evaluations(seeds: dict[int, Path]) -> dict:
    evals: dict = {}
    for s, d in seeds.items():
        run = RunDir(d)
        for name in ("perplexity", "fewshot"):
            res = run.read_eval(name)
            if res:
                evals.setdefault(name, {})[str(s)] = res
        for name in run.eval_names("ner-"):
            res = run.read_eval(name)
            if isinstance(res, dict) and "summary" in res:
                evals.setdefault("ner", {}).setdefault(name, {})[str(s)] = res["summary"]
        phases = run.read_phases()
        if phases:
            evals.setdefault("phases", {})[str(s)] = phases
    return evals


# -- verdict -----------------------------------------------------------------------------------------

def _interval(stat: dict, signed: bool = True, digits: int = 4) -> str:
    if stat.get("ci"):
        return f"95% CI {_ci(stat['ci'], digits, signed)}"
    return "one seed: no interval"


def _dropped(dropped: dict) -> str:
    return "; ".join(f"seed {s} dropped: {why}" for s, why in dropped.items())


def _paired_line(arm: str, base: str, pd: dict) -> str:
    if not pd["n"]:
        return f"At equal FLOPs no seed of {arm} can be paired with {base} ({_dropped(pd['dropped'])})."
    mean, ci = pd["mean"], pd.get("ci")
    if ci and ci[0] <= 0 <= ci[1]:
        reading = f"not distinguishable from {base}"
    else:
        reading = f"{'lower' if mean < 0 else 'higher'} than {base}" + ("" if ci else " in the one seed")
    line = (f"At equal FLOPs (per seed, the largest budget both runs reached), {arm}'s validation loss minus {base}'s "
            f"is {mean:+.4f} nats/token ({_interval(pd)}) over {_seeds(pd['per_seed'])}: {reading}")
    return line + (f" ({_dropped(pd['dropped'])})." if pd["dropped"] else ".")


def _arm_lines(arm: str, entry: dict, base: str) -> tuple[str, list[str]]:
    """(headline, further lines) of an arm against the baseline: the speed-up when some seed of both
    reached the target, else the paired difference at equal FLOPs."""
    sp, pd = entry["speedup"]["flops"], entry["paired_difference_at_equal_flops"]
    paired = _paired_line(arm, base, pd)
    if not sp["n"]:
        n = len(entry["cost_to_target"])
        return paired, [(f"No speed-up for {arm}: in none of its {n} seed(s) did both {arm} and {base} reach the "
                         f"target ({_dropped(sp['dropped'])}).")]
    mean = sp["mean"]
    line = (f"{arm} reached the target with {1 / mean:.3f}× the FLOPs of {base} (speed-up {mean:.3f}×, "
            f"{_interval(sp, signed=False, digits=3)}) over {_seeds(sp['per_seed'])}")
    line += f" ({_dropped(sp['dropped'])})" if sp["dropped"] else ""
    line += f" — {'less' if mean > 1 else 'more'} compute than {base}."
    more = [paired]
    tok, time = entry["speedup"]["tokens"], entry["speedup"]["time"]
    if tok["mean"] and time["mean"]:
        more.append(f"{arm} needed {1 / tok['mean']:.3f}× the training tokens and {1 / time['mean']:.3f}× the "
                    f"training time of {base} to get there.")
    return line, more


def _attribution_line(att: dict) -> str:
    meta = att["effect"] == "meta-arm"
    what = (f"Meta-arm effect ({att['arm']} − its momentum control {att['control']})" if meta
            else f"Replay effect (momentum control {att['arm']} − skip control {att['control']})")
    if not att["n"]:
        return f"{what}: no seed has both runs ({_dropped(att['dropped'])}); nothing is attributed."
    mean, ci = att["mean"], att.get("ci")
    cause = "meta-learning" if meta else "AdamW momentum replay on meta steps"
    if not ci:
        reading = f"one seed, no interval: too few seeds to credit any effect to {cause}"
    elif ci[0] <= 0 <= ci[1]:
        reading = f"not distinguishable from zero: no effect can be credited to {cause}"
    elif mean < 0:
        reading = (f"{cause} lowers the validation loss" +
                   (" beyond what momentum replay alone gives" if meta else " compared with skipping meta steps"))
    else:
        reading = (f"{cause} raises the validation loss" +
                   (" compared with momentum replay alone" if meta else " compared with skipping meta steps"))
    return (f"{what}, paired at equal FLOPs over {_seeds(att['per_seed'])}: {mean:+.4f} nats/token "
            f"({_interval(att)}) — {reading}.")


def verdict(summary: dict) -> list[str]:
    """Plain-language findings: each arm's headline against the baseline (its speed-up to the target,
    or — when it has none — its paired difference at equal FLOPs), the control-arm attributions, the
    target and every run that missed it, then the details."""
    base, target = summary["baseline"], summary["target_loss"]
    if target is None:
        return ["no validation curve to compare"]
    arms = summary["arms"]
    headlines, details = [], []
    for arm, entry in arms.items():
        if arm != base and entry.get("control", "none") == "none":
            headline, more = _arm_lines(arm, entry, base)
            headlines.append(headline)
            details += more
    lines = headlines + [_attribution_line(att) for att in summary.get("attributions", [])]
    controls = summary.get("controls", {})
    for arm in controls.get("meta_without_control", []):
        lines.append(f"{arm} has no momentum control arm (meta.control: momentum) in this experiment, so its "
                     f"difference from {base} cannot be credited to meta-learning: it may come from AdamW momentum "
                     f"replay on meta steps (DESIGN 2.4).")
    for arm, why in controls.get("unpaired", {}).items():
        lines.append(f"Control arm {arm} is paired with no arm ({why}): nothing is attributed from it.")
    for run, problems in summary.get("metrics_problems", {}).items():
        lines.append(f"Warning: {run}: {'; '.join(problems)} — its curve has holes; its numbers are less certain.")
    lines.append(f"Target validation loss {target:.4f} nats/token ({summary['target_source']}).")
    misses = [f"{arm} {_seeds(e['missed_target'])}" for arm, e in arms.items() if e["missed_target"]]
    lines.append("Runs that never reached the target (no cost, no speed-up): " + "; ".join(misses) + "."
                 if misses else "Every run reached the target.")
    return lines + details


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
                label=f"{arm}{' (' + roles[arm] + ')' if control else ''}, {n} seed{'s' * (n > 1)}")
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


# -- tables ------------------------------------------------------------------------------------------

def tables(summary: dict) -> list[Table]:
    """(caption, header, rows) of every table, shared by the markdown and HTML renderings."""
    base, target = summary["baseline"], summary["target_loss"]
    arms = summary["arms"]
    out: list[Table] = []
    rows = []
    for arm, e in arms.items():
        f = e["final_val_loss"]
        per_seed = ", ".join(f"{s}: {v:.4f}" for s, v in f.get("per_seed", {}).items()) or "–"
        rows.append([arm, e.get("role", "–"), str(f["n"]), _loss(f["mean"]), _ci(f.get("ci")), per_seed,
                     *[_loss(e["val_loss_at_equal"].get(m, {}).get("mean")) for m in ("tokens", "flops")],
                     _loss(e["meta_query_acc_last"]["mean"], 3)])
    out.append((("Final validation loss (nats/token): mean over seeds with its 95% t-interval, each seed's value, "
                 "and the mean loss at the largest token and FLOPs budgets every run of the experiment reached."),
                ["arm", "role", "seeds", "final (mean)", "95% CI", "final per seed", "at equal tokens",
                 "at equal FLOPs", "meta query acc (last rows)"], rows))
    if target is not None:
        rows = [[arm, str(s), *(["missed"] * len(MEASURES) if c is None else [_amount(m, c[m]) for m in MEASURES])]
                for arm, e in arms.items() for s, c in e["cost_to_target"].items()]
        out.append(((f"Cost to reach the target validation loss {target:.4f} ({summary['target_source']}): the first "
                     "point where the linearly interpolated validation curve reaches it; 'missed' = never reached."),
                    ["arm", "seed", *[LABELS[m] for m in MEASURES]], rows))
    rows = []
    for arm, e in arms.items():
        if "speedup" not in e:
            continue
        for m in MEASURES:
            sp = e["speedup"][m]
            rows.append([arm, LABELS[m], _loss(sp["mean"], 3), _ci(sp.get("ci"), 3),
                         ", ".join(f"{s}: {v:.3f}" for s, v in sp["per_seed"].items()) or "–",
                         "; ".join(f"{s}: {why}" for s, why in sp.get("dropped", {}).items()) or "–"])
    if rows:
        out.append(((f"Speed-up over {base} (baseline cost / arm cost) to the target loss, for the seeds where both "
                     "runs reached it; every other seed is listed as dropped, with why."),
                    ["arm", "measure", "speed-up (mean)", "95% CI", "per seed", "seeds dropped"], rows))
    rows = []
    for arm, e in arms.items():
        if "paired_difference_at_equal_flops" in e:
            rows += _paired_rows(arm, e["paired_difference_at_equal_flops"])
    if rows:
        out.append(((f"Paired difference at equal FLOPs: for each seed, the arm's validation loss minus {base}'s at the "
                     "largest FLOPs budget both runs reached (curves linearly interpolated); mean and 95% t-interval "
                     "over seeds. Negative: lower loss than the baseline."),
                    ["arm", "seed", "FLOPs budget", "arm loss", "baseline loss", "difference", "95% CI"], rows))
    rows = []
    for att in summary.get("attributions", []):
        rows += _paired_rows(f"{EFFECTS[att['effect']]}: {att['arm']} − {att['control']}", att)
    if rows:
        out.append((("Attribution with control arms (DESIGN 2.4), paired at equal FLOPs: meta-arm effect = meta arm − "
                     "its momentum control (meta steps apply a zero gradient); replay effect = momentum control − skip "
                     "control (meta steps do nothing)."),
                    ["effect", "seed", "FLOPs budget", "loss", "control loss", "difference", "95% CI"], rows))
    out += _evaluation_tables(arms)
    out += phase_tables(summary)
    return out


def _paired_rows(label: str, pd: dict) -> list[list[str]]:
    rows = [[label, str(s), _amount("flops", d["budget"]), _loss(d["arm_loss"]), _loss(d["baseline_loss"]),
             _signed(d["difference"]), "–"] for s, d in pd["per_seed"].items()]
    rows += [[label, str(s), "dropped", why, "", "", ""] for s, why in pd.get("dropped", {}).items()]
    rows.append([label, f"mean of {pd['n']}", "", "", "", _signed(pd["mean"]), _ci(pd.get("ci"), signed=True)])
    return rows


def _evaluation_tables(arms: dict) -> list[Table]:
    out: list[Table] = []
    rows = []
    for arm, e in arms.items():
        for key, per_seed in e["evaluations"].get("ner", {}).items():
            langs = next(iter(per_seed.values())).keys()
            for lang in langs:
                vals = [s[lang]["f1"]["mean"] for s in per_seed.values()]
                strict = [s[lang]["strict_f1"]["mean"] for s in per_seed.values()]
                rows.append([arm, key, lang, f"{100 * np.mean(vals):.1f}", f"{100 * np.mean(strict):.1f}"])
    if rows:
        out.append(("NER F1 (× 100, mean over seeds).", ["arm", "evaluation", "test language", "F1", "strict F1"], rows))
    rows = []
    for arm, e in arms.items():
        ppl = e["evaluations"].get("perplexity", {})
        sets: dict[str, list[float]] = {}
        for res in ppl.values():
            for r in res["sets"]:
                sets.setdefault(r["data"], []).append(r["perplexity"])
        rows += [[arm, Path(k).name or k, f"{np.mean(v):.2f}"] for k, v in sets.items()]
        fs = e["evaluations"].get("fewshot", {})
        if fs:
            acc = [r["accuracy"] for r in fs.values()]
            rows.append([arm, "few-shot query acc before → after",
                         (f"{np.mean([a['query_acc_before']['mean'] for a in acc]):.3f} → "
                          f"{np.mean([a['query_acc_after']['mean'] for a in acc]):.3f}")])
    if rows:
        out.append(("Perplexity and few-shot accuracy (mean over seeds).", ["arm", "set", "value"], rows))
    return out


_NOW = {"collapse": "collapsing", "diversify": "diversifying", "compress": "compressing"}


def _phase_cell(entry: dict) -> str:
    """'trough step → peak step, current phase' of one layer's read-out ('–' for a step not reached)."""
    phase = entry.get("phase")
    if phase is None:
        return "–"
    now = _NOW.get(str(phase).rsplit("-", 1)[-1])
    if now is None:  # flat, one step, or an older read-out's key
        return phase_text(phase, short=True)
    steps = [("–" if entry.get(k) is None else str(entry[k])) for k in ("trough_step", "peak_step")]
    return f"{steps[0]} → {steps[1]}, {now}"


def phase_tables(summary: dict) -> list[Table]:
    """The dynamics phase read-out side by side: per metric, one row per layer and one column per
    arm × seed, each cell the step of the first trough, of the post-trough peak, and the phases; then
    each run's specialisation timeline."""
    runs = [(arm, seed, ph) for arm, e in summary["arms"].items()
            for seed, ph in sorted(e["evaluations"].get("phases", {}).items(), key=lambda kv: int(kv[0]))]
    out: list[Table] = []
    timelines = []
    for key, title in SECTIONS.items():
        cells: dict[str, dict[int, str]] = {}
        for i, (arm, seed, ph) in enumerate(runs):
            section = ph.get(key) or {}
            for layer in section.get("layers", []):
                cells.setdefault(layer["name"], {})[i] = _phase_cell(layer)
            if section.get("layers"):
                timelines.append([f"{arm} seed {seed}", title, timeline_text(section) or "–"])
        if cells:
            rows = [[name] + [by_run.get(i, "–") for i in range(len(runs))] for name, by_run in cells.items()]
            out.append(((f"Phase read-out, {title} (DESIGN 2.7): per layer, the step of the first trough (end of the "
                         "initial collapse) → the step of the post-trough peak (end of diversifying: the phase "
                         "boundary), and the phase the run ended in; '–': not reached."),
                        ["layer"] + [f"{arm} seed {seed}" for arm, seed, _ in runs], rows))
    if timelines:
        out.append((("Specialisation timeline: layers in the order they reach their phase boundary (step in brackets); "
                     "layers still diversifying or collapsing have not reached it."),
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


def unfinished_runs(expected: dict[str, dict[int, Path]], evaluations: list[str]) -> list[str]:
    """One line per run of an experiment that is missing, not finished (training, interrupted,
    stopped) or without one of the `evaluations` results: what the report of an unfinished
    experiment says first."""
    lines = []
    for arm, seeds in expected.items():
        for seed, path in seeds.items():
            run = RunDir(path)
            status = run.read_status() if run.path.is_dir() else None
            if status is None:
                lines.append(f"{arm} seed {seed}: not started")
            elif status.get("state") != "finished":
                lines.append(f"{arm} seed {seed}: {status.get('state', 'unknown')} at step "
                             f"{status.get('step', '?')} of {status.get('total_steps', '?')}")
            elif missing := [e for e in evaluations if not run.eval_path(e).is_file()]:
                lines.append(f"{arm} seed {seed}: trained; no result yet for {', '.join(missing)}")
    return lines


def write_report(out_dir: Path, runs: dict[str, dict[int, Path]], baseline: str, target: float | None,
                 unfinished: list[str] | None = None) -> Path:
    """`unfinished`: `unfinished_runs`' lines, said at the top (the numbers are then partial)."""
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(runs)
    summary = summarise(runs, metrics, baseline, target)
    summary["unfinished"] = list(unfinished or [])
    for run, problems in summary["metrics_problems"].items():
        log.warning("%s: %s", run, "; ".join(problems))
    curves = {a: [val_curve(rows) for rows in seeds.values()] for a, seeds in metrics.items()}
    roles = {a: e["role"] for a, e in summary["arms"].items()}
    headline = (("Validation loss against training FLOPs: each arm's mean over seeds (line) and min–max over seeds "
                 "(band); control arms dashed; dotted: the target loss."),
                headline_plot(curves, roles, summary["target_loss"], plots / "val_loss_vs_flops.png"))
    figures = [(("Validation loss against optimizer steps, training tokens and training seconds (mean over seeds; "
                 "band: min–max)."), loss_plot(curves, roles, plots / "loss.png"))]
    from ..dynamics.posthoc import compare_runs

    base_dir = next(iter(runs[baseline].values()))
    for arm, seeds in runs.items():
        seed, d = next(iter(seeds.items()))
        for name, title in (("erank_heatmap.png", "effective rank"), ("entropy_heatmap.png", "head entropy")):
            if (RunDir(d).plots_dir() / name).is_file():
                figures.append((f"{arm} (seed {seed}): {title}, layer × step.", RunDir(d).plots_dir() / name))
        if arm != baseline and RunDir(d).dynamics_path().is_file() and RunDir(base_dir).dynamics_path().is_file():
            for p in compare_runs(base_dir, d, out_dir=plots / f"overlay-{arm}", labels=[baseline, arm]):
                figures.append((f"{baseline} vs {arm}: {p.stem.replace('_', ' ')}.", p))
    write_json_atomic(out_dir / "summary.json", summary)

    def rel(path: Path) -> Path:
        return path.relative_to(out_dir) if path.is_relative_to(out_dir) else path

    arms_text = ", ".join(f"{a} ({e['role']}, {len(e['runs'])} seed{'s' * (len(e['runs']) > 1)})"
                          for a, e in summary["arms"].items())
    intro = (f"Arms: {arms_text}. Baseline: {baseline}. Only the next-token validation loss on the fixed held-out "
             "batches is compared (DESIGN 2.6).")
    warning = ("**Unfinished experiment**: these runs are missing or not done, so the numbers below are partial.")
    md = ["# metalm experiment report", "",
          *([warning, "", *[f"- {u}" for u in summary["unfinished"]], ""] if summary["unfinished"] else []),
          intro, "", f"![Figure 1]({rel(headline[1])})", "",
          f"**Figure 1.** {headline[0]}", "", "## Verdict", "", *[f"- {v}" for v in summary["verdict"]], "",
          "## Results", ""]
    body = ["<h1>metalm experiment report</h1>",
            *(["<p><b>Unfinished experiment</b>: these runs are missing or not done, so the numbers below are "
               "partial.</p><ul>", *[f"<li>{html.escape(u)}</li>" for u in summary["unfinished"]], "</ul>"]
              if summary["unfinished"] else []),
            f"<p>{html.escape(intro)}</p>",
            (f"<figure><img alt='Figure 1' src='data:image/png;base64,{_png(headline[1])}'>"
             f"<figcaption><b>Figure 1.</b> {html.escape(headline[0])}</figcaption></figure>"),
            "<h2>Verdict</h2><ul>", *[f"<li>{html.escape(v)}</li>" for v in summary["verdict"]], "</ul>",
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
    configs = yaml.safe_dump(summary["configs"], sort_keys=False)
    versions = yaml.safe_dump(summary["versions"], sort_keys=False)
    md += ["## Software", "", "```", versions, "```", "", "## Configs", "", "```yaml", configs, "```"]
    body += ["<h2>Software</h2><pre>", html.escape(versions), "</pre><h2>Configs</h2><pre>", html.escape(configs), "</pre>"]
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    write_text_atomic(
        out_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>metalm report</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>")
    return out_dir / "report.md"
