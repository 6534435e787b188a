"""`metalm eval harness`: lm-evaluation-harness on a metalm model. The shipped metalm_text task's
per-token loss on a held-out text equals `metalm eval perplexity` at the same context."""

from __future__ import annotations

import json

import pytest

from helpers import make_corpus, make_docs, train_tiny
from metalm.cli import main

lm_eval = pytest.importorskip("lm_eval", reason='lm-evaluation-harness not installed (pip install -e ".[lm-eval]")')


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    corpus = make_corpus(root / "corpus")
    assert train_tiny(corpus, root / "run", **{"train.steps": 30, "train.eval_every": 10, "train.save_every": 30}) == 0
    return root / "run"


def test_lm_eval_per_token_loss_equals_metalm_perplexity(run, capsys):
    text = run.parent / "held_out.txt"  # one document (no blank line), as the task reads it
    text.write_text(" ".join(make_docs(7, n_docs=30)).replace("\n", " "))
    assert main(["eval", "perplexity", str(run), "--data", str(text), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["sets"][0]
    assert main(["eval", "harness", str(run), "--tasks", "metalm_text", "--data", str(text), "--json"]) == 0
    theirs = json.loads(capsys.readouterr().out)
    row = theirs["text"][0]
    assert theirs["max_length"] == 32  # the run's train.seq_len, as for metalm eval perplexity
    assert row["tokens"] == ours["tokens"] - 1  # lm-eval does not predict the closing end-of-document token
    assert row["loss"] == pytest.approx(ours["loss"], abs=1e-3)
    assert "word_perplexity,none" in theirs["results"]["metalm_text"]
    assert json.loads((run / "eval" / "harness.json").read_text())["text"][0]["loss"] == row["loss"]


def test_the_text_task_needs_a_file(run, capsys):
    assert main(["eval", "harness", str(run), "--tasks", "metalm_text"]) == 2
    assert "needs --data" in capsys.readouterr().err
