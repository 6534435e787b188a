"""The dynamics probe batch is saved only by runs that record dynamics; post hoc analysis of a run
with `dynamics.every: 0` rebuilds the very same batch from the run's config and data."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from helpers import make_corpus, train_tiny
from metalm.dynamics.posthoc import load_probe_batch


def test_no_probe_batch_without_dynamics_and_post_hoc_rebuilds_the_same(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    assert train_tiny(corpus, tmp_path / "with", **{"train.steps": 4, "dynamics.every": 2}) == 0
    assert train_tiny(corpus, tmp_path / "without", **{"train.steps": 4, "dynamics.every": 0}) == 0
    saved = load_file(str(tmp_path / "with" / "probe_batch.safetensors"))["input_ids"]
    assert not (tmp_path / "without" / "probe_batch.safetensors").exists()
    assert torch.equal(load_probe_batch(tmp_path / "without"), saved.long())
