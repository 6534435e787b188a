"""An experiment is never silent and never dies quietly: each evaluation's start and end are logged,
SIGTERM in any phase ends it with status 130 and its state recorded, a re-run continues, and the
report of an unfinished experiment says first which runs are missing or not done."""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
import yaml

from helpers import make_corpus
from metalm.cli import main


@pytest.fixture
def experiment(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    spec = {
        "run": {"dir": str(tmp_path / "exp"), "progress": False},
        "model": {"preset": "nano"},
        "data": {"train": str(corpus / "train"), "validation": str(corpus / "validation"), "vocab_size": 300},
        "train": {"steps": 4, "batch_size": 4, "seq_len": 32, "eval_every": 2, "eval_batches": 1, "save_every": 4},
        "dynamics": {"every": 0},
        "arms": {"vanilla": {}}, "seeds": [0, 1], "evaluations": {"perplexity": True},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, tmp_path / "exp"


def test_sigterm_during_an_evaluation_exits_130_records_state_and_a_rerun_continues(experiment, monkeypatch, caplog):
    import metalm.evaluation.perplexity as perplexity

    path, exp = experiment
    evaluate = perplexity.evaluate_perplexity

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the evaluation")

    monkeypatch.setattr(perplexity, "evaluate_perplexity", killed)
    with caplog.at_level(logging.INFO, logger="metalm"):
        assert main(["experiment", str(path)]) == 130
    status = json.loads((exp / "status.json").read_text())
    assert status["state"] == "interrupted" and status["during"] == "perplexity of vanilla seed 0"
    assert "perplexity of vanilla seed 0: started at" in caplog.text

    assert main(["report", str(exp)]) == 0  # the report of the unfinished experiment says so first
    md = (exp / "report.md").read_text()
    top = md[:md.index("Arms:")]
    assert "Unfinished experiment" in top and "vanilla seed 0: trained; no result yet for perplexity" in top
    assert "vanilla seed 1: not started" in top
    assert json.loads((exp / "summary.json").read_text())["unfinished"] == [
        "vanilla seed 0: trained; no result yet for perplexity", "vanilla seed 1: not started"]

    monkeypatch.setattr(perplexity, "evaluate_perplexity", evaluate)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metalm"):
        assert main(["experiment", str(path)]) == 0
    assert "perplexity of vanilla seed 1: done at" in caplog.text
    assert json.loads((exp / "status.json").read_text())["state"] == "finished"
    assert all((exp / "vanilla" / f"seed-{s}" / "eval" / "perplexity.json").is_file() for s in (0, 1))
    assert "Unfinished" not in (exp / "report.md").read_text()
    assert not (exp / "vanilla" / "seed-0" / "probe_batch.safetensors").exists()  # dynamics.every 0: no probe batch
