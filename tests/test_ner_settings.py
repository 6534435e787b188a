"""`metalm eval ner`: its notes and per-epoch progress are said on stderr even with --json, and each
result is stored per settings (a result of other settings is kept, the new one named by its hash)."""

from __future__ import annotations

import json

import torch

from metalm.cli import main
from metalm.model import build_model
from metalm.tokenizer import save_tokenizer, special_token_ids, train_tokenizer
from helpers import write_split


def test_notes_are_logged_and_results_of_other_settings_are_kept(tmp_path, capsys):
    data = tmp_path / "uner"
    write_split(data / "bb" / "dev.iob2", 40, 4)  # no train file: trains on dev, a note
    write_split(data / "bb" / "test.iob2", 20, 5)
    texts = [ln.split("= ", 1)[1] for ln in (data / "bb" / "dev.iob2").read_text().splitlines() if ln.startswith("# text")]
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    run = tmp_path / "run"
    build_model("nano", vocab_size=len(tok), special_token_ids=special_token_ids(tok)).save_pretrained(run / "final")
    save_tokenizer(tok, run / "final")
    (run / "config.yaml").write_text("{}\n")
    args = ["eval", "ner", str(run), "--data", str(data), "--train-lang", "bb", "--json", "--threads", "1"]

    assert main([*args, "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "bb has no train.iob2: training on dev.iob2 instead" in err and "ner: epoch 1/1: loss" in err
    first = json.loads((run / "eval" / "ner-bb.json").read_text())
    assert main([*args, "--epochs", "2"]) == 0
    assert json.loads((run / "eval" / "ner-bb.json").read_text()) == first  # kept
    others = [p for p in (run / "eval").glob("ner-bb-*.json")]
    assert len(others) == 1 and json.loads(others[0].read_text())["config"]["epochs"] == 2
    assert main([*args, "--epochs", "1", "--device", "cpu"]) == 0  # same settings again: replaced, no third file
    assert len(list((run / "eval").glob("ner-bb*.json"))) == 2
    assert main([*args, "--threads", "0"]) == 2
    assert "--threads: must be at least 1" in capsys.readouterr().err
