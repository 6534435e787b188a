"""The `metalm` command line.

    metalm train CONFIG.yaml [key.sub=value ...]
    metalm config CONFIG.yaml [key.sub=value ...]      (print the resolved config as YAML)
    metalm eval perplexity RUN_OR_CHECKPOINT --data PATH [--data PATH ...]
    metalm eval fewshot RUN_OR_CHECKPOINT [--episodes N]
    metalm eval harness RUN_OR_CHECKPOINT [--tasks T1,T2] [--data TEXT_FILE]
    metalm eval ner RUN_OR_CHECKPOINT --data DIR --train-lang L --test-lang L1,L2 [--mode finetune|probe]
    metalm export RUN [--push-to-hub USER/NAME]
    metalm tokenizer train --data PATH --vocab-size N --out DIR
    metalm experiment EXPERIMENT.yaml [key.sub=value ...]
    metalm report EXPERIMENT_DIR | RUN_DIR ... [--out DIR]
    metalm dynamics RUN_DIR [RUN_DIR2]
    metalm bench CONFIG.yaml [key.sub=value ...] [--json]
    metalm watch RUN_OR_EXPERIMENT_DIR [...] [--port P] [--host H]

A command's result (a table, JSON, YAML, `report: PATH`) goes to stdout; messages (progress,
"saved X", warnings) go to stderr as `metalm: …` (`--quiet`: warnings only, `--verbose`: more).
Bad input (config, data, paths) prints one line `metalm: error: …` and exits with status 2.
`metalm train --help` lists every config key; the `eval` flags are the evaluation settings of
`metalm.evaluation.settings`, which experiment files use under `evaluations:`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import interrupts
from .errors import MetalmError
from .log import logger, quiet_library_progress, setup_logging


def _report(args: argparse.Namespace, result: dict, table: str, save) -> None:
    """Print an evaluation (JSON or table), then save it into the run directory when there is one
    (one warning when it cannot be: the result was printed, so the command still succeeds)."""
    from .checkpoint import resolve_model_dir

    print(json.dumps(result, indent=1) if args.json else table, flush=True)
    run = resolve_model_dir(args.checkpoint, verify=False).run  # the run only: loading verified it
    if run is not None:
        saved = _saved_or_warn(lambda: save(result, run), run.path)
        if saved is not None:
            logger.info(f"saved {saved}")


def _saved_or_warn(save, where):
    """`save()`'s result, or None after one warning when the file system refuses the write (a
    read-only run directory, a full disk)."""
    try:
        return save()
    except OSError as exc:
        logger.warning(f"the result could not be saved into {where} ({exc.strerror or exc}); it was printed above")
        return None


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import check_launch, load_config

    cfg = load_config(args.config, args.overrides)
    check_launch(cfg)  # every rule is checked before the trainer reads data or writes anything
    from .trainer import train

    train(cfg)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from .config import load_tree

    tree = load_tree(args.config, args.overrides)
    if "arms" in tree:  # an experiment: each arm's resolved config (first seed)
        from .experiment.spec import load_experiment

        exp = load_experiment(args.config, args.overrides)
        resolved = {arm: exp.config(arm, exp.seeds[0]).to_dict() for arm in exp.arms}
    else:
        from .config import from_dict

        resolved = from_dict(tree).to_dict()
    print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data import prepare_corpus

    cfg = load_config(args.config, args.overrides)
    corpus = prepare_corpus(cfg.data, cfg.run.cache_dir, progress=cfg.run.progress, verify=args.verify)
    info = corpus.info
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for split, figures in info["splits"].items():
        print(f"{split}: {figures['tokens']:,} tokens, {figures['documents']:,} documents")
    for src in info["sources"]:
        added = f" (+{src['eod_added']:,} end-of-document tokens added)" if src["eod_added"] else ""
        print(f"  {src['split']} {src['source']}: {src['kind']}, {src['documents']:,} documents, "
              f"{src['tokens']:,} tokens{added}")
    if info.get("max_tokens_reached"):
        print(f"  data.max_tokens {info['max_tokens']:,} reached: the rest of the sources was not read")
    print(f"cache: {info['cache']}" + (" (every byte checked)" if args.verify else ""))
    return 0


def _cmd_eval_perplexity(args: argparse.Namespace) -> int:
    from .config_base import section_from_arguments
    from .evaluation.perplexity import evaluate_perplexity, format_perplexity_table, save_perplexity
    from .evaluation.settings import PerplexitySettings

    result = evaluate_perplexity(args.checkpoint, settings=section_from_arguments(PerplexitySettings, args))
    print(json.dumps(result, indent=1) if args.json else format_perplexity_table(result), flush=True)
    saved = _saved_or_warn(lambda: save_perplexity(result, args.checkpoint), args.checkpoint)
    if saved:
        logger.info(f"saved {saved}")
    return 0


def _cmd_eval_ner(args: argparse.Namespace) -> int:
    from .config_base import section_from_arguments
    from .data import cache_root
    from .data.demo import resolve_ner_data
    from .evaluation.ner import format_ner_table, run_ner, save_result
    from .evaluation.settings import NerSettings

    settings = section_from_arguments(NerSettings, args)
    result = run_ner(args.checkpoint, resolve_ner_data(settings.data, cache_root()), settings=settings)
    _report(args, result, format_ner_table(result), save_result)
    return 0


def _cmd_eval_fewshot(args: argparse.Namespace) -> int:
    from .config_base import section_from_arguments
    from .evaluation.fewshot import evaluate_fewshot, format_fewshot, save_fewshot
    from .evaluation.settings import FewshotSettings

    result = evaluate_fewshot(args.checkpoint, section_from_arguments(FewshotSettings, args))
    _report(args, result, format_fewshot(result), save_fewshot)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .model_card import write_model_card
    from .run_dir import RunDir

    run = RunDir(args.run)
    if not run.exists() or not run.has_final():
        raise MetalmError(f"{args.run}: not a finished run directory (no final/ model to export)")
    write_model_card(run)
    if args.push_to_hub:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi(token=args.token)
        try:
            url = api.create_repo(args.push_to_hub, repo_type="model", private=args.private or None, exist_ok=True)
            api.upload_folder(folder_path=str(run.final_dir), repo_id=url.repo_id, repo_type="model",
                              commit_message=f"metalm export of {run.path.name}")
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise MetalmError(f"--push-to-hub {args.push_to_hub}: {str(exc).splitlines()[0]}") from None
        logger.info(f"pushed {run.final_dir} to {url}")
    print(run.final_dir)
    return 0


def _cmd_eval_harness(args: argparse.Namespace) -> int:
    from .config_base import section_from_arguments
    from .evaluation.harness import HarnessSettings, evaluate_harness, format_harness, save_harness

    result = evaluate_harness(args.checkpoint, section_from_arguments(HarnessSettings, args))
    _report(args, result, format_harness(result), save_harness)
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from .config import DataConfig
    from .data.pipeline import tokenizer_sample
    from .data.sources import HubDataset, iter_documents, resolve_files
    from .tokenizer import check_vocab_size, save_tokenizer, train_tokenizer

    _at_least(args, sample_bytes=1)
    check_vocab_size(args.vocab_size, "--vocab-size")
    out = Path(args.out)
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        where = "a file of that name exists" if blocked == out else f"{blocked} is a file"
        raise MetalmError(f"--out {args.out}: {where}; give a directory for the tokenizer")
    data_cfg = DataConfig(text_field=args.text_field, txt_documents="blank_line")
    sources = resolve_files(args.data)

    def documents():
        for src in sources:
            yield from iter_documents(src, data_cfg.text_field, data_cfg.txt_documents)

    sample = tokenizer_sample(documents, args.sample_bytes, prefix=any(isinstance(s, HubDataset) for s in sources))
    if not sample:
        raise MetalmError(f"--data {args.data}: no documents (empty or whitespace only)")
    tok = train_tokenizer(sample, args.vocab_size)
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, out)
    except OSError as exc:
        raise MetalmError(f"--out {args.out}: cannot save the tokenizer: {exc.strerror or exc}") from None
    logger.info(f"tokenizer with {len(tok)} tokens saved to {args.out}")
    return 0


def _at_least(args: argparse.Namespace, **minimum: int) -> None:
    """Refuse a numeric flag below its minimum (a MetalmError naming the flag)."""
    for name, low in minimum.items():
        value = getattr(args, name)
        if value < low:
            raise MetalmError(f"--{name.replace('_', '-')}: must be at least {low} (got {value})")


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench, format_bench
    from .config import load_config

    _at_least(args, warmup=0, repeats=1)
    if args.out and Path(args.out).is_dir():
        raise MetalmError(f"--out {args.out}: is a directory (give a file name)")
    cfg = load_config(args.config, args.overrides)
    result = bench(cfg, warmup=args.warmup, repeats=args.repeats)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(result, indent=1))
        except OSError as exc:
            raise MetalmError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    return 0


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from .dynamics.config import ALL_GROUPS
    from .dynamics.phases import format_phase_readout
    from .dynamics.posthoc import analyse_run, compare_runs

    groups = [g for g in args.groups.split(",") if g] if args.groups else list(ALL_GROUPS)
    for run_dir in args.runs:
        result = analyse_run(run_dir, groups=groups, overwrite=args.recompute, smoothing=args.smoothing,
                             device=args.device, log=logger.info)
        logger.info(f"{run_dir}: {len(result.computed_steps)} checkpoint(s) analysed, "
                    f"{len(result.skipped_steps)} already done; rows "
                    + (f"in {result.rows_path}" if result.unsaved is None else "not saved"))
        if result.readout is not None:
            print(format_phase_readout(result.readout.phases), flush=True)
        if result.unsaved is not None:
            logger.warning(f"the rows and read-out could not be saved into {run_dir} ({result.unsaved}); "
                           "the read-out was printed above")
    if len(args.runs) == 2:
        labels = args.labels.split(",") if args.labels else None
        paths = _saved_or_warn(lambda: compare_runs(args.runs[0], args.runs[1], out_dir=args.out, labels=labels),
                               args.out or args.runs[0])
        for path in paths or []:
            print(f"overlay: {path}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiment.runner import run_experiment

    run_experiment(args.config, args.overrides)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .experiment.runner import report_from_dirs

    report = report_from_dirs(args.paths, target_loss=args.target_loss, baseline=args.baseline, out=args.out)
    print(f"report: {report} (also report.html, summary.json)")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from .watch import serve

    serve([Path(p) for p in args.paths], host=args.host, port=args.port, open_browser=args.open)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metalm")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """An argument parser that adds its costly parts (those that import the config: key listings,
    evaluation flags) only when it is used, so `metalm --version` and `metalm --help` stay fast."""

    def __init__(self, *args, setup=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._setup = setup

    def _ready(self) -> None:
        if self._setup is not None:
            setup, self._setup = self._setup, None
            setup(self)

    def error(self, message: str):
        """A usage error is bad input too: one line `metalm: error: …` and status 2 (`-h` shows usage)."""
        command = self.prog.removeprefix("metalm").strip()
        print(f"metalm: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        self._ready()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ready()
        return super().format_usage()

    def format_help(self) -> str:
        self._ready()
        return super().format_help()


def _config_help(parser: argparse.ArgumentParser) -> None:
    from .config import describe_config

    parser.epilog = ("config keys (set in the YAML file, or on the command line as key.sub=value):\n"
                     + describe_config())


def _experiment_help(parser: argparse.ArgumentParser) -> None:
    from .config_base import describe_fields
    from .evaluation.settings import SETTINGS

    _config_help(parser)
    evaluations = "\n".join(describe_fields(cls, f"evaluations.{name}.") for name, cls in SETTINGS.items())
    parser.epilog = ("experiment keys: arms (name → overrides), seeds (list), baseline (arm), target_loss (number or "
                     "null),\nmatched_baselines (true: per arm and seed, a baseline run <baseline>@<steps>-steps/seed-N whose "
                     "final FLOPs equal the arm's),\nevaluations (each true, a mapping of its settings, or for perplexity a list of held-out "
                     "sets):\n" + evaluations + "\n\nshared " + (parser.epilog or ""))


def _settings_flags(name: str):
    """Adds the flags of evaluation `name`'s settings (`metalm.evaluation.settings`)."""

    def setup(parser: argparse.ArgumentParser) -> None:
        from .config_base import add_section_arguments
        from .evaluation.settings import SETTINGS, EvaluationSettings

        settings: type[EvaluationSettings]
        if name == "harness":
            from .evaluation.harness import HarnessSettings as settings
        else:
            settings = SETTINGS[name]
        add_section_arguments(parser, settings)

    return setup


def build_parser() -> argparse.ArgumentParser:
    from .device import DEVICE_HELP

    verbosity = argparse.ArgumentParser(add_help=False)
    group = verbosity.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=argparse.SUPPRESS,
                       help="print warnings and errors only")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=argparse.SUPPRESS,
                       help="print debug messages too")
    parser = _Parser(prog="metalm", description="Meta-learned vs vanilla pretraining of small LMs.",
                     parents=[verbosity])
    parser.add_argument("--version", action="version", version=f"metalm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(subparsers, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=help, description=help, parents=[verbosity], **kwargs)

    listing = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    p = command(sub, "train", "train one run (resumes an existing run directory)", setup=_config_help, **listing)
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 run.dir=runs/x")
    p.set_defaults(func=_cmd_train)

    p = command(sub, "config", "print the resolved config (file + overrides + defaults) as YAML",
                setup=_config_help, **listing)
    p.add_argument("config", help="YAML config file (an experiment file: each arm's config, first seed)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-3")
    p.set_defaults(func=_cmd_config)

    p = command(sub, "data", "tokenize a config's data into the cache now (e.g. before a multi-process run) and "
                "describe it", setup=_config_help, **listing)
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.train=corpus/ data.num_proc=8")
    p.add_argument("--json", action="store_true", help="print the data description as JSON")
    p.add_argument("--verify", action="store_true", help="check every byte of the cached tokens against the digests "
                   "recorded when they were written (each use checks sizes and sampled blocks); rewrite them if "
                   "damaged")
    p.set_defaults(func=_cmd_data)

    ev = command(sub, "eval", "evaluate a run or checkpoint").add_subparsers(dest="what", required=True)
    for name, help, func in (
        ("perplexity", "loss and perplexity per held-out set", _cmd_eval_perplexity),
        ("ner", "Universal NER fine-tuning / probing, per language and zero-shot cross-lingual", _cmd_eval_ner),
        ("fewshot", "accuracy on held-out SMLMT episodes before/after k head-adaptation steps", _cmd_eval_fewshot),
        ("harness", "lm-evaluation-harness tasks (needs the lm-eval extra); metalm_text: perplexity of a text file",
         _cmd_eval_harness),
    ):
        p = command(ev, name, help, setup=_settings_flags(name))
        p.add_argument("checkpoint", help="run directory (uses RUN/final) or a save_pretrained checkpoint directory")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        p.add_argument("--threads", type=int, default=None, help="CPU threads of torch (default: torch's choice)")
        p.set_defaults(func=func)

    p = command(sub, "export", "refresh a finished run's Hugging Face export (final/ with its model card README.md) "
                "and print its path; optionally upload it to the Hub")
    p.add_argument("run", help="finished run directory")
    p.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="upload final/ to this Hub model repository (user/name; created if missing)")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.add_argument("--token", default=None, help="Hub token (default: the stored login or HF_TOKEN)")
    p.set_defaults(func=_cmd_export)

    tk = command(sub, "tokenizer", "tokenizer utilities").add_subparsers(dest="what", required=True)
    p = command(tk, "train", "train a byte-level BPE tokenizer")
    p.add_argument("--data", action="append", required=True, help="training text (file, dir, glob, hf:NAME)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default: 8192)")
    p.add_argument("--sample-bytes", type=int, default=20_000_000,
                   help="train on a sample of about this many characters (default: 20000000)")
    p.add_argument("--text-field", default="text", help="the text column of .jsonl/.parquet files and Hub datasets "
                   "(default: text)")
    p.add_argument("--out", required=True, help="folder to save the tokenizer in")
    p.set_defaults(func=_cmd_tokenizer_train)
    p = command(sub, "bench", "time an AR step and a meta step side by side (meta/AR cost ratio)")
    p.add_argument("config", help="YAML config file (its meta section defines the meta step)")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps of each kind (default: 5)")
    p.add_argument("--json", action="store_true", help="print JSON (the ratio is `meta_over_ar_ratio`)")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=_cmd_bench)

    p = command(sub, "experiment", "train and evaluate every arm × seed of an experiment, then write the report",
                setup=_experiment_help, **listing)
    p.add_argument("config", help="experiment YAML (shared settings, arms, seeds, evaluations)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the shared settings")
    p.set_defaults(func=_cmd_experiment)

    p = command(sub, "report", "compare runs: an experiment directory, or run directories as arms")
    p.add_argument("paths", nargs="+", help="one experiment directory, or run directories compared as arms (each "
                   "directory one arm, named by the shortest tail of its path that tells it apart)")
    p.add_argument("--target-loss", type=float, default=None,
                   help="target validation loss (default: the experiment's, else the highest final validation loss "
                        "over the baseline arm's seeds, so every baseline seed reaches it)")
    p.add_argument("--baseline", default=None, help="baseline arm (default: the experiment's, or the first run)")
    p.add_argument("--out", default=None, help="directory for the report (default: the experiment directory; for run "
                   "directories, report/ in their closest common parent directory, never inside a run)")
    p.set_defaults(func=_cmd_report)

    p = command(sub, "dynamics", "learning dynamics over a run's saved checkpoints (post hoc); overlay two runs")
    p.add_argument("runs", nargs="+", help="one run directory, or two to overlay (e.g. vanilla and meta)")
    p.add_argument("--groups", default=None, help="comma-separated: activations,weights,gradients,attention (default: all)")
    p.add_argument("--smoothing", type=int, default=None, help="moving-average window of the phase read-out")
    p.add_argument("--recompute", action="store_true", help="recompute rows already written")
    p.add_argument("--labels", default=None, help="labels of the two runs in overlays, e.g. vanilla,meta")
    p.add_argument("--out", default=None, help="folder for overlay figures")
    p.add_argument("--device", default="auto", help=f"device: {DEVICE_HELP} (default: auto)")
    p.set_defaults(func=_cmd_dynamics)

    p = command(sub, "watch", "live web view of runs or experiments (loopback only by default)")
    p.add_argument("paths", nargs="+", help="run or experiment directories")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.set_defaults(func=_cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    interrupts.defer()  # start-up imports torch: Ctrl-C is recorded until the command begins
    try:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
        finally:
            interrupts.resume()  # raises KeyboardInterrupt here if Ctrl-C came during start-up
        setup_logging(getattr(args, "verbosity", 0))  # -q/-v before or after the command
        if not sys.stderr.isatty():
            quiet_library_progress()
        if getattr(args, "threads", None) is not None:
            _at_least(args, threads=1)
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except MetalmError as exc:
        one_line = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"metalm: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupts.handled()
        print("metalm: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
