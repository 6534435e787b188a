"""`metalm bench` runs both steps over the same tokens and reports their ratio."""

from __future__ import annotations

import json

from helpers import tiny_overrides
from metalm.cli import main


def test_bench_json(tmp_path, corpus_dir, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    out = tmp_path / "bench.json"
    overrides = tiny_overrides(corpus_dir, tmp_path / "unused", **{
        "meta.band_min_count": 5, "meta.band_skip_top": 10, "meta.window_len": 16, "meta.inner_steps": 3})
    assert main(["bench", str(cfg), *overrides, "--json", "--warmup", "1", "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(out.read_text())
    assert result["tokens_per_step"] == 5 * (4 + 4) * 16  # n_way × (k_shot + q_query) rows of window_len
    assert len(result["ar"]["all"]) == len(result["meta_step"]["all"]) == 2
    ratio = result["meta_over_ar_ratio"]
    assert ratio == result["meta_step"]["seconds_per_step"] / result["ar"]["seconds_per_step"] and ratio > 0
    assert not (tmp_path / "unused").exists()  # benchmarking writes no run directory


def test_bench_runs_both_steps_under_the_same_autocast(tmp_path, corpus_dir, monkeypatch):
    """bf16 autocast (run.precision) around the meta step as around the AR step: the meta/AR ratio
    compares like with like (the trainer autocasts both)."""
    import torch

    import metalm.bench as bench_mod
    from metalm.meta import MetaTask

    seen = {"ar": set(), "meta": set()}
    loss, meta_step = bench_mod.next_token_loss, MetaTask.meta_step

    def spy_loss(*args, **kwargs):
        seen["ar"].add(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return loss(*args, **kwargs)

    def spy_meta(*args, **kwargs):
        seen["meta"].add(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return meta_step(*args, **kwargs)

    monkeypatch.setattr(bench_mod, "next_token_loss", spy_loss)
    monkeypatch.setattr(MetaTask, "meta_step", spy_meta)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    overrides = tiny_overrides(corpus_dir, tmp_path / "unused", **{
        "meta.band_min_count": 5, "meta.band_skip_top": 10, "meta.window_len": 16, "meta.inner_steps": 2,
        "run.precision": "bf16"})
    assert main(["bench", str(cfg), *overrides, "--json", "--warmup", "0", "--repeats", "1"]) == 0
    assert seen == {"ar": {torch.bfloat16}, "meta": {torch.bfloat16}}
