"""Matched baselines (DESIGN 2.6): equal FLOPs only between schedules that end there.

For an arm × seed, the matched baseline is the baseline arm's run with the same schedule shape (the
warm-up the same fraction of the steps; decay to the same floor at the end) whose step count makes
its final FLOPs equal the arm's final FLOPs, within one baseline step. A baseline step always executes
the same work (one next-token optimizer step over `batch_size × seq_len` tokens), so the step count
is the arm's final FLOPs over the baseline's FLOPs per step, read from the finished runs' metrics:
exact, whatever the arm's schedule drew. The run is an ordinary run directory
`<experiment>/<baseline>@<steps>-steps/seed-<seed>/`, resumed and reused like any other, and shared
by every arm whose match has that step count (a meta arm's controls execute the same FLOPs, so they
share one); when the step count equals the baseline's own, the baseline run itself is the match and
nothing more is trained.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import Config
from ..errors import MetalmError
from ..run_dir import RunDir
from .spec import Experiment


def matched_name(baseline: str, steps: int) -> str:
    """The experiment-directory name of the baseline's matched runs of `steps` steps."""
    return f"{baseline}@{steps}-steps"


def final_flops(rows: list[dict]) -> float | None:
    """The cumulative FLOPs of a run's last metrics row (None without rows)."""
    return float(max(rows, key=lambda r: r["step"])["flops"]) if rows else None


def flops_per_step(rows: list[dict]) -> float:
    """FLOPs of one step of a run whose steps all execute the same work (a baseline)."""
    last = max(rows, key=lambda r: r["step"]) if rows else None
    if last is None or not last["step"]:
        raise MetalmError("the baseline run has no finished step to take its FLOPs per step from")
    return float(last["flops"]) / last["step"]


def matched_steps(arm_flops: float, per_step: float) -> int:
    """The step count whose final FLOPs are nearest the arm's (at least one step)."""
    return max(1, round(arm_flops / per_step))


def matched_train(train: dict, steps: int) -> dict:
    """The baseline's `train` settings with `steps` steps and the same schedule shape: the warm-up
    scaled to the same fraction of the steps (the decay then spans the rest, as in the baseline)."""
    base_steps = int(train.get("steps", steps))
    warmup = int(train.get("warmup_steps", 0) or 0)
    return {**train, "steps": steps, "warmup_steps": min(steps, round(warmup * steps / base_steps))}


def matched_run(exp: Experiment, arm: str, seed: int) -> tuple[Path, int, Config | None]:
    """(run directory, step count, config to train — None when the baseline run itself matches) of
    `arm` × `seed`'s matched baseline; both the arm's and the baseline's run must have finished."""
    base_rows = exp.run(exp.baseline, seed).read_metrics()
    arm_rows = exp.run(arm, seed).read_metrics()
    if not arm_rows:
        raise MetalmError(f"arm {arm!r} seed {seed}: no metrics to match a baseline run to")
    base_cfg = exp.config(exp.baseline, seed)
    arm_flops = final_flops(arm_rows)
    assert arm_flops is not None  # arm_rows is not empty
    steps = matched_steps(arm_flops, flops_per_step(base_rows))
    if steps == base_cfg.train.steps:
        return exp.run_dir(exp.baseline, seed), steps, None
    tree = copy.deepcopy(exp.tree(exp.baseline))
    tree["train"] = matched_train(base_cfg.train.model_dump(mode="json"), steps)
    # only its validation curve is compared: no dynamics probes (the report reads the arms' phases)
    tree["dynamics"] = {**(tree.get("dynamics") or {}), "every": 0}
    name = matched_name(exp.baseline, steps)
    return exp.run_dir(name, seed), steps, exp.config(exp.baseline, seed, tree=tree, name=name)


def matched_runs(exp: Experiment) -> dict[str, dict[int, RunDir]]:
    """Every matched baseline run of the experiment that exists: arm → seed → run."""
    out: dict[str, dict[int, RunDir]] = {}
    for arm in exp.arms:
        if arm == exp.baseline:
            continue
        for seed in exp.seeds:
            if not (exp.run(arm, seed).is_finished() and exp.run(exp.baseline, seed).is_finished()):
                continue
            path, _, _ = matched_run(exp, arm, seed)
            run = RunDir(path)
            if run.metrics_path.is_file():
                out.setdefault(arm, {})[seed] = run
    return out
