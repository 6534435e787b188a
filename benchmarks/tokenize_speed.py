"""Tokenization throughput before and after streaming tokenization (issue 11), side by side.

The same corpus (default: ELTeC English training files, 62 MB) is tokenized into a fresh cache by
the code of commit 0b48477 ("before": in one process, the Rust tokenizer's own threads, the whole
corpus in memory) and by the working tree ("after": streamed, `data.num_proc` worker processes),
alternately, with the same tokenizer given as `data.tokenizer` (trained once beforehand, so only
tokenization is timed). Each run is a fresh process: wall time of `prepare_corpus`, MB/s of text and
the process's peak RSS (its own; workers are separate processes, reported by the run itself).

    python benchmarks/tokenize_speed.py [--rounds 2] [--data PATH] [--num-proc N]

writes benchmarks/results/tokenize_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ELTEC, ROOT, ensure_worktree, machine, save_result

CHILD = """
import json, resource, sys, time
from metalm.config import load_config
from metalm.data import prepare_corpus
cfg = load_config(None, sys.argv[2:])
start = time.perf_counter()
corpus = prepare_corpus(cfg.data, sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": len(corpus.train) + len(corpus.validation),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def text_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*.txt")]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ELTEC / "train"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--num-proc", type=int, default=None, help="after: data.num_proc (default: all cores)")
    ap.add_argument("--before", default="0b48477")
    ap.add_argument("--worktree", default="/tmp/metalm-before")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tokenize_speed.json"))
    args = ap.parse_args()
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"skipped: {data} is absent (the shared data is needed)")
    before_src = ensure_worktree(args.before, Path(args.worktree))
    work = Path(tempfile.mkdtemp(prefix="metalm-tokenize-speed-"))
    from metalm.tokenizer import train_tokenizer  # the tokenizer both sides load (trained on a 20 MB sample)
    from metalm.config import DataConfig
    from metalm.data.pipeline import tokenizer_sample
    from metalm.data.sources import iter_documents, resolve_files

    sources = resolve_files(str(data))
    docs = lambda: (d for s in sources for d in iter_documents(s))  # noqa: E731
    train_tokenizer(tokenizer_sample(docs, DataConfig().tokenizer_sample_bytes), 8192).save_pretrained(work / "tok")
    overrides = [f"data.train={data}", f"data.tokenizer={work / 'tok'}"]
    sides = {"before": (str(before_src), overrides),
             "after": (str(ROOT / "src"), overrides + ([f"data.num_proc={args.num_proc}"] if args.num_proc else []))}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
            src, over = sides[side]
            cache = work / f"cache-{side}-{r}"
            proc = subprocess.run([sys.executable, "-c", CHILD, str(cache), *over], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": src}, cwd=work)
            if proc.returncode:
                raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(side, runs[side][-1], flush=True)
    mb = text_mb(data)
    summary = {side: {"median_s": statistics.median(x["seconds"] for x in rs),
                      "mb_per_s": mb / statistics.median(x["seconds"] for x in rs),
                      "peak_rss_mb": max(x["peak_rss_mb"] for x in rs), "tokens": rs[0]["tokens"]}
               for side, rs in runs.items()}
    assert summary["before"]["tokens"] == summary["after"]["tokens"], "the two sides disagree on the token count"
    out = {"machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "data": str(data), "text_mb": mb, "before": args.before,
           "num_proc": args.num_proc, "summary": summary, "runs": runs,
           "after_speedup": summary["before"]["median_s"] / summary["after"]["median_s"]}
    save_result(args.out, out)
    print(f"before {summary['before']['mb_per_s']:.2f} MB/s, after {summary['after']['mb_per_s']:.2f} MB/s "
          f"({out['after_speedup']:.2f}×); peak RSS {summary['before']['peak_rss_mb']:.0f} → "
          f"{summary['after']['peak_rss_mb']:.0f} MB → {args.out}")


if __name__ == "__main__":
    main()
