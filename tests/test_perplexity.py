"""`metalm eval perplexity`: token-weighted loss per held-out set, checked against an independent computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import assert_result_round_trip, make_corpus, tiny_overrides, write_corpus
from metalm.cli import main
from metalm.eval_results import NerResult, PerplexityResult, read_result
from metalm.evaluation.perplexity import evaluate_perplexity, windows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppl")
    corpus = root / "corpus"
    make_corpus(corpus)
    write_corpus(root / "other.txt", n_docs=3, seed=9, words_per_doc=120)
    cfg = root / "cfg.yaml"
    cfg.write_text("{}")
    assert main(["train", str(cfg), *tiny_overrides(corpus, root / "run")]) == 0
    return root


def independent_nll(run_dir, path, seq_len):
    """Sum of -log p(token | previous tokens within its window) with HF's own loss, window by window."""
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    docs = [d for d in path.read_text().split("\n\n") if d.strip()]
    ids = [tok.eos_token_id]  # the separator every document follows in training
    for d in docs:
        ids += tok(d.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, seq_len):
            w = torch.tensor([ids[start:start + seq_len + 1]])
            n = w.shape[1] - 1
            total += float(model(input_ids=w, labels=w).loss) * n  # HF shifts internally, mean over n
            count += n
    return total, count, len(ids)


def test_perplexity_matches_independent_computation(trained):
    run = trained / "run"
    res = evaluate_perplexity(run, [str(trained / "corpus" / "validation" / "validation-00.txt"), str(trained / "other.txt")])
    assert res["seq_len"] == 32  # the run's train.seq_len
    for row, path in zip(res["sets"], [trained / "corpus" / "validation" / "validation-00.txt", trained / "other.txt"]):
        total, count, n_tokens = independent_nll(run, path, 32)
        assert row["tokens"] == count == n_tokens - 1  # every token predicted once (the first from the EOS)
        assert row["loss"] == pytest.approx(total / count, rel=1e-5)
        assert row["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_windows_cover_every_token_once():
    tokens = np.arange(23)
    ws = windows(tokens, 5)
    assert [len(w) for w in ws] == [6, 6, 6, 6, 3]
    predicted = np.concatenate([w[1:] for w in ws])
    assert predicted.tolist() == list(range(1, 23))


def test_cli_table_json_and_saved_result(trained, capsys):
    run = trained / "run"
    assert main(["eval", "perplexity", str(run), "--data", str(trained / "other.txt"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((run / "eval" / "perplexity.json").read_text()) == printed
    result = assert_result_round_trip(PerplexityResult, run / "eval" / "perplexity.json")
    assert [s.data for s in result.sets] == [str(trained / "other.txt")] and result.sets[0].tokens > 0
    assert read_result(PerplexityResult, {**printed, "sets": [{"data": "x"}]}) is None  # a set without its numbers
    assert read_result(PerplexityResult, None) is None  # missing or half-written
    assert read_result(NerResult, printed) is None  # another evaluation's result
    assert main(["eval", "perplexity", str(run), "--data", str(trained / "missing.txt")]) == 2
    assert "data file not found" in capsys.readouterr().err

