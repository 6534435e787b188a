"""Every config shipped in configs/ is valid: run configs load, experiment files validate every arm."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metalm.config import load_config
from metalm.experiment.spec import load_experiment
from metalm.model import PRESETS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _is_experiment(path: Path) -> bool:
    return "arms" in (yaml.safe_load(path.read_text(encoding="utf-8")) or {})


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    if _is_experiment(path):
        exp = load_experiment(path)
        configs = [exp.config(arm, seed) for arm in exp.arms for seed in exp.seeds]
        assert exp.baseline in exp.arms
    else:
        configs = [load_config(path)]
    for cfg in configs:
        assert cfg.model.preset in PRESETS


def test_shipped_experiments_exist():
    names = {p.stem for p in CONFIGS if _is_experiment(p)}
    assert {"quickstart", "experiment-eltec"} <= names


def test_paper_configs_use_the_paper_presets():
    for size in ("tiny", "small", "medium", "large"):
        cfg = load_config(Path(CONFIGS[0]).parent / f"{size}.yaml")
        assert cfg.model.preset == size and cfg.train.seq_len == 2048
