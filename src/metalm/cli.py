"""The `metalm` command line.

    metalm train CONFIG.yaml [key.sub=value ...]
    metalm eval perplexity RUN_OR_CHECKPOINT --data PATH [--data PATH ...]
    metalm tokenizer train --data PATH --vocab-size N --out DIR
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

    tk = sub.add_parser("tokenizer", help="tokenizer utilities").add_subparsers(dest="what", required=True)
    p = tk.add_parser("train", help="train a byte-level BPE tokenizer")
    p.add_argument("--data", action="append", required=True, help="training text (file, dir, glob, hf:NAME)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--sample-bytes", type=int, default=20_000_000)
    p.add_argument("--text-field", default="text")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_tokenizer_train)
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
