"""Sweeps in experiment files (DESIGN 2.6, tuned against tuned): the grid, the choice, controls
taking their meta arm's choice, resume, and refusal of bad sweeps."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import make_corpus
from metalm.cli import main
from metalm.errors import ConfigError
from metalm.experiment.spec import load_experiment
from metalm.experiment.sweep import Sweep, choose, nested, parse_sweep, setting_name, sweep_run_dir, sweep_table
from metalm.run_dir import RunDir


def test_the_grid_is_the_product_of_its_lists_first_key_slowest():
    sweep = Sweep(["a"], [0], {"train.lr": [0.1, 0.01], "train.grad_clip": [0, 1.0], "meta.inner_lr": [0.5]})
    settings = sweep.settings()
    assert settings == [
        {"train.lr": 0.1, "train.grad_clip": 0, "meta.inner_lr": 0.5},
        {"train.lr": 0.1, "train.grad_clip": 1.0, "meta.inner_lr": 0.5},
        {"train.lr": 0.01, "train.grad_clip": 0, "meta.inner_lr": 0.5},
        {"train.lr": 0.01, "train.grad_clip": 1.0, "meta.inner_lr": 0.5},
    ]
    assert setting_name(settings[1]) == "train.lr=0.1,train.grad_clip=1.0,meta.inner_lr=0.5"
    assert len({setting_name(s) for s in settings}) == 4
    assert nested(settings[0]) == {"train": {"lr": 0.1, "grad_clip": 0}, "meta": {"inner_lr": 0.5}}


def test_the_choice_is_the_lowest_mean_over_the_sweep_seeds():
    losses = [{0: 5.0, 1: 5.5},    # mean 5.25
              {0: 4.75, 1: 6.0},   # mean 5.375: best on seed 0 alone, not on the mean
              {0: 5.25, 1: 5.25}]  # mean 5.25: ties with the first; the first wins
    assert choose(losses, [0, 1]) == 0
    assert choose(losses, [0]) == 1
    assert choose([{0: math.nan}, {0: 6.0}], [0]) == 1  # a non-finite loss is never chosen
    assert choose([{0: None, 1: 5.0}, {0: 6.0}], [0, 1]) is None  # every setting lacks a seed
    assert choose([{0: 3.0, 1: None}, {0: 6.0, 1: 6.0}], [0, 1]) == 1  # a setting missing a seed is out


def _fake_run(path: Path, state: str, losses: list[float]) -> None:
    path.mkdir(parents=True)
    RunDir(path).write_status({"state": state})
    if state == "finished":
        (path / "final").mkdir()
    rows = [{"step": 10 * i, "val_loss": v} for i, v in enumerate(losses)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_table_reads_final_losses_and_never_chooses_a_diverged_or_unsettled_setting(tmp_path):
    sweep = Sweep(["vanilla"], [0], {"train.lr": [0.1, 0.01, 0.001]})
    s = sweep.settings()
    _fake_run(sweep_run_dir(tmp_path, "vanilla", s[0], 0), "diverged", [9.0, 3.0])  # lowest, but diverged
    _fake_run(sweep_run_dir(tmp_path, "vanilla", s[1], 0), "finished", [9.0, 5.5, 5.0])
    _fake_run(sweep_run_dir(tmp_path, "vanilla", s[2], 0), "interrupted", [9.0, 6.0])
    entry = sweep_table(sweep, tmp_path)["vanilla"]
    assert [r["state"]["0"] for r in entry["settings"]] == ["diverged", "finished", "interrupted"]
    assert [r["final_val_loss"]["0"] for r in entry["settings"]] == [None, 5.0, None]
    assert entry["chosen"] is None  # a setting is still running: no choice yet
    shutil.rmtree(sweep_run_dir(tmp_path, "vanilla", s[2], 0))
    _fake_run(sweep_run_dir(tmp_path, "vanilla", s[2], 0), "finished", [9.0, 6.0, 5.2])
    entry = sweep_table(sweep, tmp_path)["vanilla"]
    assert entry["chosen"] == {"train.lr": 0.01} and entry["chosen_name"] == "train.lr=0.01"
    assert entry["at_edge"] == []  # 0.01 lies inside the grid


def test_a_choice_at_the_edge_of_a_numeric_axis_is_flagged():
    from metalm.experiment.sweep import at_edge

    grid = {"train.lr": [0.0003, 0.001, 0.003], "train.grad_clip": [0, 1.0], "meta.inner_optimizer": ["sgd", "adam"]}
    assert at_edge(grid, {"train.lr": 0.003, "train.grad_clip": 0, "meta.inner_optimizer": "sgd"}) == [
        "train.lr=0.003 (the largest tried)", "train.grad_clip=0 (the smallest tried)"]
    assert at_edge(grid, {"train.lr": 0.001, "train.grad_clip": 0.0, "meta.inner_optimizer": "adam"}) == [
        "train.grad_clip=0.0 (the smallest tried)"]
    assert at_edge({"train.lr": [0.001]}, {"train.lr": 0.001}) == []  # one value: no axis to be at the edge of


# -- end to end ----------------------------------------------------------------------------------------

META = {"enabled": True, "band_min_count": 5, "band_skip_top": 10, "window_len": 16, "n_way": 3, "k_shot": 2,
        "q_query": 2}


def _spec(root: Path, corpus: Path, **extra) -> dict:
    return {
        "run": {"dir": str(root / "exp"), "progress": False},
        "model": {"preset": "nano"},
        "data": {"train": str(corpus / "train"), "validation": str(corpus / "validation"), "vocab_size": 300},
        "train": {"steps": 6, "batch_size": 4, "seq_len": 32, "lr": 0.003, "eval_every": 3, "eval_batches": 2,
                  "save_every": 3, "log_every": 1},
        "dynamics": {"every": 3, "groups": ["activations"]},
        "arms": {"vanilla": {}, "meta": {"meta": META}, "meta-momentum": {"meta": {**META, "control": "momentum"}}},
        "seeds": [0, 1],
        "sweep": {"arms": ["vanilla", "meta"], "grid": {"train.lr": [0.0003, 0.01]}},
        **extra,
    }


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    corpus = make_corpus(root / "corpus", val_docs=6)
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(_spec(root, corpus)))
    assert main(["experiment", str(path)]) == 0
    return root, corpus, path


def test_an_experiment_sweeps_first_then_runs_each_arm_and_its_control_at_the_choice(swept):
    root, _, _ = swept
    exp = root / "exp"
    summary = json.loads((exp / "summary.json").read_text())
    sweeps = summary["sweeps"]
    assert sweeps["seeds"] == [0] and sweeps["selected_on_arm_seeds"] == [0]
    for arm in ("vanilla", "meta"):
        entry = sweeps["arms"][arm]
        losses = {}
        for setting in ({"train.lr": 0.0003}, {"train.lr": 0.01}):
            run = RunDir(sweep_run_dir(exp, arm, setting, 0))
            assert run.is_finished() and not run.dynamics_path().is_file()  # no probes in sweep runs
            rows = [r for r in run.read_metrics() if r.get("val_loss") is not None]
            losses[setting["train.lr"]] = max(rows, key=lambda r: r["step"])["val_loss"]
            assert run.read_config()["train"]["lr"] == setting["train.lr"]
        best = min(losses, key=losses.get)
        assert entry["chosen"] == {"train.lr": best}
        for seed in (0, 1):  # the arm's own seeds run at its choice
            assert RunDir(exp / arm / f"seed-{seed}").read_config()["train"]["lr"] == best
    assert sweeps["arms"]["meta"]["taken_by"] == ["meta", "meta-momentum"]
    meta_lr = sweeps["arms"]["meta"]["chosen"]["train.lr"]
    for seed in (0, 1):  # the control shares its meta arm's schedule
        assert RunDir(exp / "meta-momentum" / f"seed-{seed}").read_config()["train"]["lr"] == meta_lr
    report = (exp / "report.md").read_text()
    assert "Sweep (tuned against tuned" in report and "chosen: meta, meta-momentum" in report
    tuning = [v for v in summary["verdict"] if v.startswith("Tuned against tuned")]
    assert len(tuning) == 1 and f"meta ran at train.lr={json.dumps(meta_lr)} (and so did meta-momentum" in tuning[0]
    assert not any("not tuned against tuned" in v for v in summary["verdict"])  # every arm was tuned


def test_an_interrupted_sweep_resumes_to_the_same_choice_and_numbers(swept):
    root, _, path = swept
    exp = root / "exp"
    before = json.loads((exp / "summary.json").read_text())
    run = sweep_run_dir(exp, "meta", {"train.lr": 0.01}, 0)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-00000006")
    (run / "status.json").write_text('{"state": "interrupted"}')
    assert main(["experiment", str(path)]) == 0
    assert RunDir(run).is_finished()
    after = json.loads((exp / "summary.json").read_text())
    assert after["sweeps"] == before["sweeps"]
    assert main(["report", str(exp)]) == 0  # the standalone report reads the sweep back
    assert json.loads((exp / "summary.json").read_text())["sweeps"] == before["sweeps"]


@pytest.mark.parametrize("sweep, message", [
    ({"arms": ["nope"], "grid": {"train.lr": [0.1]}}, "sweep.arms: no arm named 'nope'"),
    ({"arms": ["vanilla"], "grid": {"train.lrr": [0.1]}}, "sweep.grid.train.lrr: no such config setting"),
    ({"arms": ["vanilla"], "grid": {"train.lr": []}}, "sweep.grid.train.lr: a non-empty list"),
    ({"arms": ["vanilla"], "grid": {"train.lr": [0.1, 0.1]}}, "listed more than once"),
    ({"arms": ["vanilla"], "grid": {"train.steps": [4, 8]}}, "sweep.grid.train.steps: cannot be swept"),
    ({"arms": ["vanilla"], "grid": {"data.vocab_size": [200, 300]}}, "sweep.grid.data.vocab_size: cannot be swept"),
    ({"arms": ["vanilla"], "grid": {"train.lr": [-1.0]}}, "sweep.grid: train.lr=-1.0"),
    ({"arms": ["meta-momentum"], "grid": {"train.lr": [0.1]}}, "'meta-momentum' is a control arm"),
    ({"arms": ["vanilla"], "grid": {"meta.inner_lr": [0.1]}}, "has meta-learning disabled"),
    ({"arms": ["vanilla"], "grid": {}}, "sweep.grid: a mapping"),
    ({"arms": ["vanilla"], "seeds": [], "grid": {"train.lr": [0.1]}}, "sweep.seeds: a non-empty list"),
    ({"arms": ["vanilla"], "grid": {"train.lr": [0.1]}, "trials": 3}, "sweep: unknown key(s) trials"),
])
def test_bad_sweeps_are_refused_before_anything_runs(tmp_path, capsys, sweep, message):
    corpus = make_corpus(tmp_path / "corpus", val_docs=6)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_spec(tmp_path, corpus, sweep=sweep)))
    assert main(["experiment", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "exp").exists()


def test_parse_sweep_defaults_to_the_first_seed():
    sweep = parse_sweep({"arms": ["a"], "grid": {"train.lr": [1e-3]}}, ["a", "b"], [3, 4])
    assert sweep.seeds == [3]
    with pytest.raises(ConfigError, match="sweep: a mapping"):
        parse_sweep([1], ["a"], [0])


def test_an_arm_cannot_be_named_like_the_sweep_folder(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"arms": {"sweep": {}}, "baseline": "sweep"}))
    with pytest.raises(ConfigError, match="'sweep' cannot name an arm's directory"):
        load_experiment(path)


def test_the_live_view_finds_the_sweep_runs(swept):
    from metalm.watch.discover import discover_runs

    root, _, _ = swept
    found = {p.relative_to(root / "exp").as_posix() for p in discover_runs(root / "exp")}
    assert {"sweep/meta/train.lr=0.01/seed-0", "sweep/vanilla/train.lr=0.0003/seed-0", "meta-momentum/seed-1"} <= found


def test_the_verdict_names_arms_that_ran_untuned_beside_tuned_ones():
    from metalm.experiment.summary import ExperimentSummary, SweepArm, Sweeps
    from metalm.experiment.verdict import _tuning_lines

    arm = SweepArm(settings=[], chosen={"train.lr": 0.001}, chosen_name="train.lr=0.001", taken_by=["vanilla"],
                   at_edge=["train.lr=0.001 (the largest tried)"])
    sweeps = Sweeps(seeds=[0], grid={"train.lr": [0.0003, 0.001]}, selected_on_arm_seeds=[0], arms={"vanilla": arm})
    # only what the tuning lines read: the arms' names and the sweep
    summary = ExperimentSummary.model_construct(arms=dict.fromkeys(["vanilla", "meta", "meta-skip"]), sweeps=sweeps)
    lines = _tuning_lines(summary)
    assert lines[0].endswith("vanilla ran at train.lr=0.001.")
    assert lines[1].startswith("The sweep's choice lies at the edge of its grid (vanilla: train.lr=0.001 (the largest")
    assert lines[2] == ("meta, meta-skip ran at their configured settings, not swept: comparisons with them are not "
                        "tuned against tuned.")
    assert _tuning_lines(ExperimentSummary.model_construct(arms={"vanilla": None}, sweeps=None)) == []
