"""The process group as the trainer sets it up: an explicit, configurable timeout (`run.dist_timeout_s`)."""

from __future__ import annotations

import datetime

import torch.distributed as dist

from conftest import tiny_overrides
from metalm.config import load_config
from metalm.distributed import shutdown
from metalm.trainer import Trainer


def test_dist_timeout_reaches_the_process_group(tmp_path, corpus_dir, monkeypatch):
    """torchrun's environment for rank 0 of 2; the group is created for real (gloo, one process, an
    in-memory store) with the timeout the trainer passed."""
    seen = {}
    init = dist.init_process_group

    def recording_init(backend, timeout=None, **kwargs):
        seen.update(backend=backend, timeout=timeout)
        init(backend, timeout=timeout, store=dist.HashStore(), rank=0, world_size=1)

    monkeypatch.setattr(dist, "init_process_group", recording_init)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(load_config(None, tiny_overrides(corpus_dir, tmp_path / "run", **{"run.dist_timeout_s": 5400})))
    try:
        assert trainer.dist.world_size == 2 and dist.is_initialized()
        assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=5400)}
    finally:
        shutdown(trainer.dist)
    assert load_config(None, []).run.dist_timeout_s == 7200  # long enough for rank 0 to tokenize ~20 GB
