"""Peak memory and tokenization throughput of `metalm train` as the corpus grows (DESIGN 2.9).

Corpora of about 60 MB, 250 MB and 1 GB of real English text are made by repeating the ELTeC
novels of ../shared/data/corpora/eltec-eng (symbolic links: no disk is spent on copies). For each,
with a fresh token cache:

1. `metalm train` of 2 steps, vanilla — tokenizer training, tokenization and training;
2. the same again — tokens now cached: training alone;
3. a token-SMLMT meta run of 2 steps on the cached tokens (occurrence index built, one meta step).

Each run is a child process; its memory is read from /proc while it runs: the peak resident set of
the training process itself (VmHWM) and the peak total over its process tree, tokenization workers
included (sum of proportional set sizes, so pages shared after fork count once). Tokenization throughput is read from the run's own summary line.

    python benchmarks/data_scale.py [--sizes 60,250,1000] [--work /tmp/metalm-data-scale]

writes benchmarks/results/data_scale.json; the table in RESULTS.md is copied from its output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import ELTEC, ROOT, machine, save_result

COMMON = ["model.preset=micro", "train.steps=2", "train.batch_size=8", "train.seq_len=128", "train.eval_every=0",
          "train.eval_batches=1", "train.save_every=0", "train.log_every=1", "dynamics.every=0", "run.progress=false"]
META = ["meta.enabled=true", "meta.smlmt_variant=token", "meta.schedule=interleave", "meta.hybrid=0.5",
        "meta.n_way=8", "meta.k_shot=2", "meta.q_query=2"]


def make_corpus(work: Path, target_mb: int) -> Path:
    """A directory of links to the ELTeC training files, repeated until about `target_mb` MB."""
    files = sorted(p for p in (ELTEC / "train").rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    copies = max(1, round(target_mb * 1e6 / size))
    out = work / f"corpus-{target_mb}mb"
    if not out.is_dir():
        for c in range(copies):
            (out / f"copy-{c:03d}").mkdir(parents=True)
            for p in files:
                (out / f"copy-{c:03d}" / p.name).symlink_to(p)
    return out


def _tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _status_kb(pid: int, field: str, name: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(argv: list[str], env: dict) -> dict:
    """Run a command; return its wall time, exit status, output and peak memory (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = {"main": 0, "tree": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak["main"] = max(peak["main"], _status_kb(proc.pid, "VmHWM"))
            # proportional set size: pages the workers share with the parent (fork) are counted once
            peak["tree"] = max(peak["tree"], sum(_status_kb(p, "Pss", "smaps_rollup") for p in _tree(proc.pid)))
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = proc.communicate()[0]
    done.set()
    watcher.join()
    return {"seconds": time.perf_counter() - start, "rc": proc.returncode, "output": output,
            "peak_rss_main_mb": peak["main"] / 1024, "peak_rss_tree_mb": peak["tree"] / 1024}


def tokenization_figures(output: str) -> dict:
    m = re.search(r"tokenized data\.train: ([\d,.]+) MB of text, ([\d,.]+)M tokens in ([\d,.]+) s \(([\d,.]+) MB/s, "
                  r"(\d+) process", output)
    if not m:
        return {}
    num = [float(g.replace(",", "")) for g in m.groups()]
    return {"text_mb": num[0], "tokens_m": num[1], "tokenize_s": num[2], "mb_per_s": num[3], "processes": int(num[4])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="60,250,1000", help="corpus sizes in MB")
    ap.add_argument("--work", default="/tmp/metalm-data-scale", help="corpora, caches and runs (deleted after)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_scale.json"))
    args = ap.parse_args()
    if not ELTEC.is_dir():
        print(f"skipped: {ELTEC} is absent (the shared data is needed)", file=sys.stderr)
        return 1
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "cfg.yaml"
    cfg.write_text("{}\n")
    results = []
    for mb in (int(s) for s in args.sizes.split(",")):
        corpus = make_corpus(work, mb)
        cache = work / f"cache-{mb}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**os.environ, "METALM_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
        for name, extra in (("vanilla, first run (tokenizer + tokens + train)", []),
                            ("vanilla, tokens cached", []),
                            ("token-SMLMT meta, tokens cached", META)):
            run_dir = work / f"run-{mb}-{len(results)}"
            shutil.rmtree(run_dir, ignore_errors=True)
            argv = [sys.executable, "-m", "metalm", "train", str(cfg), f"data.train={corpus}",
                    f"run.dir={run_dir}", *COMMON, *extra]
            r = run_measured(argv, env)
            if r["rc"] != 0:
                print(r["output"][-3000:], file=sys.stderr)
                raise SystemExit(f"{name} on {mb} MB failed (exit {r['rc']})")
            info = json.loads((run_dir / "data.json").read_text())
            row = {"corpus_mb": mb, "run": name, "train_tokens": info["splits"]["train"]["tokens"],
                   "wall_s": round(r["seconds"], 1), "peak_rss_main_mb": round(r["peak_rss_main_mb"]),
                   "peak_rss_tree_mb": round(r["peak_rss_tree_mb"]), **tokenization_figures(r["output"])}
            results.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    out = {"machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "results": results}
    save_result(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
