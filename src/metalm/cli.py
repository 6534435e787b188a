"""The `metalm` command line.

    metalm train CONFIG.yaml [key.sub=value ...]
    metalm eval perplexity RUN_OR_CHECKPOINT --data PATH [--data PATH ...]
    metalm eval fewshot RUN_OR_CHECKPOINT [--episodes N]
    metalm eval ner RUN_OR_CHECKPOINT --data DIR --train-lang L --test-lang L1,L2 [--mode finetune|probe]
    metalm tokenizer train --data PATH --vocab-size N --out DIR
    metalm experiment EXPERIMENT.yaml [key.sub=value ...]
    metalm report EXPERIMENT_DIR | RUN_DIR ...
    metalm dynamics RUN_DIR [RUN_DIR2]
    metalm bench CONFIG.yaml [key.sub=value ...] [--json]
    metalm watch RUN_OR_EXPERIMENT_DIR [...] [--port P] [--host H]

Bad input (config, data, paths) prints one line `metalm: error: …` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import MetalmError


def _report(args: argparse.Namespace, result: dict, table: str, save) -> None:
    """Print an evaluation (JSON or table) and save it into the run directory when there is one."""
    from .checkpoint import resolve_model_dir

    print(json.dumps(result, indent=1) if args.json else table)
    run_dir = resolve_model_dir(args.checkpoint)[2]
    if run_dir is not None:
        saved = save(result, run_dir)
        if not args.json:
            print(f"saved {saved}")


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .trainer import train

    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def _cmd_eval_perplexity(args: argparse.Namespace) -> int:
    from .evaluation.perplexity import evaluate_perplexity, format_perplexity_table, save_perplexity

    result = evaluate_perplexity(args.checkpoint, args.data, seq_len=args.seq_len, batch_size=args.batch_size,
                                 max_tokens=args.max_tokens, device=args.device, text_field=args.text_field)
    saved = save_perplexity(result, args.checkpoint)
    print(json.dumps(result, indent=1) if args.json else format_perplexity_table(result))
    if saved and not args.json:
        print(f"saved {saved}")
    return 0


def _cmd_eval_ner(args: argparse.Namespace) -> int:
    from .evaluation.ner import format_ner_table, run_ner, save_result

    test_langs = [lang for lang in (args.test_lang or args.train_lang).split(",") if lang]
    result = run_ner(args.checkpoint, args.data, args.train_lang, test_langs, mode=args.mode, seeds=args.seeds,
                     epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                     use_dev_for_train=args.use_dev_for_train, select_best_on_dev=args.select_best_on_dev,
                     device=args.device, max_train_sentences=args.max_train_sentences,
                     progress=not args.json, seed=args.seed)
    _report(args, result, format_ner_table(result), save_result)
    return 0


def _cmd_eval_fewshot(args: argparse.Namespace) -> int:
    from .evaluation.fewshot import evaluate_fewshot, format_fewshot, save_fewshot

    result = evaluate_fewshot(args.checkpoint, episodes=args.episodes, data=args.data, variant=args.variant,
                              n_way=args.n_way, k_shot=args.k_shot, q_query=args.q_query, inner_steps=args.inner_steps,
                              inner_lr=args.inner_lr, head_init=args.head_init, pool=args.pool, window_len=args.window_len,
                              band_min_count=args.band_min_count, band_skip_top=args.band_skip_top, seed=args.seed,
                              device=args.device)
    _report(args, result, format_fewshot(result), save_fewshot)
    return 0


def _cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from .data.pipeline import _tokenizer_sample, read_documents
    from .data.sources import resolve_files
    from .config import DataConfig
    from .tokenizer import train_tokenizer

    data_cfg = DataConfig.model_construct(text_field=args.text_field, txt_documents="blank_line")
    docs = read_documents(resolve_files(args.data), data_cfg, "train")
    tok = train_tokenizer(_tokenizer_sample(docs, args.sample_bytes), args.vocab_size)
    tok.save_pretrained(args.out)
    print(f"tokenizer with {len(tok)} tokens saved to {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench, format_bench
    from .config import load_config

    cfg = load_config(args.config, args.overrides)
    result = bench(cfg, warmup=args.warmup, repeats=args.repeats)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def _cmd_dynamics(args: argparse.Namespace) -> int:
    from .dynamics.config import ALL_GROUPS
    from .dynamics.phases import format_phase_readout
    from .dynamics.posthoc import analyse_run, compare_runs

    groups = [g for g in args.groups.split(",") if g] if args.groups else list(ALL_GROUPS)
    for run_dir in args.runs:
        result = analyse_run(run_dir, groups=groups, overwrite=args.recompute, smoothing=args.smoothing,
                             device=args.device, log=print)
        print(f"{run_dir}: {len(result.computed_steps)} checkpoint(s) analysed, {len(result.skipped_steps)} already done; "
              f"rows in {result.rows_path}")
        if result.readout is not None:
            print(format_phase_readout(result.readout.phases))
    if len(args.runs) == 2:
        labels = args.labels.split(",") if args.labels else None
        for path in compare_runs(args.runs[0], args.runs[1], out_dir=args.out, labels=labels):
            print(f"overlay: {path}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiment.runner import run_experiment

    run_experiment(args.config, args.overrides)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .experiment.runner import report_from_dirs

    report = report_from_dirs(args.paths, target_loss=args.target_loss, baseline=args.baseline)
    print(f"report: {report} (also report.html, summary.json)")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from .watch import serve

    serve([Path(p) for p in args.paths], host=args.host, port=args.port, open_browser=args.open)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metalm", description="Meta-learned vs vanilla pretraining of small LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run (resumes an existing run directory)")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 run.dir=runs/x")
    p.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run or checkpoint").add_subparsers(dest="what", required=True)
    p = ev.add_parser("perplexity", help="loss and perplexity per held-out set")
    p.add_argument("checkpoint", help="run directory (uses RUN/final) or a save_pretrained checkpoint directory")
    p.add_argument("--data", action="append", required=True, help="a held-out set (file, dir, glob, hf:NAME); repeat for several domains")
    p.add_argument("--seq-len", type=int, default=None, help="window length (default: the run's train.seq_len or the model context)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate at most this many tokens per set")
    p.add_argument("--text-field", default="text")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_eval_perplexity)

    p = ev.add_parser("ner", help="Universal NER fine-tuning / probing, per language and zero-shot cross-lingual")
    p.add_argument("checkpoint", help="run directory (uses RUN/final) or a save_pretrained checkpoint directory")
    p.add_argument("--data", required=True, help="folder with one sub-folder of IOB2 files per language, or hf:universalner/universal_ner")
    p.add_argument("--train-lang", required=True, help="language to train the NER head on")
    p.add_argument("--test-lang", default=None, help="comma-separated test languages (default: the train language)")
    p.add_argument("--mode", choices=["finetune", "probe"], default="finetune", help="finetune all weights (the paper) or probe a frozen backbone")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (mean ± std)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None, help="default 3e-5 (finetune) / 1e-2 (probe)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--use-dev-for-train", action="store_true", help="train on dev (automatic when a language has no train file)")
    p.add_argument("--select-best-on-dev", action="store_true", help="keep the epoch with the best dev F1 (off: the paper tests the final weights)")
    p.add_argument("--max-train-sentences", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_eval_ner)

    p = ev.add_parser("fewshot", help="accuracy on held-out SMLMT episodes before/after k head-adaptation steps")
    p.add_argument("checkpoint", help="run directory (uses RUN/final) or a save_pretrained checkpoint directory")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--data", action="append", default=None, help="held-out text (default: the run's validation set)")
    p.add_argument("--variant", choices=["sentence", "token"], default="sentence")
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=4)
    p.add_argument("--q-query", type=int, default=4)
    p.add_argument("--inner-steps", type=int, default=10)
    p.add_argument("--inner-lr", type=float, default=0.5)
    p.add_argument("--head-init", choices=["zero", "proto", "learned"], default="zero")
    p.add_argument("--pool", choices=["mask", "last"], default="mask", help="sentence variant: read the window at the mask or the last position")
    p.add_argument("--window-len", type=int, default=64)
    p.add_argument("--band-min-count", type=int, default=8)
    p.add_argument("--band-skip-top", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="episode seed (keep it fixed to compare checkpoints)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval_fewshot)

    tk = sub.add_parser("tokenizer", help="tokenizer utilities").add_subparsers(dest="what", required=True)
    p = tk.add_parser("train", help="train a byte-level BPE tokenizer")
    p.add_argument("--data", action="append", required=True, help="training text (file, dir, glob, hf:NAME)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--sample-bytes", type=int, default=20_000_000)
    p.add_argument("--text-field", default="text")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_tokenizer_train)
    p = sub.add_parser("bench", help="time an AR step and a meta step side by side (meta/AR cost ratio)")
    p.add_argument("config", help="YAML config file (its meta section defines the meta step)")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON (the ratio is `meta_over_ar_ratio`)")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("experiment", help="train and evaluate every arm × seed of an experiment, then write the report")
    p.add_argument("config", help="experiment YAML (shared settings, arms, seeds, evaluations)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the shared settings")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("report", help="compare runs: an experiment directory, or run directories as arms")
    p.add_argument("paths", nargs="+")
    p.add_argument("--target-loss", type=float, default=None, help="default: the baseline arm's final validation loss")
    p.add_argument("--baseline", default=None, help="baseline arm (default: the experiment's, or the first run)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("dynamics", help="learning dynamics over a run's saved checkpoints (post hoc); overlay two runs")
    p.add_argument("runs", nargs="+", help="one run directory, or two to overlay (e.g. vanilla and meta)")
    p.add_argument("--groups", default=None, help="comma-separated: activations,weights,gradients,attention (default: all)")
    p.add_argument("--smoothing", type=int, default=None, help="moving-average window of the phase read-out")
    p.add_argument("--recompute", action="store_true", help="recompute rows already written")
    p.add_argument("--labels", default=None, help="labels of the two runs in overlays, e.g. vanilla,meta")
    p.add_argument("--out", default=None, help="folder for overlay figures")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_dynamics)

    p = sub.add_parser("watch", help="live web view of runs or experiments (loopback only by default)")
    p.add_argument("paths", nargs="+", help="run or experiment directories")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.set_defaults(func=_cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MetalmError as exc:
        print(f"metalm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metalm: interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
