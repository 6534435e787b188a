"""End-to-end `run_ner` on a nano checkpoint and synthetic IOB2 data; the slow real-data check."""

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from helpers import assert_result_round_trip, write_split
from metalm.errors import ConfigError, DataError
from metalm.checkpoint import resolve_model_dir
from metalm.errors import MetalmError
from metalm.eval_results import NerResult
from metalm.evaluation.ner import format_ner_table, length_batches, rows_of, run_ner, save_result
from metalm.model import build_model
from metalm.run_dir import RunDir
from metalm.tokenizer import special_token_ids, train_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ner")
    data = root / "uner"
    write_split(data / "aa" / "train.iob2", 160, 1)
    write_split(data / "aa" / "dev.iob2", 30, 2)
    write_split(data / "aa" / "test.iob2", 40, 3)
    write_split(data / "bb" / "dev.iob2", 60, 4)  # no train file
    write_split(data / "bb" / "test.iob2", 30, 5)
    write_split(data / "zz" / "test.iob2", 30, 6, cjk=True)
    texts = [line.split("= ", 1)[1] for line in (data / "aa" / "train.iob2").read_text().splitlines() if line.startswith("# text")]
    tok = train_tokenizer(texts + ["北京 是"], vocab_size=300)
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=len(tok), special_token_ids=special_token_ids(tok))
    run = root / "run"
    model.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "config.yaml").write_text("{}\n")  # marks a run directory
    return run, data


def test_run_ner_result_structure(setup):
    run, data = setup
    res = run_ner(run, data, "aa", ["aa", "zz"], epochs=1, max_train_sentences=100, progress=False, max_length=12)
    cfg = res["config"]
    assert cfg["train_split"] == "train" and cfg["lr"] == 3e-5 and cfg["mode"] == "finetune"  # paper defaults
    assert cfg["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert cfg["checkpoint"] == str(run / "final") and cfg["context_prefix"] == ["<|eos|>"]
    assert res["data"]["aa"]["train"]["sentences"] == 100 and res["data"]["zz"]["test"]["sentences"] == 30
    assert any("first 100 of 160" in n for n in res["notes"])
    assert res["data"]["aa"]["test"]["split_sentences"] > 0  # max_length 12 forces chunking
    assert any("split into chunks" in n for n in res["notes"])
    assert len(res["runs"]) == 1 and len(res["runs"][0]["train_loss"]) == 1
    for lang in ("aa", "zz"):
        sc = res["runs"][0]["scores"][lang]
        assert 0.0 <= sc["f1"] <= 1.0 and 0.0 <= sc["strict"]["f1"] <= 1.0
        assert sc["sentences"] == 30 if lang == "zz" else 40
        assert set(res["summary"][lang]) == {"f1", "precision", "recall", "strict_f1", "per_type_f1"}
        assert res["baseline_all_o"][lang] == 0.0
    assert res["warnings"]["count"] == 0
    json.dumps(res)
    path = save_result(res, RunDir(run))
    assert path == run / "eval" / "ner-aa.json" and json.loads(path.read_text())["config"]["train_lang"] == "aa"
    assert set(assert_result_round_trip(NerResult, path).summary) == {"aa", "zz"}
    assert "aa (in-language)" in format_ner_table(res) and "zz (zero-shot)" in format_ner_table(res)


def test_probe_learns_and_seeds_vary(setup):
    run, data = setup
    t0 = time.perf_counter()
    res = run_ner(run, data, "aa", ["aa"], mode="probe", seeds=2, epochs=20, progress=False, select_best_on_dev=True)
    assert time.perf_counter() - t0 < 30
    assert res["config"]["lr"] == 1e-2  # the probe's default
    runs = res["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["dev_f1"]) == 20 and 1 <= r["best_epoch"] <= 20 for r in runs)
    assert runs[0]["train_loss"] != runs[1]["train_loss"]
    assert runs[0]["train_loss"][-1] < runs[0]["train_loss"][0]
    # a linear head on a random nano model's features still finds these entities: F1 well above all-O
    assert res["summary"]["aa"]["f1"]["mean"] > 0.3
    assert res["summary"]["aa"]["f1"]["n"] == 2
    path = save_result(res, RunDir(run))
    assert path.name == "ner-aa-probe.json"
    stored = assert_result_round_trip(NerResult, path)
    assert stored.config["mode"] == "probe" and stored.summary["aa"].f1.n == 2
    again = run_ner(run, data, "aa", ["aa"], mode="probe", seed=1, epochs=20, progress=False, select_best_on_dev=True)
    assert again["runs"][0]["train_loss"] == runs[1]["train_loss"]  # a seed reproduces its run
    assert again["runs"][0]["scores"] == runs[1]["scores"]


def test_finetune_learns_on_synthetic_data(setup):
    run, data = setup
    res = run_ner(run, data, "aa", ["aa"], epochs=4, lr=3e-3, progress=False)
    assert res["summary"]["aa"]["f1"]["mean"] > 0.3
    short = [run_ner(run, data, "aa", ["aa"], epochs=1, lr=3e-3, progress=False, max_train_sentences=40) for _ in range(2)]
    assert short[0]["runs"][0]["train_loss"] == short[1]["runs"][0]["train_loss"]  # seeded: reproducible


def test_language_without_train_file_uses_dev(setup, caplog):
    run, data = setup
    with caplog.at_level(logging.INFO, logger="metalm"):
        res = run_ner(run / "final", data, "bb", ["bb"], epochs=1, progress=True)
    assert res["config"]["train_split"] == "dev"
    assert any("no train.iob2" in n for n in res["notes"])
    said = caplog.text
    assert "has no train.iob2: training on dev.iob2" in said and "seed 0" in said  # said, not silent
    with pytest.raises(ConfigError, match="select_best_on_dev"):
        run_ner(run, data, "bb", ["bb"], epochs=1, progress=False, select_best_on_dev=True)


def test_bad_arguments(setup, tmp_path):
    run, data = setup
    with pytest.raises(ConfigError, match="ner.mode"):
        run_ner(run, data, "aa", mode="lora")
    with pytest.raises(ConfigError, match="ner.epochs"):
        run_ner(run, data, "aa", epochs=0)
    with pytest.raises(DataError, match="no folder for language 'qq'"):
        run_ner(run, data, "aa", ["qq"], progress=False)
    with pytest.raises(MetalmError, match="neither a metalm run directory nor a save_pretrained checkpoint"):
        resolve_model_dir(tmp_path)
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(MetalmError, match="has no final model and no checkpoint yet"):
        resolve_model_dir(tmp_path)


def test_batching_helpers():
    lengths = torch.tensor([5, 1, 9, 3, 7, 2, 8])
    sorted_batches = length_batches(lengths, 3)
    assert [lengths[b].tolist() for b in sorted_batches] == [[1, 2, 3], [5, 7, 8], [9]]
    g = torch.Generator().manual_seed(0)
    shuffled = length_batches(lengths, 3, g)
    assert sorted(torch.cat(shuffled).tolist()) == list(range(7))
    offsets = torch.tensor([0, 2, 5, 6])
    assert rows_of(offsets, torch.tensor([2, 0, 1])).tolist() == [5, 0, 1, 2, 3, 4]


UNER = Path("/work/shared/data/uner")


@pytest.mark.slow
@pytest.mark.skipif(not (UNER / "en").is_dir(), reason=f"shared Universal NER data not found at {UNER}")
def test_finetune_nano_on_english_dev_beats_all_o(tmp_path):
    """Fine-tune a randomly initialised nano model on UNER English dev, test on English test."""
    from metalm.evaluation.iob2 import load_language

    torch.set_num_threads(1)
    texts = [s.text for s in load_language(UNER, "en", "dev")]
    tok = train_tokenizer(texts, vocab_size=2048)
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=len(tok), special_token_ids=special_token_ids(tok))
    model.save_pretrained(tmp_path / "final")
    tok.save_pretrained(tmp_path / "final")
    (tmp_path / "config.yaml").write_text("{}\n")  # marks a run directory
    t0 = time.perf_counter()
    res = run_ner(tmp_path, UNER, "en", ["en"], epochs=5, lr=1e-3, progress=False)
    elapsed = time.perf_counter() - t0
    strict = res["summary"]["en"]["strict_f1"]["mean"]
    print(f"\nnano, en dev → en test, 5 epochs lr 1e-3: F1 {res['summary']['en']['f1']['mean']:.3f}, strict F1 {strict:.3f}, {elapsed:.0f}s")
    assert res["config"]["train_split"] == "dev"
    assert strict > 0.05
