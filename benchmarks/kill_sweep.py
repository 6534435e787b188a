"""Kill sweep (issue 12): SIGKILL a meta-learned run at random moments and resume each; count how many
resumed runs end exactly like an uninterrupted one (metrics rows without timings, final weights).

A token-SMLMT hybrid run of the nano preset on a small generated corpus (CPU, one thread): one
uninterrupted reference, then for each of `--kills` seeded moments drawn uniformly over the
reference's training window (from `--margin` seconds before its first metrics row to `--margin`
seconds after its last checkpoint, times since the process started), a fresh run killed with SIGKILL at that moment and
the same command run again. Writes benchmarks/results/kill_sweep.json.

    python benchmarks/kill_sweep.py [--kills 20] [--seed 0] [--steps 60] [--save-every 5]

`--experiment`: the same for a whole `metalm experiment` (a vanilla and a meta arm, one seed, with
perplexity and few-shot evaluations): kills are drawn over the reference experiment's whole wall
time (or, with `--at evaluation,report`, placed 0-0.5 s after evaluation or report writing begins)
and each resumed experiment's summary.json must
equal the uninterrupted one's, timings aside (every `time` entry, the versions, and the seconds ratio
in the verdict). Writes benchmarks/results/kill_sweep_experiment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from common import ROOT, machine, save_result
from metalm.run_dir import RunDir

META = {"meta.enabled": "true", "meta.smlmt_variant": "token", "meta.band_min_count": 5, "meta.band_skip_top": 10,
        "meta.window_len": 16, "meta.n_way": 3, "meta.k_shot": 2, "meta.q_query": 2, "meta.inner_steps": 3,
        "meta.inner_lr": 0.5}
WORDS = ("the a of and to in that was he she it with as his her for had on at by not but from they river castle "
         "morning letter garden village doctor window evening journey mother father silver quiet ancient narrow "
         "sudden gentle bright heavy walked spoke smiled waited wrote answered looked opened closed remembered").split()
TIME_KEYS = {"time", "tokens_per_s"}


def write_corpus(path: Path, n_docs: int, seed: int) -> None:
    rng = random.Random(seed)
    docs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                      for _ in range(20)) for _ in range(n_docs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def overrides(root: Path, run: Path, steps: int, save_every: int) -> list[str]:
    items = {"run.dir": run, "run.progress": "false", "run.threads": 1, "run.seed": 0,
             "data.train": root / "corpus" / "train", "data.validation": root / "corpus" / "validation",
             "data.vocab_size": 300, "model.preset": "nano", "train.steps": steps, "train.batch_size": 4,
             "train.seq_len": 32, "train.lr": 0.003, "train.warmup_steps": 2, "train.eval_every": 10,
             "train.eval_batches": 2, "train.save_every": save_every, "train.log_every": 1, **META}
    return [f"{k}={v}" for k, v in items.items()]


def outcome(run: Path) -> tuple[list[dict], dict]:
    rows = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in RunDir(run).read_metrics()]
    return rows, load_file(run / "final" / "model.safetensors")


def comparable(value, root: Path):
    """A summary without what depends on wall-clock time (`time` entries, the software versions, the
    training-time ratio of a verdict line) or on where the experiment lies (`root` in paths)."""
    if isinstance(value, dict):
        return {k: comparable(v, root) for k, v in value.items() if k not in ("time", "versions")}
    if isinstance(value, list):
        return [comparable(v, root) for v in value]
    if isinstance(value, str):
        return re.sub(r"[0-9.]+× the training time", "…× the training time", value.replace(str(root), "EXP"))
    return value


def experiment_sweep(args, root: Path, env: dict) -> None:
    """Kill whole experiments at random moments (training, evaluation, report) and resume each."""
    import yaml

    spec = {"run": {"progress": False, "threads": 1}, "model": {"preset": "nano"},
            "data": {"train": str(root / "corpus" / "train"), "validation": str(root / "corpus" / "validation"),
                     "vocab_size": 300},
            "train": {"steps": args.steps, "batch_size": 4, "seq_len": 32, "lr": 0.003, "warmup_steps": 2,
                      "eval_every": 10, "eval_batches": 2, "save_every": args.save_every, "log_every": 1},
            "arms": {"vanilla": {}, "meta": {"meta": {k.removeprefix("meta."): v for k, v in META.items()}}},
            "seeds": [0], "evaluations": {"perplexity": True,
                                          "fewshot": {"episodes": 5, "n_way": 3, "k_shot": 2, "q_query": 2,
                                                      "window_len": 16, "band_min_count": 5, "band_skip_top": 10}}}
    spec["arms"]["meta"]["meta"]["enabled"] = True

    def command(exp: Path) -> list[str]:
        path = root / f"{exp.name}.yaml"
        path.write_text(yaml.safe_dump({**spec, "run": {**spec["run"], "dir": str(exp)}}))
        return [sys.executable, "-m", "metalm", "experiment", str(path)]

    def summary(exp: Path):
        return comparable(json.loads((exp / "summary.json").read_text()), exp)

    reference = root / "reference"
    started = time.perf_counter()
    subprocess.run(command(reference), env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    expected = summary(reference)
    rng = random.Random(args.seed)
    results = []
    for i in range(args.kills):
        exp = root / f"killed-{i:02d}"
        proc = subprocess.Popen(command(exp), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        begun = time.perf_counter()
        if args.at:  # at an event: the first arm's run finished (its evaluations begin), or the report begun
            target = args.at.split(",")[i % len(args.at.split(","))]
            first = exp / sorted(spec["arms"])[0] / "seed-0"
            while proc.poll() is None and not (
                    (exp / "plots").exists() if target == "report" else
                    (RunDir(first).read_status() or {}).get("state") == "finished"):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            time.sleep(rng.uniform(0.0, wall))
        moment = time.perf_counter() - begun
        ended = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = [arm for arm in sorted(spec["arms"]) if (exp / arm / "seed-0").is_dir()]  # trained in this order
        state = {arm: (RunDir(exp / arm / "seed-0").read_status() or {}).get("state") for arm in started}
        evals = sorted(str(p.relative_to(exp)) for p in exp.glob("*/seed-0/eval/*.json"))
        stage = ("ended before the kill" if ended else
                 "report" if (exp / "plots").exists() or (exp / "summary.json").exists() else
                 "evaluation" if started and state[started[-1]] == "finished" else "training")
        resumed = subprocess.run(command(exp), env=env, capture_output=True, text=True)
        exact = resumed.returncode == 0 and summary(exp) == expected
        results.append({"moment_s": round(moment, 2), "stage": stage, "runs": state, "evaluations": evals,
                        "resume_rc": resumed.returncode, "exact": exact,
                        **({} if resumed.returncode == 0 else {"stderr": resumed.stderr[-500:]})})
        print(f"kill {i + 1:2d}/{args.kills} at {moment:5.1f}s ({stage}): rc {resumed.returncode}, "
              f"{'same summary' if exact else 'DIFFERENT'}", flush=True)
    exact = sum(r["exact"] for r in results)
    stages = {s: sum(r["stage"] == s for r in results)
              for s in ("training", "evaluation", "report", "ended before the kill")}
    out = args.out or str(ROOT / "benchmarks" / "results" / "kill_sweep_experiment.json")
    save_result(out, {"exact": exact, "kills": args.kills, "seed": args.seed, "at": args.at, "steps": args.steps,
                      "save_every": args.save_every, "reference_wall_s": round(wall, 1), "killed": stages,
                      "machine": machine(), "date": time.strftime("%Y-%m-%d"), "kills_detail": results})
    print(f"{exact}/{args.kills} resumed experiments with the uninterrupted summary (reference {wall:.1f}s; "
          f"killed during {stages}); {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--margin", type=float, default=0.25, help="seconds added on either side of the window")
    parser.add_argument("--experiment", action="store_true", help="kill whole experiments (see the docstring)")
    parser.add_argument("--at", default=None,
                        help="--experiment: kill at events instead of random moments, in turn: 'evaluation' (0-0.5 s "
                             "after the first arm's run finished) and/or 'report' (0-0.5 s after it began), e.g. "
                             "evaluation,report")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kill-sweep-"))
    write_corpus(root / "corpus" / "train" / "train.txt", 40, 1)
    write_corpus(root / "corpus" / "validation" / "validation.txt", 4, 2)
    (root / "cfg.yaml").write_text("{}")
    env = {**os.environ, "METALM_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    if args.experiment:
        experiment_sweep(args, root, env)
        return
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "kill_sweep.json")

    def command(run: Path) -> list[str]:
        return [sys.executable, "-m", "metalm", "train", str(root / "cfg.yaml"),
                *overrides(root, run, args.steps, args.save_every)]

    reference = root / "reference"
    started = time.perf_counter()
    proc = subprocess.Popen(command(reference), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_row = last_checkpoint = None
    while proc.poll() is None:
        if first_row is None and RunDir(reference).metrics_path.is_file():
            first_row = time.perf_counter() - started
        if last_checkpoint is None and RunDir(reference).checkpoint_dir(args.steps).is_dir():
            last_checkpoint = time.perf_counter() - started
        time.sleep(0.01)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or first_row is None or last_checkpoint is None:
        raise SystemExit(f"the reference run failed (rc {proc.returncode}); see {reference}")
    window = (max(0.0, first_row - args.margin), last_checkpoint + args.margin)
    ref_rows, ref_weights = outcome(reference)

    rng = random.Random(args.seed)
    results = []
    for i in range(args.kills):
        run = root / f"killed-{i:02d}"
        moment = rng.uniform(*window)
        proc = subprocess.Popen(command(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        status = RunDir(run).read_status() or {}
        latest = RunDir(run).latest_checkpoint()
        killed_at = {"moment_s": round(moment, 2), "state": status.get("state"), "step": status.get("step"),
                     "checkpoint": latest[0] if latest else None, "rows": len(RunDir(run).read_metrics()),
                     "finished_before_kill": (run / "final").is_dir()}
        resumed = subprocess.run(command(run), env=env, capture_output=True, text=True)
        exact = False
        if resumed.returncode == 0:
            rows, weights = outcome(run)
            exact = rows == ref_rows and weights.keys() == ref_weights.keys() and all(
                torch.equal(weights[k], ref_weights[k]) for k in weights)
        results.append({**killed_at, "resume_rc": resumed.returncode, "exact": exact,
                        **({} if resumed.returncode == 0 else {"stderr": resumed.stderr[-500:]})})
        print(f"kill {i + 1:2d}/{args.kills} at {moment:5.1f}s: {killed_at} → rc {resumed.returncode}, "
              f"{'exact' if exact else 'DIFFERENT'}", flush=True)

    exact = sum(r["exact"] for r in results)
    phases = {"before the first row": sum(r["rows"] == 0 for r in results),
              "before the first checkpoint": sum(r["rows"] > 0 and r["checkpoint"] is None for r in results),
              "between checkpoints": sum(r["checkpoint"] is not None and r["checkpoint"] < args.steps for r in results),
              "after the last checkpoint": sum(r["checkpoint"] == args.steps for r in results)}
    summary = {"exact": exact, "kills": args.kills, "seed": args.seed, "steps": args.steps,
               "save_every": args.save_every, "reference_wall_s": round(wall, 1),
               "kill_window_s": [round(t, 2) for t in window], "killed": phases, "meta": META,
               "machine": machine(),
               "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "kills_detail": results}
    save_result(args.out, summary)
    print(f"{exact}/{args.kills} resumed runs exact (reference {wall:.1f}s, kills within {window[0]:.1f}–"
          f"{window[1]:.1f}s; killed {phases}); {args.out}")


if __name__ == "__main__":
    main()
