"""Few-shot episodic accuracy on held-out SMLMT episodes."""

from __future__ import annotations

import json

import pytest

from helpers import assert_result_round_trip, make_corpus, tiny_overrides
from metalm.cli import main
from metalm.eval_results import FewshotResult
from metalm.errors import MetalmError
from metalm.evaluation.fewshot import evaluate_fewshot

SMALL = dict(n_way=3, k_shot=2, q_query=2, window_len=16, band_min_count=4, band_skip_top=5, inner_steps=5,
             head_init="zero", pool="mask")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    corpus = root / "corpus"
    make_corpus(corpus, val_docs=8)
    cfg = root / "cfg.yaml"
    cfg.write_text("{}")
    assert main(["train", str(cfg), *tiny_overrides(corpus, root / "run", **{"train.steps": 2})]) == 0
    return root / "run"


def test_random_init_head_is_at_chance_before_adaptation(run_dir):
    res = evaluate_fewshot(run_dir, episodes=12, **SMALL)
    acc = res["accuracy"]
    assert res["chance"] == pytest.approx(1 / 3)
    # a zero head scores every class equally: exactly chance on balanced episodes
    assert acc["query_acc_before"]["mean"] == pytest.approx(1 / 3)
    assert acc["support_acc_before"]["mean"] == pytest.approx(1 / 3)
    # adapting the head fits the support set; an almost untrained backbone barely transfers to queries
    assert acc["support_acc_after"]["mean"] > 0.6
    assert abs(acc["query_acc_after"]["mean"] - 1 / 3) < 0.25
    # the same seed gives the same episodes and numbers; evaluation leaves no gradients behind
    assert evaluate_fewshot(run_dir, episodes=12, **SMALL)["accuracy"] == acc


def test_cli_saves_result_and_rejects_bad_input(run_dir, capsys):
    args = ["eval", "fewshot", str(run_dir), "--episodes", "3", "--n-way", "3", "--k-shot", "2", "--q-query", "2",
            "--window-len", "16", "--band-min-count", "4", "--band-skip-top", "5", "--json"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((run_dir / "eval" / "fewshot.json").read_text()) == printed
    result = assert_result_round_trip(FewshotResult, run_dir / "eval" / "fewshot.json")
    assert result.episodes == 3 and set(result.accuracy) == {"support_acc_before", "support_acc_after",
                                                             "query_acc_before", "query_acc_after"}
    assert main(["eval", "fewshot", str(run_dir), "--episodes", "0"]) == 2
    assert "--episodes: Input should be greater than or equal to 1" in capsys.readouterr().err
    with pytest.raises(MetalmError, match="n_way: 500 exceeds"):
        evaluate_fewshot(run_dir, episodes=1, **{**SMALL, "n_way": 500})
