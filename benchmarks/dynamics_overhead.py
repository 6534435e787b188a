"""Overhead of on-the-fly learning dynamics (DESIGN 2.7) relative to training, on a CPU preset.

Measures, in one process on one machine, the median wall time of a training step and of one
dynamics probe (all four groups) on the same model, and reports the overhead at a cadence of one
probe every `--every` steps: probe / (every × step). Writes benchmarks/results/dynamics_overhead.json.

    python benchmarks/dynamics_overhead.py [--config configs/smoke.yaml] [--every 50] [key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine, save_result
from metalm.config import load_config
from metalm.dynamics.probe import dynamics_rows
from metalm.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/dynamics_overhead.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(args.config, ["run.progress=false", *args.overrides])
    trainer = Trainer.build(cfg)
    step_times, probe_times = [], []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        trainer.step(i)
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        rows = dynamics_rows(trainer.model, trainer.probe, i, cfg.dynamics.groups)
        probe_times.append(time.perf_counter() - start)
    step, probe = statistics.median(step_times[1:]), statistics.median(probe_times[1:])
    result = {
        "machine": machine(), "torch_threads": torch.get_num_threads(),
        "config": args.config, "overrides": args.overrides, "preset": cfg.model.preset,
        "tokens_per_step": cfg.train.batch_size * cfg.train.seq_len,
        "probe_tokens": int(trainer.probe.numel()), "rows_per_probe": len(rows), "groups": cfg.dynamics.groups,
        "seconds_per_step": step, "seconds_per_probe": probe, "every": args.every,
        "overhead": probe / (args.every * step),
    }
    save_result(args.out, result)
    print(f"step {step:.4f} s, probe {probe:.4f} s ({len(rows)} rows): overhead at every={args.every}: "
          f"{100 * result['overhead']:.2f}% of training time")


if __name__ == "__main__":
    main()
