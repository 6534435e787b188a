"""`metalm dynamics` over a trained run: post-hoc rows equal the rows recorded during training."""

from __future__ import annotations

import json

import pytest

from helpers import tiny_overrides
from metalm.cli import main
from metalm.dynamics.phases import PHASE_TEXT, section_entries
from metalm.run_dir import read_jsonl


def test_posthoc_rows_equal_training_rows(tmp_path, corpus_dir, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    run = tmp_path / "run"
    assert main(["train", str(cfg), *tiny_overrides(corpus_dir, run, **{"dynamics.every": 4})]) == 0
    assert (run / "phases.json").is_file() and any((run / "plots").glob("*.png"))
    phases = json.loads((run / "phases.json").read_text())
    assert {e["component"] for e in phases["weight_per"]["components"]} >= {"q", "k", "v", "o", "gate", "up", "down"}
    assert {e["component"] for e in phases["grad_per"]["components"]} >= {"q", "down"}
    for key in ("effective_rank", "head_entropy", "weight_per", "grad_per"):  # every curve has a phase
        assert all(e["phase"] in PHASE_TEXT for e in section_entries(phases[key])), key
    assert main(["dynamics", str(run)]) == 0
    live = {(r["step"], r["group"], r["layer"], r.get("component"), r.get("head")): r for r in read_jsonl(run / "dynamics.jsonl")}
    post = read_jsonl(run / "dynamics-posthoc.jsonl")
    assert sorted({r["step"] for r in post}) == [4, 8]  # the saved checkpoints
    for r in post:
        ref = live[(r["step"], r["group"], r["layer"], r.get("component"), r.get("head"))]
        for key in ("erank", "per", "entropy", "entropy_norm"):
            if key in r:
                assert r[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9)
    assert "Phase read-out" in capsys.readouterr().out


def test_dynamics_of_a_missing_run_is_a_clean_error(tmp_path, capsys):
    assert main(["dynamics", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("metalm: error: ")
