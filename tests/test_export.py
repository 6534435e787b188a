"""The Hugging Face export: final/ loads with the ecosystem's classes, carries a model card that lists
the run's settings and results (refreshed when an evaluation is stored), and `metalm export
--push-to-hub` uploads it with huggingface_hub (stopped short of the network here)."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi, ModelCard

from helpers import make_corpus, train_tiny
from metalm.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    corpus = make_corpus(root / "corpus")
    assert train_tiny(corpus, root / "run") == 0
    return root / "run"


def test_final_has_a_model_card_with_metadata_settings_and_validation_loss(run):
    card = ModelCard.load(run / "final" / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "metalm" in card.data.tags
    assert "corpus/train" in card.text and "| train.steps | 8 |" in card.text
    val = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r][-1]
    assert f"Final validation loss (step {val['step']}): {val['val_loss']:.4f}" in card.text


def test_the_card_is_refreshed_when_an_evaluation_is_stored(run):
    assert main(["eval", "perplexity", str(run), "--data", str(run.parent / "corpus" / "validation")]) == 0
    loss = json.loads((run / "eval" / "perplexity.json").read_text())["sets"][0]["loss"]
    card = ModelCard.load(run / "final" / "README.md")
    results = {(r.metric_type, r.dataset_name): r.metric_value for r in card.data.eval_results}
    assert results[("loss", "validation")] == pytest.approx(loss, abs=1e-6)


def test_exported_tokenizer_and_model_use_the_training_document_separator_as_bos(run):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "final")
    assert tok.bos_token_id == tok.eos_token_id == AutoConfig.from_pretrained(run / "final").bos_token_id


def test_push_to_hub_uploads_the_final_folder(run, monkeypatch, capsys):
    from huggingface_hub import RepoUrl

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw))
                        or RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    assert main(["export", str(run), "--push-to-hub", "someone/tiny", "--private"]) == 0
    assert calls[0] == ("create", "someone/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    upload = calls[1][1]
    assert upload["folder_path"] == str(run / "final") and upload["repo_id"] == "someone/tiny"
    assert capsys.readouterr().out.strip() == str(run / "final")


def test_export_of_a_directory_without_a_final_model_is_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "no final/ model" in capsys.readouterr().err
