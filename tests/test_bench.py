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
