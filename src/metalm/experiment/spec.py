"""The experiment file: shared run settings once, the arms that differ, seeds, evaluations.

    run: {name: quickstart, dir: runs/quickstart}
    model: {preset: micro}
    data: {train: demo}
    train: {steps: 200}
    arms:
      vanilla: {}
      meta: {meta: {enabled: true, smlmt_variant: token}}
    seeds: [0, 1]
    baseline: vanilla          # the arm whose final validation loss is the default target
    target_loss: null          # or a number
    matched_baselines: false   # true: per arm and seed, a baseline run that ends at the arm's FLOPs
    sweep:                     # optional: tune arms first (experiment.sweep)
      arms: [vanilla, meta]
      grid: {train.lr: [1.0e-3, 3.0e-4]}
    evaluations:
      perplexity: true         # the run's validation set (or a list of paths, or its settings)
      fewshot: {episodes: 50}
      ner: {data: demo, train_lang: en, test_langs: [en, xx], epochs: 2}

Evaluation settings are typed (`metalm.evaluation.settings`: the same settings, with the same
defaults, as the flags of `metalm eval perplexity|fewshot|ner`) and validated when the file is
loaded, so a misspelt key fails before anything trains.

Each arm × seed is an ordinary run directory `RUN_DIR/<arm>/seed-<seed>/`, configured as the shared
settings overridden by the arm, with `run.seed` = the seed: arms with the same seed see the same
batches, validation batches and probe batch. A matched baseline (`experiment.matched`) is the run
directory `RUN_DIR/<baseline>@<arm>/seed-<seed>/`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..config import Config, from_dict, load_tree
from ..config_diff import flatten
from ..errors import ConfigError
from ..evaluation.settings import EvaluationSettings, experiment_settings
from ..run_dir import EXPERIMENT_FILES, RunDir
from .sweep import SWEEP_DIR, Sweep, check_keys, nested, parse_sweep, setting_name, sweep_run_dir

S = TypeVar("S", bound=EvaluationSettings)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass
class Experiment:
    root: Path
    shared: dict
    arms: dict[str, dict]
    seeds: list[int]
    baseline: str
    target_loss: float | None
    evaluations: dict[str, Any] = field(default_factory=dict)  # as written in the file
    settings: dict[str, EvaluationSettings] = field(default_factory=dict)  # validated, of those to run
    matched_baselines: bool = False
    sweep: Sweep | None = None
    sweep_source: dict[str, str] = field(default_factory=dict)  # arm -> the swept arm whose choice it takes
    chosen: dict[str, dict] = field(default_factory=dict)  # swept arm -> its chosen setting, once known

    def run_dir(self, arm: str, seed: int) -> Path:
        return self.root / arm / f"seed-{seed}"

    def evaluation(self, kind: type[S]) -> S | None:
        """The validated settings of evaluation `kind` (e.g. `NerSettings`) when the experiment runs it."""
        value = self.settings.get(kind.evaluation)
        return value if isinstance(value, kind) else None

    def run(self, arm: str, seed: int) -> RunDir:
        """The run directory of `arm` × `seed`, to read."""
        return RunDir(self.run_dir(arm, seed))

    def runs(self) -> dict[str, dict[int, RunDir]]:
        """Every arm's run directory per seed (arm → seed → run), whether or not it exists yet."""
        return {a: {s: self.run(a, s) for s in self.seeds} for a in self.arms}

    def tree(self, arm: str) -> dict:
        """The settings of `arm`: the shared settings overridden by the arm's, then by the chosen
        setting of the sweep it takes its settings from (its own, or its meta arm's for a control)."""
        tree = _merge(self.shared, self.arms[arm])
        source = self.sweep_source.get(arm)
        if source is not None and source in self.chosen:
            tree = _merge(tree, nested(self.chosen[source]))
        return tree

    def config(self, arm: str, seed: int, tree: dict | None = None, name: str | None = None,
               run_dir: Path | None = None) -> Config:
        """The config of `arm` × `seed` (or of `tree`, run as `name` in `run_dir`: a matched baseline or
        a sweep run)."""
        name = name or arm
        tree = copy.deepcopy(tree) if tree is not None else self.tree(arm)
        tree.setdefault("run", {})
        where = run_dir if run_dir is not None else self.run_dir(name, seed)
        tree["run"] = {**tree["run"], "seed": seed, "dir": str(where), "name": f"{name}-seed{seed}"}
        try:
            return from_dict(tree)
        except ConfigError as exc:
            raise ConfigError(f"arm {name!r}: {exc}") from None

    def sweep_config(self, arm: str, setting: dict, seed: int) -> Config:
        """The config of one sweep run: `arm` at `setting`, without dynamics probes (only its final
        validation loss is read), in `<experiment>/sweep/<arm>/<setting>/seed-<seed>/`."""
        tree = _merge(_merge(self.shared, self.arms[arm]), nested(setting))
        tree["dynamics"] = {**(tree.get("dynamics") or {}), "every": 0}
        try:
            return self.config(arm, seed, tree=tree, name=f"{arm}[{setting_name(setting)}]",
                               run_dir=sweep_run_dir(self.root, arm, setting, seed))
        except ConfigError as exc:
            raise ConfigError(f"sweep.grid: {setting_name(setting)}: {exc}") from None


_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_arm_name(name: str) -> None:
    """An arm's name is its directory's name: one safe path component (no `..`, `/`, hidden or empty
    name) that is not one of the experiment's own files — refused before anything runs. `@` is never
    allowed: it names matched baselines' directories (`<baseline>@<arm>`)."""
    if not _ARM_NAME.fullmatch(name) or name.lower() in (*EXPERIMENT_FILES, SWEEP_DIR):
        why = f"it names the experiment's own {name}" if name.lower() in (*EXPERIMENT_FILES, SWEEP_DIR) else \
            "use letters, digits, '_', '-', '.', '+', starting with a letter or digit"
        raise ConfigError(f"arms: {name!r} cannot name an arm's directory ({why})")


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    path = Path(path)
    tree = load_tree(path, overrides, what="an experiment")
    arms = tree.pop("arms", None)
    if not isinstance(arms, dict) or not arms:
        raise ConfigError(f"{path}: 'arms' must map at least one arm name to its overrides")
    for name, over in arms.items():
        if over is not None and not isinstance(over, dict):
            raise ConfigError(f"arms.{name}: must be a mapping of config sections")
    arms = {str(k): (v or {}) for k, v in arms.items()}
    for name in arms:
        check_arm_name(name)
    seeds = tree.pop("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError("seeds: a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError("seeds: listed more than once")
    baseline = tree.pop("baseline", "vanilla")
    if baseline not in arms:
        raise ConfigError(f"baseline: no arm named {baseline!r} (arms: {', '.join(arms)})")
    target = tree.pop("target_loss", None)
    if target is not None and not isinstance(target, (int, float)):
        raise ConfigError("target_loss: a number (or null for the baseline's final validation loss)")
    matched = tree.pop("matched_baselines", False)
    if not isinstance(matched, bool):
        raise ConfigError("matched_baselines: true or false")
    evaluations = tree.pop("evaluations", None) or {}
    sweep = tree.pop("sweep", None)
    settings = experiment_settings(evaluations)
    root = Path((tree.get("run") or {}).get("dir", "runs/experiment"))
    exp = Experiment(root, tree, arms, seeds, baseline, None if target is None else float(target), evaluations, settings,
                     matched)
    for arm in arms:  # validate every arm's config now, before anything runs
        exp.config(arm, seeds[0])
    if sweep is not None:
        _load_sweep(exp, sweep)
    return exp


def _load_sweep(exp: Experiment, section: Any) -> None:
    """Parse and check the `sweep:` section against the arms (every setting validated now), and find
    which swept arm each control arm takes its setting from (the one it differs from only in
    `meta.control`)."""
    from .compare import control_kind, match_arm

    sweep = parse_sweep(section, list(exp.arms), exp.seeds)
    configs = {arm: exp.config(arm, exp.seeds[0]).model_dump(mode="json") for arm in exp.arms}
    for arm in sweep.arms:
        if control_kind(configs[arm]) != "none":
            raise ConfigError(f"sweep.arms: {arm!r} is a control arm; it takes the chosen setting of its meta arm "
                              "(list that arm instead)")
        check_keys(sweep, flatten(configs[arm]))
        if not configs[arm]["meta"]["enabled"]:
            meta_keys = [k for k in sweep.grid if k.startswith("meta.")]
            if meta_keys:
                raise ConfigError(f"sweep.grid.{meta_keys[0]}: arm {arm!r} has meta-learning disabled, so it "
                                  "would change nothing")
        for setting in sweep.settings():
            exp.sweep_config(arm, setting, sweep.seeds[0])
    exp.sweep = sweep
    exp.sweep_source = {arm: arm for arm in sweep.arms}
    for arm, config in configs.items():
        if control_kind(config) != "none":
            source, _ = match_arm(arm, configs, sweep.arms)
            if source is not None:
                exp.sweep_source[arm] = source
