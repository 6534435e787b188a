"""Next-token (AR) training-step speed before and after a change, measured side by side.

"before" is the code at a git commit (default 0b48477, the commit before issue 11's GPU-ready step),
checked out as a worktree (default /tmp/metalm-before) and imported through PYTHONPATH; "after" is
the working tree. Each side runs in its own long-lived worker process that builds the same Trainer
(same config, seed and data) and times `Trainer.step` (gradients + AdamW) — exactly what the training
loop runs per step: forward, backward, clipping, the non-finite check and the AdamW update — one
step at a time. The workers take turns in blocks of `--steps` steps (A B, B A, A B, … so neither
side always goes first), so a noisy, shared machine slows both alike; medians of all measured steps
are reported with the after/before ratio. Warm-up steps are discarded.

    python benchmarks/ar_step_speed.py [--rounds 12] [--steps 8] [--threads 2] [key=value ...]

Writes benchmarks/results/ar_step_speed.json. Data: `../shared/data/corpora/eltec-eng` by default
(train-00.txt, BPE vocabulary 8192), preset micro, batch 16 × 128 tokens (configs/smoke.yaml).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ELTEC, ROOT, ensure_worktree, machine, save_result

TAG = "@@"  # protocol lines on the workers' stdout


def worker(config: str, overrides: list[str], warmup: int) -> None:
    """Build the Trainer, warm up, then time `n` steps for every `n` read from stdin."""
    import torch

    import metalm
    from metalm.config import load_config
    from metalm.trainer import Trainer

    cfg = load_config(config, ["run.progress=false", *overrides])
    if hasattr(Trainer, "build"):
        trainer = Trainer.build(cfg)
        take = trainer.step
    else:  # a tree from before the Trainer API (the "before" side of a comparison)
        trainer = Trainer(cfg)
        trainer.prepare()

        def take(step):
            trainer.train_step(step)
            trainer.optimizer_step(step)

    trainer.model.train()
    step = 0

    def one() -> float:
        nonlocal step
        start = time.perf_counter()
        take(step)
        step += 1
        return time.perf_counter() - start

    for _ in range(warmup):
        one()
    info = {"metalm": str(Path(metalm.__file__).parent), "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "tokens_per_step": cfg.train.batch_size * cfg.train.seq_len}
    print(TAG, json.dumps(info), flush=True)
    for line in sys.stdin:
        print(TAG, json.dumps([one() for _ in range(int(line))]), flush=True)


class Worker:
    def __init__(self, name: str, src: Path, args, cache: Path):
        env = {**os.environ, "PYTHONPATH": str(src), "METALM_CACHE": str(cache), "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", args.config,
               "--warmup", str(args.warmup), *self.overrides(args)]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.info = self.reply()
        self.times: list[float] = []

    @staticmethod
    def overrides(args) -> list[str]:
        data = Path(args.data)
        return [f"data.train={data / 'train' / 'train-00.txt'}", f"data.validation={data / 'validation'}",
                "data.vocab_size=8192", f"run.threads={args.threads}", "run.dir=/tmp/ar_step_speed-run",
                *args.overrides]

    def reply(self):
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])
        raise RuntimeError(f"the {self.name} worker exited (code {self.proc.wait()})")

    def measure(self, steps: int) -> None:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        self.times += self.reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--before", default="0b48477", help="git commit of the 'before' code")
    parser.add_argument("--worktree", default="/tmp/metalm-before")
    parser.add_argument("--data", default=str(ELTEC))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=8, help="steps per block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ar_step_speed.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides for both sides (key=value)")
    args = parser.parse_args()
    if args.worker:
        return worker(args.config, args.overrides, args.warmup)

    before_src = ensure_worktree(args.before, Path(args.worktree))
    cache = Path(tempfile.gettempdir()) / "ar_step_speed-cache"
    workers = [Worker("before", before_src, args, cache / "before"), Worker("after", ROOT / "src", args, cache / "after")]
    assert workers[0].info["metalm"] != workers[1].info["metalm"], "both workers import the same metalm"
    try:
        for r in range(args.rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                w.measure(args.steps)
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{w.name} {1000 * statistics.median(w.times):.1f} ms" for w in workers), flush=True)
    finally:
        for w in workers:
            w.close()
    before, after = (statistics.median(w.times) for w in workers)
    result = {
        "benchmark": "next-token training step (Trainer.step: gradients + AdamW), before vs after, interleaved",
        "date": datetime.date.today().isoformat(),
        "machine": machine(),  # torch threads: each side's "threads"
        "before": {"commit": args.before, **workers[0].info, "ms_per_step_median": 1000 * before,
                   "all_ms": [1000 * t for t in workers[0].times]},
        "after": {"commit": "working tree", **workers[1].info, "ms_per_step_median": 1000 * after,
                  "all_ms": [1000 * t for t in workers[1].times]},
        "config": args.config, "overrides": Worker.overrides(args), "rounds": args.rounds, "steps_per_block": args.steps,
        "warmup": args.warmup, "after_over_before": after / before,
    }
    save_result(args.out, result)
    print(f"before ({args.before}) {1000 * before:.1f} ms/step, after {1000 * after:.1f} ms/step: "
          f"after/before = {after / before:.3f} (median of {len(workers[0].times)} steps each) → {args.out}")


if __name__ == "__main__":
    main()
