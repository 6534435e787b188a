"""Comparisons that cannot mislead (DESIGN 2.6), each number against a computation by hand: the
unigram cross-entropy and regime, equal-FLOPs reads mid-schedule (LR fraction), matched baselines
(step count from FLOPs), the meta-task gate, the curve-level comparison and the speed-up table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import curve, make_run

from metalm.experiment import regime as regime_mod
from metalm.experiment.compare import curve_differences, paired_difference, schedule_point
from metalm.experiment.matched import flops_per_step, matched_name, matched_steps, matched_train
from metalm.experiment.metatask import meta_task
from metalm.experiment.regime import regime, unigram_ce
from metalm.experiment.report import write_report

T_975_1 = 12.706204736174707  # Student t quantile, 0.975, one degree of freedom (two seeds)
LINEAR = {"steps": 20, "lr": 1.0, "warmup_steps": 0, "schedule": "linear", "min_lr_ratio": 0.0}


def test_unigram_ce_by_hand(monkeypatch):
    train = np.array([0, 0, 1, 2], dtype=np.uint16)
    val = np.array([0, 1, 3], dtype=np.uint16)
    # V = 5, n = 4: p(t) = (count + 1) / 9 → p(0) = 3/9, p(1) = 2/9, p(3) = 1/9 (never seen in training)
    by_hand = -(math.log(3 / 9) + math.log(2 / 9) + math.log(1 / 9)) / 3
    assert unigram_ce(train, val, 5) == pytest.approx(by_hand)
    monkeypatch.setattr(regime_mod, "CHUNK", 3)  # counted in chunks of 3: the same
    assert unigram_ce(train, val, 5) == pytest.approx(by_hand)
    # an id beyond the stated vocabulary widens it: V = 6 (ids 0..5), n = 4
    wide = -(math.log(3 / 10) + math.log(1 / 10)) / 2
    assert unigram_ce(train, np.array([0, 5], dtype=np.uint16), 5) == pytest.approx(wide)


def test_regime_labels_each_run_and_the_arm():
    r = regime({0: 6.0, 1: 6.4}, 6.6)  # 0.6 below: learning; 0.2 below: unigram stage
    assert r["per_seed"][0]["label"] == "learning" and r["per_seed"][1]["label"] == "unigram stage"
    assert r["per_seed"][1]["below_unigram"] == pytest.approx(0.2)
    assert r["label"] == "unigram stage"  # any run at the unigram stage makes the arm's label
    assert regime({0: 6.0}, 6.5)["label"] == "learning"  # exactly 0.5 below: learning
    assert regime({0: 6.0}, None)["label"] is None


def test_equal_flops_pairing_says_where_a_run_is_read_mid_schedule():
    base, arm = curve([5.0, 4.0, 3.0]), curve([5.0, 4.0, 3.2], 75.0)  # 200 vs 150 FLOPs at step 20
    pd = paired_difference({0: base}, {0: arm}, train=(LINEAR, LINEAR))
    d = pd["per_seed"][0]
    # the baseline is read at 150 FLOPs = step 15 of 20: linear decay from step 0, lr_at(15) = 1 − 15/19
    assert d["baseline_at"]["step"] == pytest.approx(15.0) and d["baseline_at"]["mid_schedule"]
    assert d["baseline_at"]["lr_fraction"] == pytest.approx(1 - 15 / 19)
    assert not d["arm_at"]["mid_schedule"] and d["mid_schedule"] == ["baseline"]
    # within one step of the end is the end; without train settings there is no LR fraction
    p = schedule_point(base, "flops", 190.0, None)
    assert p["step"] == pytest.approx(19.0) and not p["mid_schedule"] and p["lr_fraction"] is None
    # warm-up: 4 steps to peak, then linear decay over steps 4..19 to 0.1 of peak
    warm = {**LINEAR, "warmup_steps": 4, "min_lr_ratio": 0.1}
    assert schedule_point(base, "flops", 20.0, warm)["lr_fraction"] == pytest.approx((2 + 1) / 4)  # step 2, warming up
    assert schedule_point(base, "flops", 100.0, warm)["lr_fraction"] == pytest.approx(0.1 + 0.9 * (1 - 6 / 15))


def test_matched_baseline_step_count_from_flops():
    rows = [{"step": s, "flops": 1000 * s} for s in range(0, 13)]  # 1000 FLOPs per baseline step
    assert flops_per_step(rows) == 1000.0
    assert matched_steps(5347.0, 1000.0) == 5 and matched_steps(5600.0, 1000.0) == 6  # nearest: within a step
    assert matched_steps(10.0, 1000.0) == 1  # at least one step
    train = {"steps": 200, "warmup_steps": 20, "lr": 3e-4, "schedule": "linear"}
    assert matched_train(train, 123) == {**train, "steps": 123, "warmup_steps": 12}  # 10% of 123 = 12.3
    assert matched_name("vanilla", 123) == "vanilla@123-steps"


def test_meta_task_gate_from_rows():
    def rows(accs, start=16, before=1.4, after=1.3, **episode):
        return ([{"step": 2, "query_acc": 0.99}] +  # early: outside the last quarter, ignored
                [{"step": start + i, "query_acc": a, "support_loss_before": before, "support_loss_after": after,
                  **episode} for i, a in enumerate(accs)])

    by_seed = {0: rows([0.5, 0.6]), 1: rows([0.55, 0.65])}
    task = meta_task(by_seed, 4, total_steps=20)
    means = [0.55, 0.6]
    half = T_975_1 * np.std(means, ddof=1) / math.sqrt(2)
    assert task["chance"] == 0.25 and task["over"] == "seeds" and task["rows"] == 4
    assert task["query_acc"]["mean"] == pytest.approx(0.575)
    assert task["query_acc"]["ci"] == pytest.approx([0.575 - half, 0.575 + half])
    assert task["learned"] == (0.575 - half > 0.25)
    assert task["inner_loop_gain"]["mean"] == pytest.approx(0.1)
    # one seed: the interval is over its rows; at chance: not learned
    one = meta_task({0: rows([0.2, 0.3, 0.25, 0.3], start=16)}, 4, total_steps=20)
    accs = [0.2, 0.3, 0.25, 0.3]
    m, sd = np.mean(accs), np.std(accs, ddof=1)
    t3 = 3.182446305284263  # t(0.975, 3)
    assert one["over"] == "rows" and one["query_acc"]["ci"] == pytest.approx([m - t3 * sd / 2, m + t3 * sd / 2])
    assert one["learned"] is False
    clear = meta_task({0: rows([0.9, 0.91, 0.92, 0.9])}, 4, total_steps=20)
    assert clear["learned"] is True
    # the realised episode: means over every meta row that records it
    ep = {"episode_classes": 32, "episode_support_min": 0, "episode_support_median": 1, "episode_query_items": 8}
    realised = meta_task({0: rows([0.3], **ep) + rows([0.3], start=19, **{**ep, "episode_query_items": 6})}, 32,
                         total_steps=20)["realised_episode"]
    assert realised == {"classes": 32, "support_min": 0, "support_median": 1, "query_items": 7, "rows": 2}


def test_curve_differences_at_quarters_of_the_budget():
    base = {0: curve([8.0, 6.0, 4.0, 2.0]), 1: curve([8.0, 7.0, 6.0, 5.0])}  # steps 0..30
    arm = {0: curve([8.0, 5.0, 3.0, 2.0]), 1: curve([8.0, 6.0, 5.0])}  # seed 1 stops at step 20
    cd = curve_differences(base, arm, "step")
    by_fraction = {p["fraction"]: p for p in cd["points"]}
    assert list(by_fraction) == [0.25, 0.5, 0.75, 1.0]
    # seed 0 (budget 30): at 7.5, 15, 22.5, 30 steps; seed 1 (budget 20): at 5, 10, 15, 20 steps
    seed0 = [(8 - 3 * 0.75) - (8 - 2 * 0.75), (5 - 2 * 0.5) - (6 - 2 * 0.5), (3 - 0.25) - (4 - 2 * 0.25), 0.0]
    seed1 = [(8 - 2 * 0.5) - (8 - 0.5), 6.0 - 7.0, 5.5 - 6.5, 5.0 - 6.0]
    for i, f in enumerate((0.25, 0.5, 0.75, 1.0)):
        p = by_fraction[f]
        assert [p["per_seed"][s]["difference"] for s in (0, 1)] == pytest.approx([seed0[i], seed1[i]])
        assert p["mean"] == pytest.approx((seed0[i] + seed1[i]) / 2)
        half = T_975_1 * abs(seed0[i] - seed1[i]) / 2  # sd of two values = |a − b| / √2
        assert p["ci"] == pytest.approx([p["mean"] - half, p["mean"] + half])
    assert by_fraction[0.5]["per_seed"][1]["budget"] == 10.0


def test_matched_baselines_in_the_summary_and_the_equal_flops_pairing(tmp_path):
    # baseline: 20 steps at 10 FLOPs/step (200); the arm: 300 FLOPs in 20 steps; its matched baseline: 30 steps
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [6.0, 5.0, 4.0], train=LINEAR) for s in (0, 1)},
            "arm": {s: make_run(tmp_path, "arm", s, [6.0, 5.2, f], 150.0, train=LINEAR) for s, f in ((0, 3.9), (1, 3.7))}}
    matched = {"arm": {s: make_run(tmp_path, "vanilla@arm", s, [6.0, 5.0, 4.2, f], train={**LINEAR, "steps": 30})
                       for s, f in ((0, 3.6), (1, 3.5))}}
    write_report(tmp_path / "report", runs, "vanilla", None, matched)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    m = summary["matched_baselines"]["arm"]["0"]
    assert m["run"] == str(matched["arm"][0].path) and m["steps"] == 30
    assert m["final_flops"] == 300.0 and m["arm_final_flops"] == 300.0
    assert m["final_val_loss"] == 3.6 and m["arm_final_val_loss"] == 3.9
    pd = summary["arms"]["arm"]["paired_difference_at_equal_flops"]
    assert pd["against"] == "matched baseline"
    diffs = [3.9 - 3.6, 3.7 - 3.5]
    assert [pd["per_seed"][s]["difference"] for s in "01"] == pytest.approx(diffs)
    assert all(not pd["per_seed"][s]["mid_schedule"] for s in "01")
    half = T_975_1 * abs(diffs[0] - diffs[1]) / 2
    assert pd["ci"] == pytest.approx([0.25 - half, 0.25 + half])
    flops = summary["arms"]["arm"]["curve_differences"]["flops"]
    assert flops["against"] == "matched baseline" and flops["points"][-1]["mean"] == pytest.approx(0.25)
    assert summary["arms"]["arm"]["curve_differences"]["step"]["against"] == "vanilla"
    md = (tmp_path / "report" / "summary.json").parent.joinpath("report.md").read_text()
    assert "| arm | 0 | vanilla@arm | 30 | 3.000e+02 | 3.000e+02 | 3.6000 | 3.9000 |" in md
    assert "end of both" in md
    verdict = "\n".join(summary["verdict"])
    assert "that of vanilla's matched baseline runs" in verdict and "mid-schedule" not in verdict


def test_without_matched_runs_the_equal_flops_verdict_and_tables_say_mid_schedule(tmp_path):
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [5.0, 4.0, 3.0], train=LINEAR)},
            "arm": {0: make_run(tmp_path, "arm", 0, [5.0, 4.0, 3.2], 75.0, train=LINEAR)}}
    write_report(tmp_path, runs, "vanilla", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    lr = 1 - 15 / 19
    assert summary["arms"]["arm"]["paired_difference_at_equal_flops"]["against"] == "vanilla"
    line = next(v for v in summary["verdict"] if v.startswith("At equal FLOPs"))
    assert f"reads a run mid-schedule, before its learning rate decayed (seed 0: vanilla at step 15.0, LR {lr:.2f} of peak)" in line
    at = summary["arms"]["vanilla"]["val_loss_at_equal"]["flops"]
    assert at["budget"] == 150.0 and at["mid_schedule"]["0"]["lr_fraction"] == pytest.approx(lr)
    md = (tmp_path / "report.md").read_text()
    assert f"baseline mid-schedule: step 15.0, LR {lr:.2f}" in md
    assert f"3.5000 (mid-schedule in 1 seed, LR {lr:.2f} of peak)" in md


def test_speedup_table_collapses_an_arm_that_missed_in_every_seed(tmp_path):
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [6.0, 5.0, 4.0]) for s in (0, 1)},
            "meta": {s: make_run(tmp_path, "meta", s, [6.0, 5.5, 4.5], meta={"enabled": True}) for s in (0, 1)}}
    write_report(tmp_path, runs, "vanilla", None)
    md = (tmp_path / "report.md").read_text()
    table = md[md.index("Speed-up over vanilla"):].split("\n\n")[1].splitlines()
    speedup_rows = [line for line in table if line.startswith("| meta |")]
    assert speedup_rows == ["| meta | every measure | – | – | – | no seed: 0: the arm's run did not reach the target; "
                            "1: the arm's run did not reach the target |"]


def test_regime_in_the_verdict_only_not_yet_learning(tmp_path, monkeypatch):
    monkeypatch.setattr("metalm.experiment.report.run_unigram_ce", lambda d, memo=None: 6.8)
    meta = {"enabled": True, "n_way": 4}
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [7.0, 6.7, 6.6]) for s in range(3)},
            "meta": {s: make_run(tmp_path, "meta", s, [7.0, 6.9, 7.1], meta=meta) for s in range(3)},
            "mom": {s: make_run(tmp_path, "mom", s, [7.0, 6.8, 6.7 + 0.01 * s], meta={**meta, "control": "momentum"})
                    for s in range(3)}}
    write_report(tmp_path, runs, "vanilla", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unigram_ce"] == 6.8
    assert {a: e["regime"]["label"] for a, e in summary["arms"].items()} == {
        "vanilla": "unigram stage", "meta": "unigram stage", "mom": "unigram stage"}
    assert summary["verdict"][0].startswith("Regime: the validation set's unigram cross-entropy is 6.8000")
    head = [v for v in summary["verdict"] if v.startswith(("meta against vanilla", "Meta-arm effect"))]
    assert len(head) == 2 and all("not yet learning" in v for v in head)
    assert not any(w in v for v in head for w in ("higher than", "lower than", "raises", "lowers"))
    md = (tmp_path / "report.md").read_text()
    assert "| vanilla | baseline | 3 |" in md and "unigram stage" in md and "unigram cross-entropy 6.8000" in md


def test_report_states_the_realised_episode(tmp_path):
    meta = {"enabled": True, "layout": "dense", "n_way": 32, "k_shot": 4, "q_query": 1}
    ep = {"episode_classes": 32, "episode_support_min": 0, "episode_support_median": 1}
    rows = [{"step": 16, "query_acc": 0.03, **ep, "episode_query_items": 8},
            {"step": 18, "query_acc": 0.04, **ep, "episode_query_items": 6}]
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [6.0, 5.0, 4.0])},
            "paper": {0: make_run(tmp_path, "paper", 0, [6.0, 5.5, 4.5], meta=meta, rows=rows)}}
    write_report(tmp_path, runs, "vanilla", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    task = summary["meta_task"]["paper"]
    assert task["realised_episode"] == {"classes": 32, "support_min": 0, "support_median": 1, "query_items": 7, "rows": 2}
    assert task["chance"] == pytest.approx(1 / 32) and task["over"] == "rows"
    text = ("Realised episodes (mean over 2 meta rows): 32.0-way, 1.0-shot (support items per class: median 1.0, "
            "min 0.0), 7.0 query items; configured 32-way, up to 4 support and 1 query positions per row.")
    assert any(text in v for v in summary["verdict"]) and text in (tmp_path / "report.md").read_text()


def test_lm_task_arm_has_no_chance_level_and_is_never_learned_by_accuracy():
    """LM tasks have no N-way classes: their query accuracy is next-token accuracy, so the read-out
    gives no 1/N chance and never credits meta-learning on accuracy (the shipped quickstart-lm)."""
    from metalm.experiment.summary import MetaTaskSummary
    from metalm.experiment.verdict import _meta_task_line

    rows = {s: [{"step": k, "query_acc": 0.45 + 0.01 * s, "support_loss_before": 6.0, "support_loss_after": 3.0}
                for k in range(8, 17)] for s in (0, 1, 2)}
    task = meta_task(rows, 5, 16, settings={"task": "lm", "n_way": 5, "k_shot": 4, "q_query": 4})
    assert task["chance"] is None and task["learned"] is False and task["configured"]["task"] == "lm"
    line = _meta_task_line("meta-lm", MetaTaskSummary.model_validate(task))
    assert "LM tasks" in line and "no N-way chance level" in line and "5-way" not in line
    assert "lowers the support loss by 3.0000" in line
