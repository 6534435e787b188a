"""`metalm experiment`: train every arm × seed, evaluate each finished run once, write the report.

Re-running resumes unfinished runs (exactly, from their checkpoints) and reuses finished runs and
evaluation results, so an interrupted experiment finishes with the same numbers. An evaluation is
reused only if it ran with the settings the experiment file now asks for (recorded in
`RUN/eval/requested.json`); change them and that evaluation runs again.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..data import cache_root
from ..data.pipeline import resolve_specs
from ..run_log import write_json_atomic
from ..trainer import train
from .report import write_report
from .spec import Experiment, load_experiment

SPEC_FILE = "experiment.yaml"


class _Requested:
    """Which settings each stored evaluation result of a run was computed with."""

    def __init__(self, out: Path) -> None:
        self.path = out / "requested.json"
        self.done = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}

    def needed(self, name: str, result: Path, settings) -> bool:
        if not result.is_file():
            return True
        if name in self.done and self.done[name] != settings:
            print(f"  {name}: settings changed since {result} was written; evaluating again")
            return True
        return False

    def record(self, name: str, settings) -> None:
        self.done[name] = settings
        write_json_atomic(self.path, self.done)


def _evaluate(exp: Experiment, arm: str, seed: int) -> None:
    cfg = exp.config(arm, seed)
    run_dir = exp.run_dir(arm, seed)
    out = run_dir / "eval"
    evals = exp.evaluations
    requested = _Requested(out)
    if evals.get("perplexity") and requested.needed("perplexity", out / "perplexity.json", evals["perplexity"]):
        from ..evaluation.perplexity import evaluate_perplexity, save_perplexity

        sets = evals["perplexity"]
        if sets is True:
            _, val, _ = resolve_specs(cfg.data, cache_root(cfg.run.cache_dir))
            sets = [val if isinstance(val, str) else val[0]] if val is not None else []
        if sets:
            save_perplexity(evaluate_perplexity(run_dir, list(sets)), run_dir)
            requested.record("perplexity", evals["perplexity"])
    if evals.get("fewshot") and requested.needed("fewshot", out / "fewshot.json", evals["fewshot"]):
        from ..evaluation.fewshot import evaluate_fewshot, save_fewshot

        settings = evals["fewshot"] if isinstance(evals["fewshot"], dict) else {}
        save_fewshot(evaluate_fewshot(run_dir, cache_dir=cfg.run.cache_dir, **settings), run_dir)
        requested.record("fewshot", evals["fewshot"])
    ner = evals.get("ner")
    if ner:
        from ..evaluation.ner import result_path, run_ner, save_result

        settings = dict(ner)
        data = settings.pop("data", "demo")
        train_lang = settings.pop("train_lang", "en")
        test_langs = settings.pop("test_langs", [train_lang])
        probe = {"config": {"train_lang": train_lang, "mode": settings.get("mode", "finetune")}}
        path = result_path(probe, run_dir)
        if requested.needed(path.stem, path, ner):
            if data == "demo":
                from ..demo_world import ensure_demo_world

                data = str(ensure_demo_world(cache_root(cfg.run.cache_dir)) / "ner")
            result = run_ner(run_dir, data, train_lang, list(test_langs), progress=False, **settings)
            save_result(result, run_dir)
            requested.record(path.stem, ner)


def run_experiment(path: str | Path, overrides: list[str] | None = None) -> Path:
    exp = load_experiment(path, overrides)
    exp.root.mkdir(parents=True, exist_ok=True)
    spec = {**exp.shared, "arms": exp.arms, "seeds": exp.seeds, "baseline": exp.baseline,
            "target_loss": exp.target_loss, "evaluations": exp.evaluations}
    (exp.root / SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    total = len(exp.arms) * len(exp.seeds)
    for i, (seed, arm) in enumerate(((s, a) for s in exp.seeds for a in exp.arms), 1):
        print(f"[{i}/{total}] arm {arm}, seed {seed}: {exp.run_dir(arm, seed)}")
        train(exp.config(arm, seed))
        _evaluate(exp, arm, seed)
    report = write_report(exp.root, {a: {s: exp.run_dir(a, s) for s in exp.seeds} for a in exp.arms},
                          exp.baseline, exp.target_loss)
    write_json_atomic(exp.root / "status.json", {"state": "finished", "report": str(report)})
    print(f"report: {report} (also report.html, summary.json)")
    return report


def report_from_dirs(paths: list[str | Path], target_loss: float | None = None, baseline: str | None = None) -> Path:
    """`metalm report`: an experiment directory (its saved spec), or run directories compared as arms."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and (paths[0] / SPEC_FILE).is_file():
        exp = load_experiment(paths[0] / SPEC_FILE)
        exp.root = paths[0]
        runs = {a: {s: exp.run_dir(a, s) for s in exp.seeds if exp.run_dir(a, s).is_dir()} for a in exp.arms}
        return write_report(exp.root, runs, baseline or exp.baseline,
                            target_loss if target_loss is not None else exp.target_loss)
    from ..errors import MetalmError

    runs: dict[str, dict[int, Path]] = {}
    for p in paths:
        if not (p / "metrics.jsonl").is_file():
            raise MetalmError(f"{p}: not a run directory (no metrics.jsonl) nor an experiment directory")
        cfg = yaml.safe_load((p / "config.yaml").read_text()) or {}
        runs.setdefault(p.name, {})[int(cfg.get("run", {}).get("seed", 0))] = p
    out = paths[0].parent / "report"
    out.mkdir(exist_ok=True)
    return write_report(out, runs, baseline or next(iter(runs)), target_loss)
