"""Sweeps in an experiment file (DESIGN 2.6, "tuned against tuned"): each swept arm at its own best
setting before arms are compared.

    sweep:
      arms: [vanilla, paper]        # meta or baseline arms; never a control arm
      seeds: [0]                    # default: the experiment's first seed
      grid:
        train.lr: [1.0e-3, 3.0e-4, 1.0e-4]
        train.grad_clip: [0, 1.0]

Every setting of the grid (the product of its lists, in the order written) is trained for each swept
arm and sweep seed as an ordinary run directory `<experiment>/sweep/<arm>/<setting>/seed-<seed>/`
(resumed and reused like any run; no evaluations, no dynamics probes: only the final validation loss
is read). The arm's chosen setting is the one with the lowest mean final validation loss over the
sweep seeds (ties: the first in grid order; a diverged or unfinished setting is never chosen). The arm's
own seeds then run with it, and a control arm (`meta.control`) takes the chosen setting of the meta
arm it differs from only in `meta.control`, so the two keep sharing their schedule.

Refused before anything runs: an unknown arm or config key, an empty or repeated list of values, a
value the config refuses, a control arm listed itself, and a key that would change what the arms are
compared on (the token budget, data, model, evaluation cadence, the run's own settings, or what the
arm is: `meta.enabled`, `meta.control`).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import set_dotted
from ..errors import ConfigError
from ..run_dir import RunDir

SWEEP_DIR = "sweep"
# What the arms are compared on: never tuned per arm.
_FIXED_SECTIONS = ("run.", "data.", "model.", "dynamics.")
_FIXED_KEYS = {"train.steps", "train.batch_size", "train.seq_len", "train.eval_every", "train.eval_batches",
               "meta.enabled", "meta.control"}


@dataclass(frozen=True)
class Sweep:
    arms: list[str]
    seeds: list[int]
    grid: dict[str, list]  # dotted config key -> its values, in the order written

    def settings(self) -> list[dict[str, Any]]:
        """Every setting of the grid: the product of its lists, the first key varying slowest."""
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def spec(self) -> dict:
        return {"arms": list(self.arms), "seeds": list(self.seeds), "grid": {k: list(v) for k, v in self.grid.items()}}


def setting_name(setting: dict[str, Any]) -> str:
    """A setting's directory name, e.g. `train.lr=0.001,train.grad_clip=1.0`."""
    return ",".join(f"{key}={json.dumps(value)}" for key, value in setting.items())


def nested(setting: dict[str, Any]) -> dict:
    """`{"train.lr": 1e-3}` → `{"train": {"lr": 1e-3}}`: a tree to merge into an arm's settings."""
    out: dict = {}
    for key, value in setting.items():
        set_dotted(out, key, value)
    return out


def parse_sweep(tree: Any, arms: list[str], seeds: list[int]) -> Sweep:
    """The `sweep:` section, checked for shape (its keys and values are checked against each arm's
    config when the experiment is loaded: `experiment.spec`)."""
    if not isinstance(tree, dict):
        raise ConfigError("sweep: a mapping with 'arms', 'grid' and optionally 'seeds'")
    unknown = set(tree) - {"arms", "seeds", "grid"}
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {', '.join(sorted(unknown))} (known: arms, seeds, grid)")
    swept = tree.get("arms")
    if not isinstance(swept, list) or not swept or not all(isinstance(a, str) for a in swept):
        raise ConfigError("sweep.arms: a non-empty list of arm names")
    for arm in swept:
        if arm not in arms:
            raise ConfigError(f"sweep.arms: no arm named {arm!r} (arms: {', '.join(arms)})")
    if len(set(swept)) != len(swept):
        raise ConfigError("sweep.arms: an arm is listed more than once")
    sweep_seeds = tree.get("seeds", seeds[:1])
    if not isinstance(sweep_seeds, list) or not sweep_seeds or \
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in sweep_seeds):
        raise ConfigError("sweep.seeds: a non-empty list of non-negative integers")
    if len(set(sweep_seeds)) != len(sweep_seeds):
        raise ConfigError("sweep.seeds: a seed is listed more than once")
    grid = tree.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError("sweep.grid: a mapping of config keys (e.g. train.lr) to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid.{key}: a non-empty list of values")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"sweep.grid.{key}: a value is listed more than once")
        if any(isinstance(v, (dict, list)) for v in values):
            raise ConfigError(f"sweep.grid.{key}: each value must be a number, string, boolean or null")
        if key in _FIXED_KEYS or key.startswith(_FIXED_SECTIONS) or key == "run" or "." not in key:
            raise ConfigError(f"sweep.grid.{key}: cannot be swept: it would change what the arms are compared on "
                              "(the token budget, data, model, evaluation cadence, run settings, or what the arm is)")
    return Sweep(list(swept), list(sweep_seeds), {str(k): list(v) for k, v in grid.items()})


def check_keys(sweep: Sweep, flat_config: dict) -> None:
    """Each grid key names a setting of the config (`flat_config`: a config, flattened)."""
    for key in sweep.grid:
        if key not in flat_config:
            raise ConfigError(f"sweep.grid.{key}: no such config setting")


# -- the choice --------------------------------------------------------------------------------------

def final_val_loss(run: RunDir) -> float | None:
    """The last validation loss of a finished run (None when it has not finished or has none)."""
    if not run.is_finished():
        return None
    rows = [r for r in run.read_metrics() if r.get("val_loss") is not None]
    return float(max(rows, key=lambda r: r["step"])["val_loss"]) if rows else None


def run_state(run: RunDir) -> str:
    """finished / diverged / interrupted / … / missing: a sweep run's state, for the table."""
    return str((run.read_status() or {}).get("state") or "missing")


def mean_loss(per_seed: dict[int, float | None], seeds: list[int]) -> float | None:
    """The mean final validation loss over `seeds`; None unless every seed has a finite one."""
    values = [per_seed.get(s) for s in seeds]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if len(finite) == len(seeds) else None


def choose(losses: list[dict[int, float | None]], seeds: list[int]) -> int | None:
    """The index of the best setting: lowest mean final validation loss over `seeds`, among settings
    with a finite loss on every sweep seed (ties: the first); None when no setting qualifies."""
    means = [mean_loss(per_seed, seeds) for per_seed in losses]
    ranked = [(m, i) for i, m in enumerate(means) if m is not None]
    return min(ranked)[1] if ranked else None


def sweep_table(sweep: Sweep, root: Path) -> dict:
    """Every swept arm's settings with their final validation loss per sweep seed, the run states, the
    mean, and the chosen one (None until every setting of the arm has finished or diverged)."""
    out: dict = {}
    for arm in sweep.arms:
        rows: list[dict[str, Any]] = []
        losses: list[dict[int, float | None]] = []
        for setting in sweep.settings():
            runs = {s: RunDir(sweep_run_dir(root, arm, setting, s)) for s in sweep.seeds}
            losses.append({s: final_val_loss(r) for s, r in runs.items()})
            rows.append({"setting": setting, "name": setting_name(setting),
                         "final_val_loss": {str(s): v for s, v in losses[-1].items()},
                         "state": {str(s): run_state(r) for s, r in runs.items()},
                         "mean": mean_loss(losses[-1], sweep.seeds)})
        settled = all(state in ("finished", "diverged") for row in rows for state in row["state"].values())
        index = choose(losses, sweep.seeds) if settled else None
        chosen = None if index is None else rows[index]["setting"]
        out[arm] = {"settings": rows, "chosen": chosen, "chosen_name": None if index is None else rows[index]["name"],
                    "at_edge": [] if chosen is None else at_edge(sweep.grid, chosen)}
    return out


def at_edge(grid: dict[str, list], chosen: dict[str, Any]) -> list[str]:
    """The numeric grid keys whose chosen value is the largest or smallest of several tried: there the
    best setting may lie beyond the grid (e.g. "train.lr=0.003 (the largest tried)")."""
    out = []
    for key, values in grid.items():
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) != len(values):
            continue
        value = chosen[key]
        if value in (max(numbers), min(numbers)):
            out.append(f"{key}={json.dumps(value)} (the {'largest' if value == max(numbers) else 'smallest'} tried)")
    return out


def sweep_run_dir(root: Path, arm: str, setting: dict[str, Any], seed: int) -> Path:
    return root / SWEEP_DIR / arm / setting_name(setting) / f"seed-{seed}"
