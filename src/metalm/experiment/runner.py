"""`metalm experiment`: train every arm × seed, evaluate each finished run once, write the report.

Re-running resumes unfinished runs (exactly, from their checkpoints) and reuses finished runs and
evaluation results, so an interrupted experiment finishes with the same numbers. An evaluation is
reused only if it ran with the settings the experiment file now asks for (recorded in
`RUN/eval/requested.json`); change them and that evaluation runs again.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

from ..data import cache_root
from ..data.pipeline import resolve_specs
from ..errors import MetalmError
from ..run_dir import REPORT_DIR, ExperimentDir, RunDir, read_requested, write_requested
from ..trainer import train
from ..training.signals import interrupt_on_signals
from .report import unfinished_runs, write_report
from .spec import Experiment, load_experiment

log = logging.getLogger(__name__)


class _Requested:
    """Which settings each stored evaluation result of a run was computed with."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.done = read_requested(run)

    def needed(self, name: str, settings) -> bool:
        """Whether evaluation `name` must run: no stored result, or one computed with other settings."""
        if not self.run.eval_path(name).is_file():
            return True
        if name in self.done and self.done[name] != settings:
            log.info("  %s: settings changed since %s was written; evaluating again", name, self.run.eval_path(name))
            return True
        return False

    def record(self, name: str, settings) -> None:
        self.done[name] = settings
        write_requested(self.run, self.done)


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
    run_dir = exp.run_dir(arm, seed)
    requested = _Requested(RunDir(run_dir))
    perplexity = exp.settings.get("perplexity")
    if perplexity is not None and requested.needed("perplexity", perplexity.model_dump(mode="json")):
        from ..evaluation.perplexity import evaluate_perplexity, save_perplexity

        sets = perplexity.data
        if sets is None:  # the run's validation set
            _, val, _ = resolve_specs(cfg.data, cache_root(cfg.run.cache_dir))
            sets = [val if isinstance(val, str) else val[0]] if val is not None else []
        if sets:
            with _timed(f"perplexity of {arm} seed {seed}"):
                save_perplexity(evaluate_perplexity(run_dir, sets, perplexity), run_dir)
            requested.record("perplexity", perplexity.model_dump(mode="json"))
    fewshot = exp.settings.get("fewshot")
    if fewshot is not None and requested.needed("fewshot", fewshot.model_dump(mode="json")):
        from ..evaluation.fewshot import evaluate_fewshot, save_fewshot

        with _timed(f"few-shot of {arm} seed {seed}"):
            save_fewshot(evaluate_fewshot(run_dir, fewshot, cache_dir=cfg.run.cache_dir), run_dir)
        requested.record("fewshot", fewshot.model_dump(mode="json"))
    ner = exp.settings.get("ner")
    if ner is not None:
        from ..data.demo import resolve_ner_data
        from ..evaluation.ner import result_name, run_ner, save_result

        name = result_name({"config": {"train_lang": ner.train_lang, "mode": ner.mode}})
        if requested.needed(name, ner.model_dump(mode="json")):
            data = resolve_ner_data(ner.data, cache_root(cfg.run.cache_dir))
            with _timed(f"NER ({ner.mode}, {ner.train_lang}) of {arm} seed {seed}"):
                save_result(run_ner(run_dir, data, settings=ner), run_dir, keep_other_settings=False)
            requested.record(name, ner.model_dump(mode="json"))


def _evaluation_names(exp: Experiment) -> list[str]:
    """The stored results (`RUN/eval/<name>.json`) each run of the experiment gets."""
    names = [name for name in ("perplexity", "fewshot") if exp.settings.get(name) is not None]
    ner = exp.settings.get("ner")
    if ner is not None:
        from ..evaluation.ner import result_name

        names.append(result_name({"config": {"train_lang": ner.train_lang, "mode": ner.mode}}))
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

    perplexity, fewshot = exp.settings.get("perplexity"), exp.settings.get("fewshot")
    for name, settings in (("perplexity", perplexity), ("fewshot", fewshot)):
        for spec in (settings.data or []) if settings is not None else []:
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
    ner = exp.settings.get("ner")
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
    exp.root.mkdir(parents=True, exist_ok=True)
    spec = {**exp.shared, "arms": exp.arms, "seeds": exp.seeds, "baseline": exp.baseline,
            "target_loss": exp.target_loss, "evaluations": exp.evaluations}
    ExperimentDir(exp.root).write_spec(spec)
    total = len(exp.arms) * len(exp.seeds)
    for i, (seed, arm) in enumerate(((s, a) for s in exp.seeds for a in exp.arms), 1):
        log.info("[%d/%d] arm %s, seed %d: %s", i, total, arm, seed, exp.run_dir(arm, seed))
        _Phase.now = f"training {arm} seed {seed}"
        train(exp.config(arm, seed))
        _evaluate(exp, arm, seed)
    _Phase.now = "writing the report"
    report = write_report(exp.root, {a: {s: exp.run_dir(a, s) for s in exp.seeds} for a in exp.arms},
                          exp.baseline, exp.target_loss)
    ExperimentDir(exp.root).write_status({"state": "finished", "report": str(report)})
    print(f"report: {report} (also report.html, summary.json)")
    return report


def report_from_dirs(paths: list[str | Path], target_loss: float | None = None, baseline: str | None = None) -> Path:
    """`metalm report`: an experiment directory (its saved spec), or run directories compared as arms."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and ExperimentDir(paths[0]).is_experiment():
        exp = load_experiment(ExperimentDir(paths[0]).spec_path)
        exp.root = paths[0]
        expected = {a: {s: exp.run_dir(a, s) for s in exp.seeds} for a in exp.arms}
        runs = {a: {s: d for s, d in seeds.items() if d.is_dir()} for a, seeds in expected.items()}
        return write_report(exp.root, runs, baseline or exp.baseline,
                            target_loss if target_loss is not None else exp.target_loss,
                            unfinished=unfinished_runs(expected, _evaluation_names(exp)))
    runs: dict[str, dict[int, Path]] = {}
    for p in paths:
        run = RunDir(p)
        if not run.metrics_path.is_file():
            raise MetalmError(f"{p}: neither a run directory with metrics nor an experiment directory")
        runs.setdefault(p.name, {})[int(run.config_section("run").get("seed", 0))] = p
    out = paths[0].parent / REPORT_DIR
    out.mkdir(exist_ok=True)
    return write_report(out, runs, baseline or next(iter(runs)), target_loss)
