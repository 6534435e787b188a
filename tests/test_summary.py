"""The experiment summary as a typed object (`experiment/summary.py`): one JSON form (what the report
writes reads back to the same tree), unknown or malformed content refused, evaluation results held as
their own types, and `read_summary` for readers such as the live view."""

from __future__ import annotations

import json

import pytest
from helpers import make_run

from metalm.eval_results import PerplexityResult, PerplexitySet
from metalm.experiment.report import write_report
from metalm.experiment.summary import ExperimentSummary, read_summary

META = {"enabled": True, "n_way": 4}


@pytest.fixture
def report(tmp_path):
    """A report of three arms × two seeds: a baseline, a meta arm with meta-task rows and its
    momentum control (an attribution), one perplexity result; (experiment directory, summary tree)."""
    rows = [{"step": s, "query_acc": 0.5, "support_loss_before": 2.0, "support_loss_after": 1.5} for s in (15, 18)]
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [6.0, 5.0, 4.0 + 0.1 * s]) for s in (0, 1)},
            "meta": {s: make_run(tmp_path, "meta", s, [6.0, 4.8, 3.9 - 0.1 * s], 150.0, meta=META, rows=rows)
                     for s in (0, 1)},
            "meta-momentum": {s: make_run(tmp_path, "meta-momentum", s, [6.0, 4.9, 4.0], 75.0,
                                          meta={**META, "control": "momentum"}) for s in (0, 1)}}
    result = PerplexityResult("checkpoints/step-20", 16, [PerplexitySet("val.txt", 3, 48, 4.0, 54.6)])
    runs["meta"][0].write_eval(PerplexityResult.NAME, result.to_json())
    write_report(tmp_path, runs, "vanilla", None, unfinished=["meta-skip seed 0: not started"])
    return tmp_path, json.loads((tmp_path / "summary.json").read_text())


def test_the_written_summary_reads_back_to_the_same_tree(report):
    root, tree = report
    summary = ExperimentSummary.from_json(tree)
    assert summary.to_json() == tree
    assert json.dumps(summary.to_json()) == json.dumps(tree)  # the same key order too, at every depth
    assert summary.baseline == "vanilla" and list(summary.arms) == ["vanilla", "meta", "meta-momentum"]
    assert summary.unfinished == ["meta-skip seed 0: not started"] and summary.verdict == tree["verdict"]
    meta = summary.arms["meta"]
    assert meta.final_val_loss.per_seed == {0: 3.9, 1: 3.8}  # seeds are ints here, strings in the JSON
    assert meta.paired_difference_at_equal_flops is not None and meta.speedup is not None
    assert summary.arms["vanilla"].speedup is None and "speedup" not in tree["arms"]["vanilla"]
    (att,) = summary.attributions
    assert (att.effect, att.arm, att.control) == ("meta-arm", "meta", "meta-momentum") and att.n == 2
    assert summary.meta_task["meta"].chance == 0.25 and summary.meta_task["meta"].query_acc.per_seed == {0: 0.5, 1: 0.5}


def test_evaluation_results_are_held_as_their_own_types(report):
    root, tree = report
    summary = read_summary(root)
    assert summary is not None
    stored = summary.arms["meta"].evaluations.perplexity[0]
    assert isinstance(stored, PerplexityResult) and stored.sets[0].perplexity == 54.6
    on_disk = json.loads((root / "meta" / "seed-0" / "eval" / "perplexity.json").read_text())
    assert tree["arms"]["meta"]["evaluations"]["perplexity"]["0"] == on_disk  # the result file's own form


def test_an_unknown_key_or_a_malformed_value_is_refused_naming_where(report):
    _, tree = report
    extra = json.loads(json.dumps(tree))
    extra["arms"]["meta"]["surprise"] = 1
    with pytest.raises(ValueError, match=r"summary: arms\.meta\.surprise: Extra inputs are not permitted"):
        ExperimentSummary.from_json(extra)
    bad = json.loads(json.dumps(tree))
    bad["arms"]["meta"]["final_val_loss"]["mean"] = "low"
    with pytest.raises(ValueError, match=r"arms\.meta\.final_val_loss\.mean"):
        ExperimentSummary.from_json(bad)
    broken = json.loads(json.dumps(tree))
    broken["arms"]["meta"]["evaluations"]["perplexity"]["0"]["sets"] = "none"
    with pytest.raises(ValueError, match="perplexity"):
        ExperimentSummary.from_json(broken)
    with pytest.raises(ValueError, match="baseline"):
        ExperimentSummary.from_json({})


def test_read_summary_answers_none_for_a_missing_partial_or_foreign_file(report, tmp_path):
    root, tree = report
    assert read_summary(root) == read_summary(root / "summary.json") == ExperimentSummary.from_json(tree)
    assert read_summary(tmp_path / "nowhere") is None
    (tmp_path / "half.json").write_text('{"baseline": "vanilla", "arms"')
    assert read_summary(tmp_path / "half.json") is None
    (tmp_path / "foreign.json").write_text('{"hello": 1}')
    assert read_summary(tmp_path / "foreign.json") is None
