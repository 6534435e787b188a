"""The optional TensorBoard logger gets the metrics and the learning dynamics (scalars + heatmaps)."""

from __future__ import annotations

import pytest

from helpers import tiny_overrides
from metalm.cli import main


def test_tensorboard_receives_metrics_and_dynamics(tmp_path, corpus_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    run = tmp_path / "run"
    overrides = tiny_overrides(corpus_dir, run, **{"run.tensorboard": "true", "dynamics.every": 4,
                                                   "dynamics.groups": "[activations, attention]"})
    assert main(["train", str(cfg), *overrides]) == 0
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss", "val_loss", "flops"} <= scalars
    assert "dynamics/activations_erank/layer0/output" in scalars
    assert "dynamics/attention_entropy/layer1/head3" in scalars
    images = events.Tags()["images"]
    assert "dynamics/activations_erank_heatmap" in images and "dynamics/attention_entropy_heatmap" in images
    assert [e.step for e in events.Images("dynamics/activations_erank_heatmap")] == [0, 4, 8]
