"""The experiment report on synthetic run directories (no training): the default target, misses,
paired differences at equal FLOPs (mid-schedule reads, matched baselines), control-arm attributions at
equal steps, the regime, the meta-task gate, the curve-level comparison, formatting and the layout."""

from __future__ import annotations

import json
import math
import re

import pytest

from metalm.dynamics.phases import phase_readout
from metalm.experiment.compare import (
    cost_to_target,
    default_target,
    pair_controls,
    paired_difference,
    speedups,
)
from helpers import curve, make_run

from metalm.experiment.report import write_report

T_975_2 = 4.302652729749462  # Student t quantile, 0.975, two degrees of freedom (tables; scipy.stats.t.ppf)


# -- compare: unit tests on curves ------------------------------------------------------------------

def test_default_target_is_reached_by_every_baseline_seed():
    finals = {0: [5.0, 4.0, 3.1], 1: [5.0, 4.2, 3.6], 2: [5.0, 3.9, 3.3]}
    curves = {s: curve(v) for s, v in finals.items()}
    target = default_target([c["val_loss"][-1] for c in curves.values()])
    assert target == 3.6  # the highest final loss, not the mean (3.333…), which seeds 1 and 2 would miss
    assert all(cost_to_target(c, target) is not None for c in curves.values())
    assert cost_to_target(curves[1], target)["step"] == 20  # the highest seed reaches it at its last evaluation
    assert default_target([]) is None


def test_paired_difference_against_a_hand_computation():
    # baseline: losses 5 → 4 → 3 over 0, 100, 200 FLOPs; the arm stops at 150 FLOPs (75 per evaluation)
    base = {s: curve([5.0, 4.0, 3.0]) for s in (0, 1, 2)}
    arm = {0: curve([5.0, 4.0, 3.0], 75.0), 1: curve([5.0, 4.0, 3.2], 75.0), 2: curve([5.0, 4.0, 3.1], 75.0)}
    pd = paired_difference(base, arm)
    # at the common budget of 150 FLOPs the baseline is halfway between 4 and 3: 3.5
    assert {s: d["budget"] for s, d in pd["per_seed"].items()} == {0: 150.0, 1: 150.0, 2: 150.0}
    assert {s: d["baseline_loss"] for s, d in pd["per_seed"].items()} == pytest.approx({0: 3.5, 1: 3.5, 2: 3.5})
    diffs = [3.0 - 3.5, 3.2 - 3.5, 3.1 - 3.5]  # -0.5, -0.3, -0.4
    assert [d["difference"] for d in pd["per_seed"].values()] == pytest.approx(diffs)
    mean = sum(diffs) / 3  # -0.4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)  # 0.1
    half = T_975_2 * sd / math.sqrt(3)
    assert pd["n"] == 3 and pd["mean"] == pytest.approx(-0.4)
    assert pd["ci"] == pytest.approx([-0.4 - half, -0.4 + half])
    one = paired_difference({0: base[0]}, {0: arm[1], 5: arm[2]})
    assert one["n"] == 1 and one["ci"] is None and one["mean"] == pytest.approx(-0.3)
    assert one["dropped"] == {5: "run only in the arm"}


def test_speedups_say_which_seeds_were_dropped_and_why():
    base = {0: None, 1: {"step": 120, "tokens": 12, "flops": 60, "time": 9}, 2: None}
    arm = {0: {"step": 50, "tokens": 10, "flops": 25, "time": 4}, 1: {"step": 60, "tokens": 6, "flops": 30, "time": 3},
           2: None}
    sp = speedups(base, arm)["flops"]
    assert sp["per_seed"] == {1: 2.0} and sp["n"] == 1 and sp["ci"] is None
    assert sp["baseline_not_reached"] == [0, 2] and sp["not_reached"] == [2]
    assert sp["dropped"] == {0: "the baseline run did not reach the target", 2: "neither run reached the target"}


def test_pair_controls_by_settings():
    def cfg(control=None, hybrid=0.5, lr=0.001, **meta):
        m = {"enabled": True, "hybrid": hybrid, **meta}
        if control is not None:
            m["control"] = control
        return {"run": {"dir": "x", "seed": 0}, "train": {"lr": lr}, "meta": m}

    configs = {"vanilla": {"meta": {"enabled": False}}, "meta25": cfg(hybrid=0.25), "meta50": cfg(control="none"),
               "mom25": cfg("momentum", hybrid=0.25), "mom50": cfg("momentum"), "skip50": cfg("skip")}
    pairs = pair_controls(configs)
    assert pairs["meta_effect"] == [{"arm": "meta25", "control": "mom25"}, {"arm": "meta50", "control": "mom50"}]
    assert pairs["replay_effect"] == [{"arm": "mom50", "control": "skip50"}]
    assert pairs["unpaired"] == {} and pairs["meta_without_control"] == []
    # the momentum control differs in lr: no exact match, paired by its meta settings alone
    loose = pair_controls({"meta": cfg(), "mom": cfg("momentum", lr=0.002)})
    assert loose["meta_effect"] == [{"arm": "meta", "control": "mom"}]
    # two meta arms with the same meta settings: ambiguous, not paired
    amb = pair_controls({"a": cfg(lr=0.1), "b": cfg(lr=0.2), "mom": cfg("momentum", lr=0.3)})
    assert amb["meta_effect"] == [] and "several candidates" in amb["unpaired"]["mom"]
    assert amb["meta_without_control"] == ["a", "b"]


# -- the report on synthetic run directories --------------------------------------------------------

def test_baseline_seed_missing_a_given_target_is_listed(tmp_path):
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [5.0, 4.5, 4.2]),
                        1: make_run(tmp_path, "vanilla", 1, [5.0, 4.0, 3.8])},
            "meta": {0: make_run(tmp_path, "meta", 0, [5.0, 3.9, 3.7], meta={"enabled": True}),
                     1: make_run(tmp_path, "meta", 1, [5.0, 3.9, 3.7], meta={"enabled": True})}}
    write_report(tmp_path, runs, "vanilla", 4.0)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["vanilla"]["missed_target"] == [0] and summary["arms"]["meta"]["missed_target"] == []
    assert summary["arms"]["vanilla"]["cost_to_target"]["0"] is None
    sp = summary["arms"]["meta"]["speedup"]["flops"]
    # seed 1: vanilla reaches 4.0 at step 10 (100 FLOPs); meta at 1.1/1.1 = 10/11 of the way to step 10
    assert sp["per_seed"] == {"1": pytest.approx(100 / (100 * 10 / 11))}
    assert sp["dropped"] == {"0": "the baseline run did not reach the target"}
    verdict = "\n".join(summary["verdict"])
    assert "Runs that never reached the target (no cost, no speed-up): vanilla seed 0." in verdict
    assert "over seed 1 (seed 0 dropped: the baseline run did not reach the target)" in verdict
    md = (tmp_path / "report.md").read_text()
    assert "| vanilla | 0 | missed | missed | missed | missed |" in md
    assert "0: the baseline run did not reach the target" in md


def test_default_target_and_paired_difference_headline_when_no_arm_reaches_it(tmp_path):
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [6.0, 5.0, f]) for s, f in ((0, 4.0), (1, 4.4), (2, 4.2))},
            "meta": {s: make_run(tmp_path, "meta", s, [6.0, 5.5, f], meta={"enabled": True})
                     for s, f in ((0, 4.6), (1, 4.8), (2, 4.5))}}
    write_report(tmp_path, runs, "vanilla", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["target_loss"] == 4.4 and summary["arms"]["vanilla"]["missed_target"] == []
    assert summary["arms"]["meta"]["missed_target"] == [0, 1, 2]
    pd = summary["arms"]["meta"]["paired_difference_at_equal_flops"]
    diffs = [0.6, 0.4, 0.3]  # same FLOPs grid: final minus final
    assert [pd["per_seed"][s]["difference"] for s in "012"] == pytest.approx(diffs)
    assert all(pd["per_seed"][s]["budget"] == 200.0 for s in "012")
    sd = math.sqrt(sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2)
    assert pd["ci"] == pytest.approx([sum(diffs) / 3 - T_975_2 * sd / math.sqrt(3), sum(diffs) / 3 + T_975_2 * sd / math.sqrt(3)])
    verdict = summary["verdict"]
    # no arm reaches the target: the paired difference is the headline
    assert verdict[0].startswith("At equal FLOPs") and "meta's validation loss minus vanilla's" in verdict[0]
    assert "+0.4333 nats/token (95% CI [" in verdict[0] and verdict[0].endswith("higher than vanilla.")
    assert verdict[-1].startswith("No speed-up for meta")
    assert "Runs that never reached the target (no cost, no speed-up): meta seeds 0, 1, 2." in verdict
    # a meta arm without its momentum control is never credited to meta-learning
    assert any("cannot be credited to meta-learning" in v for v in verdict)


def test_losses_print_with_fixed_decimals(tmp_path):
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [7.0, 6.0])},
            "meta": {0: make_run(tmp_path, "meta", 0, [7.0, 6.5], meta={"enabled": True})}}
    write_report(tmp_path, runs, "vanilla", None)
    md = (tmp_path / "report.md").read_text()
    final = next(line for line in md.splitlines() if line.startswith("| vanilla | baseline |"))
    assert final.split(" | ")[3] == "6.0000"  # not "6" (%g)
    assert "Target validation loss 6.0000 nats/token" in md
    assert "| meta | 0 | 1.000e+02 | 6.5000 | 6.0000 | +0.5000 | – |" in md
    lines = md.splitlines()
    speedup_header = next(i for i, line in enumerate(lines) if line.startswith("| arm | measure | speed-up (mean)"))
    assert lines[speedup_header + 1].endswith("| --- |")  # "seeds dropped" is text: left-aligned
    assert not re.search(r"\| 6 \|", md) and not re.search(r"\b6\.5 ", md)


def query_rows(accs, n_steps=20, gain=0.1):
    """Meta rows with `query_acc` at the last steps of a `n_steps`-step run (the last quarter)."""
    return [{"step": n_steps - len(accs) + 1 + i, "query_acc": a, "support_loss_before": 1.4,
             "support_loss_after": 1.4 - gain} for i, a in enumerate(accs)]


@pytest.mark.parametrize("learned", [True, False])
def test_control_arm_attribution_at_equal_steps(tmp_path, learned):
    meta = {"enabled": True, "hybrid": 0.5, "n_way": 4}
    # the controls execute half the FLOPs per step: at equal FLOPs the meta arm would be read at step 10
    # (4.8) against the controls' final losses; at equal steps each evaluation is compared with its own
    losses = {"meta": lambda f: [6.0, 4.8, f], "momentum": lambda f: [6.0, 5.1, f], "skip": lambda f: [6.0, 5.2, f]}
    finals = {"meta": (3.0, 3.1, 3.2), "momentum": (3.5, 3.4, 3.6), "skip": (3.6, 3.6, 3.6)}
    accs = {0: [0.6, 0.7], 1: [0.65, 0.65], 2: [0.7, 0.6]} if learned else {0: [0.25, 0.2], 1: [0.3, 0.25], 2: [0.2, 0.3]}
    runs = {"vanilla": {s: make_run(tmp_path, "vanilla", s, [6.0, 5.0, 3.8]) for s in range(3)}}
    for arm, control in (("meta", None), ("momentum", "momentum"), ("skip", "skip")):
        settings = meta if control is None else {**meta, "control": control}
        runs[arm] = {s: make_run(tmp_path, arm, s, losses[arm](finals[arm][s]), 100.0 if control is None else 50.0,
                                 meta=settings, rows=query_rows(accs[s]) if control is None else ())
                     for s in range(3)}
    write_report(tmp_path, runs, "vanilla", None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["momentum"]["control"] == "momentum" and summary["arms"]["meta"]["role"] == "meta"
    atts = {a["effect"]: a for a in summary["attributions"]}
    assert all(a["axis"] == "steps" for a in atts.values())
    assert (atts["meta-arm"]["arm"], atts["meta-arm"]["control"]) == ("meta", "momentum")
    assert (atts["replay"]["arm"], atts["replay"]["control"]) == ("momentum", "skip")
    meta_diffs = [3.0 - 3.5, 3.1 - 3.4, 3.2 - 3.6]  # at step 20: -0.5, -0.3, -0.4: mean -0.4, sd 0.1
    assert [atts["meta-arm"]["per_seed"][s]["difference"] for s in "012"] == pytest.approx(meta_diffs)
    assert all(atts["meta-arm"]["per_seed"][s]["steps"] == [10, 20] for s in "012")  # step 0 left out
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert atts["meta-arm"]["final"]["ci"] == pytest.approx([-0.4 - half, -0.4 + half])
    assert atts["meta-arm"]["ci"] == atts["meta-arm"]["final"]["ci"]
    # over the curve: per seed the mean of the differences at steps 10 (4.8 − 5.1) and 20
    curve_means = [(-0.3 + d) / 2 for d in meta_diffs]  # -0.4, -0.3, -0.35: mean -0.35, sd 0.05
    assert [atts["meta-arm"]["per_seed"][s]["curve_mean"] for s in "012"] == pytest.approx(curve_means)
    assert atts["meta-arm"]["curve_mean"]["mean"] == pytest.approx(-0.35)
    assert atts["meta-arm"]["curve_mean"]["ci"] == pytest.approx([-0.35 - T_975_2 * 0.05 / math.sqrt(3),
                                                                  -0.35 + T_975_2 * 0.05 / math.sqrt(3)])
    replay_diffs = [-0.1, -0.2, 0.0]  # mean -0.1, interval spans zero
    assert atts["replay"]["mean"] == pytest.approx(sum(replay_diffs) / 3) and atts["replay"]["ci"][1] > 0
    # the meta task: query accuracy over the last quarter against chance 1/4
    task = summary["meta_task"]["meta"]
    seed_means = [sum(a) / 2 for a in accs.values()]
    mean = sum(seed_means) / 3
    sd = math.sqrt(sum((m - mean) ** 2 for m in seed_means) / 2)
    assert task["chance"] == 0.25 and task["over"] == "seeds" and task["rows"] == 6
    assert task["query_acc"]["mean"] == pytest.approx(mean)
    assert task["query_acc"]["ci"] == pytest.approx([mean - T_975_2 * sd / math.sqrt(3), mean + T_975_2 * sd / math.sqrt(3)])
    assert task["inner_loop_gain"]["mean"] == pytest.approx(0.1) and task["learned"] is learned
    assert task["realised_episode"] is None  # these rows do not record it
    verdict = "\n".join(summary["verdict"])
    lead = (f"Meta-arm effect (meta − its momentum control momentum), paired at equal optimizer steps over seeds 0, 1, 2: "
            f"-0.4000 nats/token at the final evaluation (95% CI [{-0.4 - half:+.4f}, {-0.4 + half:+.4f}]), -0.3500 "
            "averaged over the curve (95% CI [")
    assert lead in verdict
    if learned:
        assert "meta-learning lowers the validation loss beyond what momentum replay alone gives" in verdict
        assert "— learned: query accuracy above chance by its interval" in verdict
    else:
        line = next(v for v in summary["verdict"] if v.startswith("Meta-arm effect"))
        assert "associated with" in line and "not credited to meta-learning" in line
        assert not re.search(r"\b(raises|lowers|improves|hurts)\b", line)
        assert "— not learned: query accuracy not above chance by its interval" in verdict
    assert ("Replay effect (momentum control momentum − skip control skip), paired at equal optimizer steps over seeds "
            "0, 1, 2: -0.1000 nats/token") in verdict
    assert "not distinguishable from zero: no effect can be credited to AdamW momentum replay" in verdict
    assert "cannot be credited to meta-learning" not in verdict  # its control is there
    assert not any(v.startswith(("momentum reached", "skip reached")) for v in summary["verdict"])
    md = (tmp_path / "report.md").read_text()
    assert "| Meta-arm effect: meta − momentum | mean of 3 |" in md and "paired at equal optimizer steps" in md
    assert f"| meta | 0.2500 | {mean:.4f} |" in md
    assert "query_acc.png" in md  # the figure of query accuracy with the chance line


def test_report_layout_headline_figure_tables_and_phases(tmp_path):
    rows = [{"step": s, "group": "activations", "layer": 0, "component": "output", "erank": v}
            for s, v in ((0, 10.0), (10, 4.0), (20, 6.0), (30, 5.0))]
    phases = phase_readout(rows, smoothing=5)
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [6.0, 5.0, 4.0], phases=phases)},
            "meta": {0: make_run(tmp_path, "meta", 0, [6.0, 4.8, 3.9], meta={"enabled": True}),
                     },
            "meta-momentum": {0: make_run(tmp_path, "meta-momentum", 0, [6.0, 4.9, 4.0],
                                          meta={"enabled": True, "control": "momentum"})}}
    write_report(tmp_path, runs, "vanilla", None)
    page = (tmp_path / "report.html").read_text()
    assert page.count("<html") == 1 and "src='plots/" not in page and page.count("data:image/png;base64,") >= 2
    assert page.index("<img") < page.index("Verdict") < page.index("<table")  # the headline figure first
    assert "<figcaption><b>Figure 1.</b> Validation loss against training FLOPs" in page
    numbers = re.findall(r"<caption><b>Table (\d+)\.</b>", page)
    assert numbers == [str(i) for i in range(1, len(numbers) + 1)] and len(numbers) >= 5
    assert "<td class='num'>4.0000</td>" in page and "font-family:Georgia" in page
    md = (tmp_path / "report.md").read_text()
    assert md.index("**Figure 1.**") < md.index("## Verdict") < md.index("**Table 1.**")
    assert "| ---: |" in md or "---: |" in md
    # the phase read-out of vanilla seed 0: collapse to step 10, peak at step 20, then compress
    row = next(line for line in md.splitlines() if line.startswith("| layer 0 |"))
    assert "10 → 20, compressing" in row
    assert "| vanilla seed 0 | effective rank | layer 0 (20) |" in md
    # one seed: the attribution has no interval and credits nothing
    summary = json.loads((tmp_path / "summary.json").read_text())
    line = next(v for v in summary["verdict"] if v.startswith("Meta-arm effect"))
    assert "one seed: no interval" in line and "too few seeds to credit any effect to meta-learning" in line


def test_headline_plot_dashes_controls_and_bands_seeds():
    from matplotlib.figure import Figure

    from metalm.experiment.report import _mean_band, _plot_arms

    a, b = curve([5.0, 4.0, 3.0]), curve([5.0, 3.0, 2.0], 50.0)  # FLOPs 0, 100, 200 and 0, 50, 100
    xs, mean, low, high = _mean_band([a, b], "flops")
    assert list(xs) == [0.0, 50.0, 100.0]  # only where both seeds have points
    assert list(mean) == pytest.approx([5.0, (4.5 + 3.0) / 2, (4.0 + 2.0) / 2])
    assert list(low) == pytest.approx([5.0, 3.0, 2.0]) and list(high) == pytest.approx([5.0, 4.5, 4.0])
    ax = Figure().subplots()
    _plot_arms(ax, {"vanilla": [a, b], "mom": [a]}, {"vanilla": "baseline", "mom": "control (momentum)"}, "flops", True)
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]
    assert len(ax.collections) == 1  # one band: the arm with two seeds


def test_runs_whose_metrics_lost_rows_are_warned_about(tmp_path, caplog):
    runs = {"vanilla": {0: make_run(tmp_path, "vanilla", 0, [5.0, 4.0, 3.0])},
            "meta": {0: make_run(tmp_path, "meta", 0, [5.0, 4.1, 3.1])}}
    runs["meta"][0].write_status({"state": "finished", "step": 20, "rows": 5})  # it wrote 5, 3 are left
    with caplog.at_level("WARNING", logger="metalm"):
        write_report(tmp_path / "report", runs, "vanilla", None)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary["metrics_problems"]) == ["meta seed 0"] and "holds 3 of the 5 rows" in caplog.text
    assert any(line.startswith("Warning: meta seed 0") for line in summary["verdict"])
