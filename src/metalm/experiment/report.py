"""The experiment report: `summary.json` (every number), `report.md` and a self-contained
`report.html` (images embedded), with a plain-language verdict computed from the numbers."""

from __future__ import annotations

import base64
import html
import platform
from pathlib import Path

import numpy as np
import yaml

from ..atomic import write_json_atomic, write_text_atomic
from ..run_dir import RunDir
from .compare import MEASURES, cost_to_target, loss_at, mean_ci, speedups, val_curve

LABELS = {"step": "optimizer steps", "tokens": "training tokens", "flops": "FLOPs", "time": "seconds (training)"}


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


def summarise(runs: dict[str, dict[int, Path]], metrics: dict[str, dict[int, list[dict]]], baseline: str,
              target: float | None) -> dict:
    curves = {a: {s: val_curve(rows) for s, rows in by_seed.items()} for a, by_seed in metrics.items()}
    finals = {a: [c["val_loss"][-1] for c in cs.values() if c["val_loss"]] for a, cs in curves.items()}
    base_final = finals[baseline]
    target_source = "given" if target is not None else f"mean final validation loss of the {baseline!r} arm"
    if target is None:
        target = float(np.mean(base_final)) if base_final else None
    summary = {"baseline": baseline, "target_loss": target, "target_source": target_source, "arms": {}}
    costs = {a: {s: (cost_to_target(c, target) if target is not None else None) for s, c in cs.items()}
             for a, cs in curves.items()}
    # Equal compute: the largest budget every run of every arm reached.
    budgets = {m: min((c[m][-1] for cs in curves.values() for c in cs.values() if c[m]), default=None)
               for m in ("tokens", "flops")}
    for arm, seeds in runs.items():
        entry = {"runs": {str(s): str(d) for s, d in seeds.items()},
                 "final_val_loss": mean_ci(finals[arm]),
                 "cost_to_target": {str(s): c for s, c in costs[arm].items()},
                 "val_loss_at_equal": {m: {"budget": b, **mean_ci([v for v in (loss_at(c, m, b) for c in curves[arm].values())
                                                                  if v is not None])}
                                       for m, b in budgets.items() if b is not None}}
        if arm != baseline:
            entry["speedup"] = speedups(costs[baseline], costs[arm])
        evals = {}
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
        entry["evaluations"] = evals
        entry["meta_query_acc_last"] = mean_ci([r["query_acc"] for rows in metrics[arm].values()
                                                for r in rows[-20:] if r.get("query_acc") is not None])
        summary["arms"][arm] = entry
    summary["verdict"] = verdict(summary)
    summary["versions"] = _versions()
    summary["configs"] = {a: {s: RunDir(d).read_config() for s, d in seeds.items()}
                          for a, seeds in runs.items()}
    return summary


def verdict(summary: dict) -> list[str]:
    lines = []
    base, target = summary["baseline"], summary["target_loss"]
    if target is None:
        return ["no validation curve to compare"]
    for arm, entry in summary["arms"].items():
        if arm == base:
            continue
        sp = entry["speedup"]["flops"]
        n_seeds = len(entry["cost_to_target"])
        reached = n_seeds - len(sp["not_reached"])
        if reached == 0:
            lines.append(f"{arm} did not reach the target validation loss {target:.4f} ({summary['target_source']}) "
                         f"within the budget in any of {n_seeds} seed(s).")
            continue
        mean = sp["mean"]
        ci = f" (95% CI of the speed-up {sp['ci'][0]:.2f}–{sp['ci'][1]:.2f})" if sp.get("ci") else " (one seed: no CI)"
        partial = f" in {reached} of {n_seeds} seeds" if reached < n_seeds else ""
        direction = "less" if mean > 1 else "more"
        lines.append(f"{arm} reached {base}'s target validation loss {target:.4f}{partial} with {1 / mean:.2f}× the FLOPs "
                     f"of {base} (speed-up {mean:.2f}×{ci}) — {direction} compute than {base}.")
        tok = entry["speedup"]["tokens"]
        if tok["mean"] is not None:
            lines.append(f"{arm} needed {1 / tok['mean']:.2f}× the training tokens and "
                         f"{1 / entry['speedup']['time']['mean']:.2f}× the training time of {base} to get there.")
    return lines


def _png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def loss_plot(metrics: dict[str, dict[int, list[dict]]], out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 3.6), dpi=90)
    axes = fig.subplots(1, 4)
    for color, (arm, seeds) in zip(("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown") * 4,
                                   metrics.items()):
        curves = [val_curve(rows) for rows in seeds.values()]
        n = min(len(c["val_loss"]) for c in curves)
        for ax, m in zip(axes, MEASURES):
            xs = np.mean([c[m][:n] for c in curves], axis=0)
            ys = np.array([c["val_loss"][:n] for c in curves])
            ax.plot(xs, ys.mean(axis=0), color=color, label=f"{arm} ({len(curves)} seed{'s' * (len(curves) > 1)})")
            if len(curves) > 1:
                ax.fill_between(xs, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.2)
            ax.set_xlabel(LABELS[m])
    axes[0].set_ylabel("validation loss (nats/token)")
    axes[0].legend()
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(out))
    return out


def _fmt(v, digits=4):
    return "–" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the markdown and HTML renderings."""
    out = []
    rows = []
    for arm, e in summary["arms"].items():
        f = e["final_val_loss"]
        rows.append([arm, _fmt(f["mean"]), "–" if not f.get("ci") else f"{f['ci'][0]:.4f}–{f['ci'][1]:.4f}",
                     *[_fmt(e["val_loss_at_equal"].get(m, {}).get("mean")) for m in ("tokens", "flops")],
                     _fmt(e["meta_query_acc_last"]["mean"], 3)])
    out.append(("Validation loss", ["arm", "final (mean)", "95% CI", "at equal tokens", "at equal FLOPs",
                                     "meta query acc (last rows)"], rows))
    rows = []
    for arm, e in summary["arms"].items():
        if "speedup" not in e:
            continue
        for m in MEASURES:
            sp = e["speedup"][m]
            rows.append([arm, m, _fmt(sp["mean"], 3), "–" if not sp.get("ci") else f"{sp['ci'][0]:.3f}–{sp['ci'][1]:.3f}",
                         ", ".join(f"{s}: {v:.3f}" for s, v in sp["per_seed"].items()) or "–",
                         ", ".join(map(str, sp["not_reached"])) or "–"])
    out.append((f"Speed-up to the target loss {_fmt(summary['target_loss'])} ({summary['target_source']})",
                ["arm", "measure", "speed-up (mean)", "95% CI", "per seed", "seeds not reaching"], rows))
    rows = []
    for arm, e in summary["arms"].items():
        for key, per_seed in e["evaluations"].get("ner", {}).items():
            langs = next(iter(per_seed.values())).keys()
            for lang in langs:
                vals = [s[lang]["f1"]["mean"] for s in per_seed.values()]
                strict = [s[lang]["strict_f1"]["mean"] for s in per_seed.values()]
                rows.append([arm, key, lang, f"{100 * np.mean(vals):.1f}", f"{100 * np.mean(strict):.1f}"])
    if rows:
        out.append(("NER F1 (× 100, mean over seeds)", ["arm", "evaluation", "test language", "F1", "strict F1"], rows))
    rows = []
    for arm, e in summary["arms"].items():
        ppl = e["evaluations"].get("perplexity", {})
        sets = {}
        for res in ppl.values():
            for r in res["sets"]:
                sets.setdefault(r["data"], []).append(r["perplexity"])
        rows += [[arm, Path(k).name or k, f"{np.mean(v):.2f}"] for k, v in sets.items()]
        fs = e["evaluations"].get("fewshot", {})
        if fs:
            acc = [r["accuracy"] for r in fs.values()]
            rows.append([arm, "few-shot query acc before → after",
                         f"{np.mean([a['query_acc_before']['mean'] for a in acc]):.3f} → "
                         f"{np.mean([a['query_acc_after']['mean'] for a in acc]):.3f}"])
    if rows:
        out.append(("Perplexity and few-shot accuracy (mean over seeds)", ["arm", "set", "value"], rows))
    out.extend(phase_tables(summary))
    return out


def phase_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The dynamics phase read-out side by side: per metric, one row per layer and one column per
    arm × seed, each cell the smoothed peak step and the phase it implies."""
    runs = [(arm, seed, ph) for arm, e in summary["arms"].items()
            for seed, ph in sorted(e["evaluations"].get("phases", {}).items(), key=lambda kv: int(kv[0]))]
    out = []
    for key, title in (("effective_rank", "activation effective rank"), ("head_entropy", "head entropy")):
        cells: dict[str, dict[int, str]] = {}
        for i, (_, _, ph) in enumerate(runs):
            for layer in (ph.get(key) or {}).get("layers", []):
                cells.setdefault(layer["name"], {})[i] = f"{layer['peak_step']} ({layer['phase']})"
        if cells:
            rows = [[name] + [by_run.get(i, "–") for i in range(len(runs))] for name, by_run in cells.items()]
            out.append((f"Phase read-out, {title}: smoothed peak step (phase)",
                        ["layer"] + [f"{arm} seed {seed}" for arm, seed, _ in runs], rows))
    return out


def write_report(out_dir: Path, runs: dict[str, dict[int, Path]], baseline: str, target: float | None) -> Path:
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = read_metrics(runs)
    summary = summarise(runs, metrics, baseline, target)
    images = [("Validation loss vs steps, tokens, FLOPs and seconds (mean over seeds; band: min–max)",
               loss_plot(metrics, plots / "loss.png"))]
    from ..dynamics.posthoc import compare_runs

    base_dir = next(iter(runs[baseline].values()))
    for arm, seeds in runs.items():
        seed, d = next(iter(seeds.items()))
        for name, title in (("erank_heatmap.png", "effective rank"), ("entropy_heatmap.png", "head entropy")):
            if (RunDir(d).plots_dir() / name).is_file():
                images.append((f"{arm} (seed {seed}): {title}, layer × step", RunDir(d).plots_dir() / name))
        if arm != baseline and RunDir(d).dynamics_path().is_file() and RunDir(base_dir).dynamics_path().is_file():
            for p in compare_runs(base_dir, d, out_dir=plots / f"overlay-{arm}", labels=[baseline, arm]):
                images.append((f"{baseline} vs {arm}: {p.stem.replace('_', ' ')}", p))
    write_json_atomic(out_dir / "summary.json", summary)
    md = ["# metalm experiment report", "", "## Verdict", "", *[f"- {v}" for v in summary["verdict"]], ""]
    body = ["<h1>metalm experiment report</h1>", "<h2>Verdict</h2><ul>",
            *[f"<li>{html.escape(v)}</li>" for v in summary["verdict"]], "</ul>"]
    for title, header, rows in tables(summary):
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
               *["| " + " | ".join(r) + " |" for r in rows], ""]
        body += [f"<h2>{html.escape(title)}</h2><table><tr>", *[f"<th>{html.escape(h)}</th>" for h in header], "</tr>",
                 *["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows], "</table>"]
    md += ["## Figures", ""]
    body.append("<h2>Figures</h2>")
    for title, path in images:
        rel = path.relative_to(out_dir) if path.is_relative_to(out_dir) else path
        md += [f"**{title}**", "", f"![{title}]({rel})", ""]
        body.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{_png(path)}'>"
                    f"<figcaption>{html.escape(title)}</figcaption></figure>")
    configs = yaml.safe_dump(summary["configs"], sort_keys=False)
    versions = yaml.safe_dump(summary["versions"], sort_keys=False)
    md += ["## Software", "", "```", versions, "```", "", "## Configs", "", "```yaml", configs, "```"]
    body += ["<h2>Software</h2><pre>", html.escape(versions), "</pre><h2>Configs</h2><pre>", html.escape(configs), "</pre>"]
    write_text_atomic(out_dir / "report.md", "\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}figure{margin:1em 0}")
    write_text_atomic(
        out_dir / "report.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>metalm report</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>")
    return out_dir / "report.md"
