"""Experiments: DESIGN 2.6 measures on synthetic curves, and a two-arm, two-seed experiment end to end."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import make_corpus
from metalm.cli import main
from metalm.dynamics.phases import phase_text
from metalm.experiment.compare import cost_to_target, loss_at, mean_ci, speedups, val_curve
from metalm.run_dir import read_jsonl


def curve(losses, per_step=(100, 1000, 10.0)):
    tokens, flops, secs = per_step
    steps = [10 * i for i in range(len(losses))]
    return {"step": steps, "tokens": [s * tokens for s in steps], "flops": [s * flops for s in steps],
            "time": [s * secs for s in steps], "val_loss": list(losses)}


def test_cost_to_target_interpolates_between_evaluations():
    c = curve([5.0, 4.0, 3.0, 2.0])
    cost = cost_to_target(c, 2.5)  # halfway between steps 20 (3.0) and 30 (2.0)
    assert cost == {"step": 25.0, "tokens": 2500.0, "flops": 25000.0, "time": 250.0}
    assert cost_to_target(c, 3.0)["step"] == 20  # reached exactly at an evaluation
    assert cost_to_target(c, 1.9) is None  # never reached: no number
    assert cost_to_target(c, 6.0)["step"] == 0  # reached at the first evaluation
    assert loss_at(c, "tokens", 1500) == pytest.approx(3.5) and loss_at(c, "tokens", 1e9) is None


def test_mean_ci_on_known_samples():
    r = mean_ci([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.302653; sem = 1/sqrt(3)
    assert r["mean"] == 2.0 and r["ci"] == pytest.approx([2 - 4.302653 / np.sqrt(3), 2 + 4.302653 / np.sqrt(3)], rel=1e-6)
    assert mean_ci([4.2])["ci"] is None and mean_ci([])["mean"] is None


def test_speedups_per_seed_and_not_reached():
    base = {0: {"step": 100, "tokens": 10, "flops": 50, "time": 8}, 1: {"step": 120, "tokens": 12, "flops": 60, "time": 9}}
    arm = {0: {"step": 50, "tokens": 10, "flops": 25, "time": 4}, 1: None}
    sp = speedups(base, arm)
    assert sp["step"]["per_seed"] == {0: 2.0} and sp["step"]["not_reached"] == [1] and sp["step"]["ci"] is None


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    corpus = root / "corpus"
    make_corpus(corpus, val_docs=6)
    spec = {
        "run": {"dir": str(root / "exp"), "progress": False},
        "model": {"preset": "nano"},
        "data": {"train": str(corpus / "train"), "validation": str(corpus / "validation"), "vocab_size": 300},
        "train": {"steps": 8, "batch_size": 4, "seq_len": 32, "lr": 0.003, "eval_every": 2, "eval_batches": 2,
                  "save_every": 4, "log_every": 1},
        "dynamics": {"every": 4, "groups": ["activations", "attention"]},
        "arms": {"vanilla": {}, "meta": {"meta": {"enabled": True, "band_min_count": 5, "band_skip_top": 10,
                                                  "window_len": 16, "n_way": 3, "k_shot": 2, "q_query": 2}}},
        "seeds": [0, 1],
        "evaluations": {"perplexity": True},
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return root, path


def test_two_arm_two_seed_experiment_end_to_end(experiment):
    root, path = experiment
    assert main(["experiment", str(path)]) == 0
    exp = root / "exp"
    summary = json.loads((exp / "summary.json").read_text())
    # recompute the numbers from the runs' metrics.jsonl
    finals = {a: [val_curve(read_jsonl(exp / a / f"seed-{s}" / "metrics.jsonl"))["val_loss"][-1] for s in (0, 1)]
              for a in ("vanilla", "meta")}
    target = max(finals["vanilla"])  # DESIGN 2.6: the highest baseline final, reached by every baseline seed
    assert summary["target_loss"] == pytest.approx(target)
    assert summary["arms"]["vanilla"]["missed_target"] == []
    for arm in ("vanilla", "meta"):
        assert summary["arms"][arm]["final_val_loss"]["mean"] == pytest.approx(np.mean(finals[arm]))
        for s in (0, 1):
            c = val_curve(read_jsonl(exp / arm / f"seed-{s}" / "metrics.jsonl"))
            assert summary["arms"][arm]["cost_to_target"][str(s)] == cost_to_target(c, target)
        missed = [s for s in (0, 1) if summary["arms"][arm]["cost_to_target"][str(s)] is None]
        assert summary["arms"][arm]["missed_target"] == missed
    meta_costs = summary["arms"]["meta"]["cost_to_target"]
    base_costs = summary["arms"]["vanilla"]["cost_to_target"]
    sp = summary["arms"]["meta"]["speedup"]["flops"]
    for s, ratio in sp["per_seed"].items():
        assert ratio == pytest.approx(base_costs[s]["flops"] / meta_costs[s]["flops"])
    assert set(sp["per_seed"]) | set(sp["dropped"]) == {"0", "1"}  # every seed either counted or listed
    paired = summary["arms"]["meta"]["paired_difference_at_equal_flops"]
    assert paired["n"] == 2 and set(paired["per_seed"]) == {"0", "1"} and len(paired["ci"]) == 2
    assert summary["verdict"] and any(v.startswith("Target validation loss") for v in summary["verdict"])
    assert any("meta" in v and "vanilla" in v for v in summary["verdict"])
    md = (exp / "report.md").read_text()
    assert "## Verdict" in md and summary["verdict"][0] in md
    # the phase read-out side by side: each run's trough and peak step per layer, as in its phases.json
    section = md[md.index("Phase read-out, effective rank"):].splitlines()
    header = section[2]
    assert all(f"{a} seed {s}" in header for a in ("vanilla", "meta") for s in (0, 1))
    for arm in ("vanilla", "meta"):
        layer0 = next(x for x in json.loads((exp / arm / "seed-1" / "phases.json").read_text())["effective_rank"]["layers"]
                      if x["name"] == "layer 0")
        row = next(line for line in section if line.startswith("| layer 0 |"))
        if layer0["phase"] not in ("flat", "single-step"):
            steps = [("–" if layer0[k] is None else str(layer0[k])) for k in ("trough_step", "peak_step")]
            now = {"collapse": "collapsing", "diversify": "diversifying", "compress": "compressing"}
            assert f"{steps[0]} → {steps[1]}, {now[layer0['phases'][-1]['phase']]}" in row
        else:
            assert phase_text(layer0["phase"], short=True) in row
    html = (exp / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "src='plots/" not in html
    assert (exp / "vanilla" / "seed-1" / "eval" / "perplexity.json").is_file()


def test_rerun_reuses_and_interrupted_experiment_finishes_identically(experiment):
    root, path = experiment
    exp = root / "exp"
    before = json.loads((exp / "summary.json").read_text())
    # an interrupted experiment: the last run lost everything after its step-4 checkpoint
    last = exp / "meta" / "seed-1"
    shutil.rmtree(last / "final")
    shutil.rmtree(last / "checkpoints" / "step-00000008")
    (last / "status.json").write_text('{"state": "interrupted"}')
    assert main(["experiment", str(path)]) == 0
    assert (last / "final").is_dir() and json.loads((last / "status.json").read_text())["state"] == "finished"
    after = json.loads((exp / "summary.json").read_text())
    strip = lambda s: {a: {k: v for k, v in e.items() if k != "evaluations"} for a, e in s["arms"].items()}
    assert strip(after) == strip(before) and after["verdict"] == before["verdict"]
    # standalone report over the same experiment gives the same numbers
    assert main(["report", str(exp)]) == 0
    assert strip(json.loads((exp / "summary.json").read_text())) == strip(before)


def test_evaluations_are_reused_only_with_unchanged_settings(experiment, tmp_path):
    root, path = experiment
    result = root / "exp" / "vanilla" / "seed-0" / "eval" / "perplexity.json"
    marked = {**json.loads(result.read_text()), "marker": "kept"}
    result.write_text(json.dumps(marked))
    assert main(["experiment", str(path)]) == 0
    assert json.loads(result.read_text()).get("marker") == "kept"  # same settings: reused
    spec = yaml.safe_load(path.read_text())
    spec["evaluations"]["perplexity"] = [spec["data"]["validation"]]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(changed)]) == 0
    assert "marker" not in json.loads(result.read_text())  # other settings: evaluated again
    assert json.loads((result.parent / "requested.json").read_text())["perplexity"]["data"] == [spec["data"]["validation"]]


def test_html_report_opens_in_chromium_without_missing_images(experiment, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    root, _ = experiment
    report = root / "exp" / "report.html"
    if not report.is_file():
        pytest.skip("the end-to-end experiment test did not run")
    js = ("<script>window.onload=()=>{const bad=[...document.images].filter(i=>!i.complete||i.naturalWidth==0);"
          "document.title='images:'+document.images.length+':broken:'+bad.length}</script>")
    page = tmp_path / "check.html"
    page.write_text(report.read_text().replace("</body>", js + "</body>"))
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    title = out.stdout.split("<title>")[1].split("</title>")[0]
    n_images, broken = int(title.split(":")[1]), int(title.split(":")[3])
    assert n_images >= 3 and broken == 0


@pytest.mark.parametrize("content, message", [
    (b"arms: [", "is not valid YAML"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"- 1", "an experiment must be a mapping"),
    (b"seeds: [0]\n", "'arms' must map at least one arm"),
    (b"arms: {a: {}}\nbaseline: a\nmatched_baselines: 3\n", "matched_baselines: true or false"),
    (b"arms: {a: {}, b@c: {}}\nbaseline: a\nmatched_baselines: true\n", "'b@c' cannot name an arm's directory"),
])
def test_bad_experiment_files_exit_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    assert main(["experiment", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def _unigram_by_hand(cache: str, vocab: int) -> float:
    """The unigram cross-entropy with plain Python counting over the cached token files."""
    from collections import Counter

    from metalm.data.token_writer import token_paths

    info = json.loads((Path(cache) / "info.json").read_text())
    read = {name: np.fromfile(token_paths(Path(cache), name)[0], dtype=info["dtype"]).tolist()
            for name in ("train", "validation")}
    counts = Counter(read["train"])
    size = max(vocab, max(read["train"]) + 1, max(read["validation"]) + 1)
    n = len(read["train"])
    return -sum(math.log((counts[t] + 1) / (n + size)) for t in read["validation"]) / len(read["validation"])


@pytest.mark.slow
def test_four_arm_microbatch_experiment_with_matched_baselines(tmp_path):
    """vanilla, a dense token-SMLMT `microbatch` meta arm, its momentum and skip controls; 2 seeds;
    matched baselines — every new summary number recomputed from the run directories."""
    meta = {"enabled": True, "task": "smlmt", "smlmt_variant": "token", "layout": "dense", "n_way": 4, "k_shot": 2,
            "q_query": 1, "episodes_per_step": 1, "inner_steps": 2, "head_init": "learned", "schedule": "microbatch",
            "hybrid": 0.5}
    spec = {"run": {"dir": str(tmp_path / "exp"), "progress": False}, "model": {"preset": "nano"},
            "data": {"train": "demo", "vocab_size": 512},
            "train": {"steps": 8, "batch_size": 8, "grad_accum": 2, "seq_len": 64, "lr": 0.003, "warmup_steps": 2,
                      "schedule": "linear", "eval_every": 2, "eval_batches": 2, "save_every": 4, "log_every": 1},
            "dynamics": {"every": 4},
            "arms": {"vanilla": {}, "meta": {"meta": meta}, "meta-momentum": {"meta": {**meta, "control": "momentum"}},
                     "meta-skip": {"meta": {**meta, "control": "skip"}}},
            "seeds": [0, 1], "matched_baselines": True}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["experiment", str(path)]) == 0
    exp = tmp_path / "exp"
    summary = json.loads((exp / "summary.json").read_text())
    rows = {(a, s): read_jsonl(exp / a / f"seed-{s}" / "metrics.jsonl") for a in spec["arms"] for s in (0, 1)}
    curves = {k: val_curve(r) for k, r in rows.items()}
    # attribution at equal steps: the final evaluation's difference per seed, by hand
    atts = {a["effect"]: a for a in summary["attributions"]}
    assert {a["axis"] for a in atts.values()} == {"steps"}
    for effect, arm, control in (("meta-arm", "meta", "meta-momentum"), ("replay", "meta-momentum", "meta-skip")):
        assert (atts[effect]["arm"], atts[effect]["control"]) == (arm, control)
        for s in (0, 1):
            assert atts[effect]["per_seed"][str(s)]["final_step"] == 8
            assert atts[effect]["per_seed"][str(s)]["difference"] == pytest.approx(
                curves[arm, s]["val_loss"][-1] - curves[control, s]["val_loss"][-1])
    # matched baselines: the step count from the FLOPs, the schedule shape, the final FLOPs within a step
    per_step = rows["vanilla", 0][-1]["flops"] / 8
    for arm in ("meta", "meta-momentum", "meta-skip"):
        for s in (0, 1):
            m = summary["matched_baselines"][arm][str(s)]
            arm_flops = rows[arm, s][-1]["flops"]
            steps = round(arm_flops / per_step)
            assert m["arm_final_flops"] == arm_flops and m["steps"] == steps
            assert abs(m["final_flops"] - arm_flops) <= per_step / 2
            if steps != 8:
                assert m["run"] == str(exp / f"vanilla@{steps}-steps" / f"seed-{s}")
                train = yaml.safe_load((Path(m["run"]) / "config.yaml").read_text())["train"]
                assert train["steps"] == steps and train["warmup_steps"] == round(2 * steps / 8)
                assert read_jsonl(Path(m["run"]) / "metrics.jsonl")[-1]["flops"] == m["final_flops"]
    assert summary["arms"]["meta-skip"]["paired_difference_at_equal_flops"]["against"] == "matched baseline"
    # the regime: unigram cross-entropy from the run's token cache, counted by hand
    data = json.loads((exp / "vanilla" / "seed-0" / "data.json").read_text())
    unigram = _unigram_by_hand(data["cache"], data["vocab_size"])
    assert summary["unigram_ce"] == pytest.approx(unigram, rel=1e-9)
    for arm in spec["arms"]:
        finals = [curves[arm, s]["val_loss"][-1] for s in (0, 1)]
        stage = any(unigram - f < 0.5 for f in finals)
        assert summary["arms"][arm]["regime"]["label"] == ("unigram stage" if stage else "learning")
    # the meta task of the meta arm (and only of it)
    assert list(summary["meta_task"]) == ["meta"]
    task = summary["meta_task"]["meta"]
    last = {s: [r["query_acc"] for r in rows["meta", s] if r.get("query_acc") is not None and r["step"] > 6]
            for s in (0, 1)}
    assert task["chance"] == 0.25 and task["query_acc"]["mean"] == pytest.approx(np.mean([np.mean(v) for v in last.values()]))
    assert task["learned"] == (task["query_acc"]["ci"][0] > 0.25)
    # curve level at 25..100% of the steps budget
    step_points = summary["arms"]["meta"]["curve_differences"]["step"]["points"]
    assert [p["fraction"] for p in step_points] == [0.25, 0.5, 0.75, 1.0]
    assert step_points[1]["per_seed"]["0"]["difference"] == pytest.approx(
        curves["meta", 0]["val_loss"][2] - curves["vanilla", 0]["val_loss"][2])  # step 4 is an evaluation
    md = (exp / "report.md").read_text()
    assert "Matched baselines" in md and "query_acc.png" in md and "paired at equal optimizer steps" in md
    # re-running reuses every run, matched ones included; the standalone report finds them again
    before = {k: summary[k] for k in ("matched_baselines", "attributions", "unigram_ce", "meta_task")}
    stamps = {p: p.stat().st_mtime_ns for p in exp.glob("*/seed-*/metrics.jsonl")}
    assert main(["experiment", str(path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in exp.glob("*/seed-*/metrics.jsonl")} == stamps
    assert {k: json.loads((exp / "summary.json").read_text())[k] for k in before} == before
    assert main(["report", str(exp)]) == 0
    after = json.loads((exp / "summary.json").read_text())
    assert {k: after[k] for k in before} == before
