"""Every config shipped in configs/ is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalm.config import load_config
from metalm.model import PRESETS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.preset in PRESETS


def test_paper_configs_use_the_paper_presets():
    for size in ("tiny", "small", "medium", "large"):
        cfg = load_config(Path(CONFIGS[0]).parent / f"{size}.yaml")
        assert cfg.model.preset == size and cfg.train.seq_len == 2048
