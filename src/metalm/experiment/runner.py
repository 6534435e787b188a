"""`metalm experiment`: train every arm × seed, evaluate each finished run once, write the report.

With a `sweep:` section (`experiment.sweep`), the sweep's runs are trained first and each swept arm
(and its controls) then runs at its chosen setting.
With `matched_baselines: true`, every arm × seed also gets its matched baseline run
(`experiment.matched`), trained after the arms (its step count is read from their finished runs).
Re-running resumes unfinished runs (exactly, from their checkpoints) and reuses finished runs and
evaluation results, so an interrupted experiment finishes with the same numbers. An evaluation is
reused only if it ran with the settings the experiment file now asks for and on inputs of the same
content (both recorded in `RUN/eval/requested.json`); change either and that evaluation runs again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from ..data import cache_root
from ..data.pipeline import resolve_specs
from ..data.sources import content_digest
from ..dir_lock import hold_lock
from ..errors import DivergedError, MetalmError
from ..evaluation.settings import FewshotSettings, NerSettings, PerplexitySettings
from ..run_dir import REPORT_DIR, ExperimentDir, RunDir, read_requested, write_requested
from ..trainer import train
from ..training.signals import interrupt_on_signals
from .matched import matched_run, matched_runs
from .report import unfinished_runs, write_report
from .spec import Experiment, load_experiment
from .sweep import run_state, setting_name, sweep_run_dir, sweep_table

log = logging.getLogger(__name__)


class _Requested:
    """Which settings each stored evaluation result of a run was computed with."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.done = read_requested(run)

    def needed(self, name: str, settings) -> bool:
        """Whether evaluation `name` must run: no stored result, or one computed with other settings
        or on inputs of other content (`settings` holds the inputs' digest under `inputs`)."""
        if not self.run.eval_path(name).is_file():
            return True
        if name in self.done and self.done[name] != settings:
            before = self.done[name]
            same_settings = isinstance(before, dict) and {**before, "inputs": None} == {**settings, "inputs": None}
            what = "its inputs' content" if same_settings else "its settings"
            log.info("  %s: %s changed since %s was written; evaluating again", name, what, self.run.eval_path(name))
            return True
        return False

    def record(self, name: str, settings) -> None:
        self.done[name] = settings
        write_requested(self.run, self.done)

    def evaluate(self, name: str, settings, inputs: list, what: str, evaluate: Callable[[], object]) -> None:
        """Call `evaluate` (which stores the result) when evaluation `name` is needed for `settings`
        on `inputs` (their content digest is part of the key), timed as `what`; then record the key."""
        key = {**settings.model_dump(mode="json"), "inputs": content_digest(inputs)}
        if self.needed(name, key):
            with _timed(what):
                evaluate()
            self.record(name, key)


class _Phase:
    """What the experiment is doing now (recorded in its status when it is interrupted)."""

    now = "starting"


@contextmanager
def _timed(what: str):
    """Log the start and the end (clock time, duration) of a phase; no phase is silent."""
    _Phase.now = what
    start = time.perf_counter()
    log.info("  %s: started at %s", what, time.strftime("%H:%M:%S"))
    yield
    log.info("  %s: done at %s (%.0f s)", what, time.strftime("%H:%M:%S"), time.perf_counter() - start)


def _evaluate(exp: Experiment, arm: str, seed: int) -> None:
    """Run each evaluation the experiment asks for (`exp.settings`, validated when it was loaded) whose
    result is missing or was computed with other settings (the settings are recorded in full)."""
    cfg = exp.config(arm, seed)
    run = exp.run(arm, seed)
    run_dir = run.path
    requested = _Requested(run)
    perplexity = exp.evaluation(PerplexitySettings)
    if perplexity is not None:
        from ..evaluation.perplexity import evaluate_perplexity, save_perplexity

        sets = perplexity.data
        if sets is None:  # the run's validation set
            _, val, _ = resolve_specs(cfg.data, cache_root(cfg.run.cache_dir))
            sets = [val if isinstance(val, str) else val[0]] if val is not None else []
        if sets:
            requested.evaluate("perplexity", perplexity, sets, f"perplexity of {arm} seed {seed}",
                               lambda: save_perplexity(evaluate_perplexity(run_dir, sets, perplexity), run_dir))
    fewshot = exp.evaluation(FewshotSettings)
    if fewshot is not None:  # without data: the run's own validation set, which a run cannot change
        from ..evaluation.fewshot import evaluate_fewshot, save_fewshot

        requested.evaluate("fewshot", fewshot, fewshot.data or [], f"few-shot of {arm} seed {seed}",
                           lambda: save_fewshot(evaluate_fewshot(run_dir, fewshot, cache_dir=cfg.run.cache_dir), run))
    ner = exp.evaluation(NerSettings)
    if ner is not None:
        from ..data.demo import resolve_ner_data
        from ..evaluation.ner import run_ner, save_result

        data = resolve_ner_data(ner.data, cache_root(cfg.run.cache_dir))
        requested.evaluate(_ner_result_name(ner), ner, [data],
                           f"NER ({ner.mode}, {ner.train_lang}) of {arm} seed {seed}",
                           lambda: save_result(run_ner(run_dir, data, settings=ner), run, keep_other_settings=False))


def _ner_result_name(ner: NerSettings) -> str:
    """The stored NER result's name (`ner-<train_lang>[-probe]`) under these settings."""
    from ..evaluation.ner import result_name

    return result_name({"config": {"train_lang": ner.train_lang, "mode": ner.mode}})


def _evaluation_names(exp: Experiment) -> list[str]:
    """The stored results (`RUN/eval/<name>.json`) each run of the experiment gets."""
    names = [name for name in ("perplexity", "fewshot") if exp.settings.get(name) is not None]
    ner = exp.evaluation(NerSettings)
    if ner is not None:
        names.append(_ner_result_name(ner))
    return names


def check_inputs(exp: Experiment) -> None:
    """Everything an experiment reads, checked before anything trains or is written: each arm's
    data (resolved and tokenized into the cache, as training does first anyway), the held-out sets
    of perplexity and few-shot, the few-shot episodes the held-out text can serve (e.g. `n_way`
    against the class candidates), and the NER folder, languages and files. Each arm's config was
    validated when the experiment was loaded."""
    from ..data.pipeline import prepare_corpus
    from ..data.sources import resolve_files
    from ..evaluation.fewshot import episode_config

    perplexity, fewshot = exp.evaluation(PerplexitySettings), exp.evaluation(FewshotSettings)
    for name, data in (("perplexity", perplexity and perplexity.data), ("fewshot", fewshot and fewshot.data)):
        for spec in data or []:
            try:
                resolve_files(spec)
            except MetalmError as exc:
                raise type(exc)(f"evaluations.{name}.data: {exc}") from None
    if fewshot is not None:
        episode_config(fewshot, "evaluations.fewshot.")
    checked: set[str] = set()
    for arm in exp.arms:
        cfg = exp.config(arm, exp.seeds[0])
        key = cfg.data.model_dump_json() + repr(cfg.run.cache_dir)
        if fewshot is not None:  # the few-shot check also depends on the arm's model
            key += cfg.model.model_dump_json()
        if key in checked:
            continue  # arms that share their data (the usual case) are checked once
        checked.add(key)
        try:
            corpus = prepare_corpus(cfg.data, cfg.run.cache_dir)
            if fewshot is not None:
                _check_fewshot(fewshot, cfg, corpus)
        except MetalmError as exc:
            raise type(exc)(f"arm {arm!r}: {exc}") from None
    ner = exp.evaluation(NerSettings)
    if ner is not None:
        from ..data.demo import resolve_ner_data
        from ..evaluation.ner import check_ner_data

        cfg = exp.config(next(iter(exp.arms)), exp.seeds[0])
        try:
            check_ner_data(resolve_ner_data(ner.data, cache_root(cfg.run.cache_dir)), ner)
        except MetalmError as exc:
            raise type(exc)(f"evaluations.ner: {exc}") from None


def _check_fewshot(settings, cfg, corpus) -> None:
    """The few-shot evaluation's episodes on its held-out text, for a model of `cfg`."""
    from ..evaluation.fewshot import check_fewshot, held_out_tokens
    from ..model import llama_config

    held_out = held_out_tokens(settings.data, corpus.tokenizer) if settings.data else corpus.validation
    model_config = None if cfg.model.hf_config else llama_config(cfg.model.preset, len(corpus.tokenizer),
                                                                  **cfg.model.overrides())
    check_fewshot(settings, held_out, corpus.tokenizer, model_config, cfg.run.cache_dir, prefix="evaluations.fewshot.")


def run_experiment(path: str | Path, overrides: list[str] | None = None) -> Path:
    exp = load_experiment(path, overrides)
    _Phase.now = "checking the inputs"
    try:
        with interrupt_on_signals():  # SIGTERM in any phase: status recorded, exit 130, a re-run continues
            return _run(exp)
    except KeyboardInterrupt:
        if exp.root.is_dir():
            ExperimentDir(exp.root).write_status({"state": "interrupted", "during": _Phase.now, "updated": time.time()})
        log.info("experiment interrupted during %s; re-run the same command to continue", _Phase.now)
        raise


def _run(exp: Experiment) -> Path:
    check_inputs(exp)  # before the experiment directory exists: a refused experiment leaves nothing
    with hold_lock(exp.root, "experiment directory", "wait for it to end or choose another run.dir"):
        return _run_locked(exp)


def _run_locked(exp: Experiment) -> Path:
    """Train, evaluate and report, one experiment process at a time in its directory."""
    spec = {**exp.shared, "arms": exp.arms, "seeds": exp.seeds, "baseline": exp.baseline,
            "target_loss": exp.target_loss, "matched_baselines": exp.matched_baselines, "evaluations": exp.evaluations,
            **({"sweep": exp.sweep.spec()} if exp.sweep is not None else {})}
    ExperimentDir(exp.root).write_spec(spec)
    sweeps = _run_sweep(exp) if exp.sweep is not None else None
    total = len(exp.arms) * len(exp.seeds)
    for i, (seed, arm) in enumerate(((s, a) for s in exp.seeds for a in exp.arms), 1):
        log.info("[%d/%d] arm %s, seed %d: %s", i, total, arm, seed, exp.run_dir(arm, seed))
        _Phase.now = f"training {arm} seed {seed}"
        train(exp.config(arm, seed))
        _evaluate(exp, arm, seed)
    if exp.matched_baselines:
        _Phase.now = "training the matched baselines"
        _train_matched(exp)
    _Phase.now = "writing the report"
    report = write_report(exp.root, exp.runs(), exp.baseline, exp.target_loss,
                          matched_runs(exp) if exp.matched_baselines else None, sweeps=_sweep_summary(exp, sweeps))
    ExperimentDir(exp.root).write_status({"state": "finished", "report": str(report)})
    print(f"report: {report} (also report.html, summary.json)")
    return report


def _run_sweep(exp: Experiment) -> dict:
    """Train (or resume, or reuse) every sweep run, then set each swept arm's chosen setting
    (`exp.chosen`); a diverged sweep run is recorded as such and never chosen, not retried."""
    sweep = exp.sweep
    assert sweep is not None
    settings = sweep.settings()
    total = len(sweep.seeds) * len(sweep.arms) * len(settings)
    runs = ((seed, arm, setting) for seed in sweep.seeds for arm in sweep.arms for setting in settings)
    for i, (seed, arm, setting) in enumerate(runs, 1):
        path = sweep_run_dir(exp.root, arm, setting, seed)
        log.info("[sweep %d/%d] arm %s at %s, seed %d: %s", i, total, arm, setting_name(setting), seed, path)
        if run_state(RunDir(path)) == "diverged":
            log.info("  diverged before; not retried (never chosen)")
            continue
        _Phase.now = f"sweeping {arm} at {setting_name(setting)} seed {seed}"
        try:
            train(exp.sweep_config(arm, setting, seed))
        except DivergedError as exc:
            log.warning("  %s at %s, seed %d diverged (never chosen): %s", arm, setting_name(setting), seed, exc)
    table = sweep_table(sweep, exp.root)
    for arm, entry in table.items():
        if entry["chosen"] is None:
            raise MetalmError(f"sweep: no setting of arm {arm!r} finished without diverging on every sweep seed; "
                              "change sweep.grid (e.g. lower learning rates) and re-run")
        exp.chosen[arm] = entry["chosen"]
        takers = [a for a, source in exp.sweep_source.items() if source == arm and a != arm]
        log.info("sweep: %s runs at %s%s", arm, entry["chosen_name"],
                 f" (so do its controls {', '.join(takers)})" if takers else "")
    return table


def _sweep_summary(exp: Experiment, table: dict | None) -> dict | None:
    """summary.json's `sweeps`: the table, which arms took each choice, the sweep seeds, and which of
    them the arms' own seeds reuse (on those seeds a swept arm's setting was selected)."""
    if exp.sweep is None or table is None:
        return None
    return {"seeds": exp.sweep.seeds, "grid": exp.sweep.grid,
            "selected_on_arm_seeds": [s for s in exp.sweep.seeds if s in exp.seeds],
            "arms": {arm: {**entry, "taken_by": [a for a, src in exp.sweep_source.items() if src == arm]}
                     for arm, entry in table.items()}}


def _train_matched(exp: Experiment) -> None:
    """Train (or resume, or reuse) the matched baseline of every non-baseline arm × seed."""
    for seed in exp.seeds:
        for arm in exp.arms:
            if arm == exp.baseline:
                continue
            path, steps, cfg = matched_run(exp, arm, seed)
            if cfg is None:
                log.info("matched baseline of %s, seed %d: the %s run itself (%d steps)", arm, seed, exp.baseline, steps)
                continue
            log.info("matched baseline of %s, seed %d: %s (%d steps)", arm, seed, path, steps)
            train(cfg)


def arm_names(paths: list[Path]) -> list[str]:
    """Each run directory's arm name: the shortest tail of its path (in components) that no other
    path ends with — `runs/vanilla`, `runs/meta` → `vanilla`, `meta`; `A/seed-0`, `B/seed-0` →
    `A/seed-0`, `B/seed-0`."""
    parts = [p.resolve().parts for p in paths]
    names = []
    for i, mine in enumerate(parts):
        for k in range(1, len(mine) + 1):
            if all(other[-k:] != mine[-k:] for j, other in enumerate(parts) if j != i):
                break
        names.append("/".join(mine[-k:]))
    return names


def report_from_dirs(given: list[str | Path], target_loss: float | None = None, baseline: str | None = None,
                     out: str | Path | None = None) -> Path:
    """`metalm report`: an experiment directory (its saved spec; the report goes into it unless
    `out`), or run directories compared as arms, one arm per directory named by `arm_names`; their
    report goes to `out`, by default `report/` in the directories' closest common parent — never
    inside one of them."""
    paths = [Path(p) for p in given]
    if len(paths) == 1 and ExperimentDir(paths[0]).is_experiment():
        exp = load_experiment(ExperimentDir(paths[0]).spec_path)
        exp.root = paths[0]
        sweeps = None
        if exp.sweep is not None:
            sweeps = sweep_table(exp.sweep, exp.root)
            exp.chosen = {arm: e["chosen"] for arm, e in sweeps.items() if e["chosen"] is not None}
        expected = exp.runs()
        runs = {a: {s: d for s, d in seeds.items() if d.path.is_dir()} for a, seeds in expected.items()}
        matched = matched_runs(exp) if exp.matched_baselines and (baseline or exp.baseline) == exp.baseline else None
        return write_report(Path(out) if out is not None else exp.root, runs, baseline or exp.baseline,
                            target_loss if target_loss is not None else exp.target_loss, matched,
                            unfinished=unfinished_runs(expected, _evaluation_names(exp)),
                            sweeps=_sweep_summary(exp, sweeps))
    resolved = [p.resolve() for p in paths]
    dirs = [RunDir(p) for p in paths]
    for i, p in enumerate(paths):
        if resolved[i] in resolved[:i]:
            raise MetalmError(f"{p}: the same run directory is given twice; compare different runs")
        if not dirs[i].metrics_path.is_file():
            raise MetalmError(f"{p}: neither a run directory with metrics nor an experiment directory")
    names = arm_names(paths)
    runs = {name: {int(d.config_section("run").get("seed", 0)): d} for name, d in zip(names, dirs)}
    if baseline is not None and baseline not in runs:
        raise MetalmError(f"--baseline {baseline}: no such arm (arms: {', '.join(names)})")
    target = Path(out) if out is not None else Path(os.path.commonpath([r.parent for r in resolved])) / REPORT_DIR
    inside = next((p for p, r in zip(paths, resolved) if target.resolve().is_relative_to(r)), None)
    if inside is not None:
        raise MetalmError(f"{'--out ' + str(out) if out is not None else 'the default report directory ' + str(target)}"
                          f" lies inside the run directory {inside}; give --out a directory outside every run")
    target.mkdir(parents=True, exist_ok=True)
    return write_report(target, runs, baseline or names[0], target_loss)
