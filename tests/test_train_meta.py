"""Meta-learned runs through the trainer: row contents, exact resume, DDP equivalence."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from helpers import (assert_processes_match, assert_same_run, interrupt_and_resume, train_one_and_two_processes,
                      train_tiny)
from metalm.run_dir import read_jsonl

META = {"meta.enabled": "true", "meta.band_min_count": 5, "meta.band_skip_top": 10, "meta.window_len": 16, "meta.n_way": 3,
        "meta.k_shot": 2, "meta.q_query": 2, "meta.inner_steps": 3, "meta.inner_lr": 0.5}


def run(tmp_path, corpus, name, **extra):
    return train_tiny(corpus, tmp_path / name, **{**META, **extra})


@pytest.mark.parametrize("variant, head_init", [("sentence", "proto"), ("token", "learned")])
def test_meta_rows_and_exact_resume(tmp_path, corpus_dir, monkeypatch, variant, head_init):
    extra = {"meta.smlmt_variant": variant, "meta.head_init": head_init}
    assert run(tmp_path, corpus_dir, "full", **extra) == 0
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")[1:]
    kinds = [r["step_kind"] for r in rows]
    assert kinds.count("meta") == 4 and kinds.count("ar") == 4  # hybrid 0.5, interleaved
    for r in rows:
        if r["step_kind"] == "meta":
            assert "loss" not in r  # a meta row never carries a next-token loss
            assert {"meta_loss", "support_acc_before", "support_acc_after", "query_acc", "inner_grad_norm"} <= set(r)
            assert 0 <= r["query_acc"] <= 1
        else:
            assert "loss" in r and "meta_loss" not in r
    assert rows[-1]["meta_steps"] == 4

    interrupt_and_resume(monkeypatch, lambda: run(tmp_path, corpus_dir, "resumed", **extra), at_step=6)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")
    extra_a = load_file(tmp_path / "full" / "checkpoints" / "step-00000008" / "extra.safetensors") if head_init == "learned" else {}
    if extra_a:
        extra_b = load_file(tmp_path / "resumed" / "checkpoints" / "step-00000008" / "extra.safetensors")
        assert all(torch.equal(extra_a[k], extra_b[k]) for k in extra_a)


def test_weighted_hybrid_rows_are_mixed(tmp_path, corpus_dir):
    assert run(tmp_path, corpus_dir, "w", **{"meta.schedule": "weighted", "meta.weight": 0.3, "train.steps": 3}) == 0
    rows = read_jsonl(tmp_path / "w" / "metrics.jsonl")[1:]
    assert all(r["step_kind"] == "mixed" and "loss" in r and "meta_loss" in r for r in rows)


def test_meta_ddp_two_processes_match_one(tmp_path, corpus_dir):
    common = {**META, "meta.episodes_per_step": 2, "train.steps": 4, "train.eval_every": 2}
    one, two = train_one_and_two_processes(tmp_path, corpus_dir, **common)
    assert_processes_match(one, two, ("loss", "val_loss", "meta_loss", "query_acc", "support_acc_after"))


def test_hybrid_logging_shows_both_kinds(tmp_path, corpus_dir):
    """With log_every 4 and every 4th step a meta step, boundary rows alone would all be meta rows;
    the first step of each kind in an interval is logged too."""
    assert run(tmp_path, corpus_dir, "h", **{"meta.hybrid": 0.25, "train.log_every": 4}) == 0
    rows = read_jsonl(tmp_path / "h" / "metrics.jsonl")
    assert [(r["step"], r.get("step_kind")) for r in rows] == [(0, None), (1, "ar"), (4, "meta"), (5, "ar"), (8, "meta")]
