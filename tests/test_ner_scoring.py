"""Entity-level scoring: perfect = 1, all-O = 0, conlleval vs strict IOB2, seeds, table."""

import json

import pytest

from metalm.evaluation.ner_scoring import aggregate, format_ner_table, mean_std, score_ner

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],
    ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"],
    ["O", "O"],
]


def test_perfect_prediction_scores_one():
    s = score_ner(GOLD, GOLD)
    assert s["f1"] == s["precision"] == s["recall"] == 1.0
    assert s["strict"]["f1"] == 1.0
    assert s["per_type"]["LOC"] == {"f1": 1.0, "precision": 1.0, "recall": 1.0, "support": 2}
    assert s["entities"] == 4 and s["sentences"] == 3
    json.dumps(s)  # plain Python numbers


def test_all_o_prediction_scores_zero():
    s = score_ner(GOLD, [["O"] * len(x) for x in GOLD])
    assert s["f1"] == s["precision"] == s["recall"] == s["strict"]["f1"] == 0.0
    assert set(s["per_type"]) == {"PER", "LOC", "ORG"}


def test_partial_prediction_is_micro_averaged():
    pred = [
        ["B-PER", "I-PER", "O", "O", "O"],  # PER right, LOC missed
        ["O", "B-ORG", "I-ORG", "O", "O", "B-PER"],  # ORG boundary wrong, LOC typed as PER
        ["B-LOC", "O"],  # spurious
    ]
    s = score_ner(GOLD, pred)
    assert s["precision"] == pytest.approx(1 / 4) and s["recall"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(1 / 4)
    assert s["per_type"]["PER"]["precision"] == pytest.approx(0.5)


def test_dangling_inside_counts_in_conlleval_mode_only():
    gold = [["O", "B-LOC", "O"]]
    pred = [["O", "I-LOC", "O"]]
    assert score_ner(gold, pred)["f1"] == 1.0  # conlleval reads I-LOC as a LOC entity
    assert score_ner(gold, pred)["strict"]["f1"] == 0.0  # strict IOB2 does not


def test_no_entities_anywhere_scores_zero_without_error():
    s = score_ner([["O", "O"]], [["O", "O"]])
    assert s["f1"] == 0.0 and s["entities"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        score_ner(GOLD, GOLD[:2])
    with pytest.raises(ValueError):
        score_ner([["O"]], [["O", "O"]])


def test_mean_std_and_aggregate():
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    m = mean_std([0.2, 0.4])
    assert m["mean"] == pytest.approx(0.3) and m["std"] == pytest.approx(0.1414213, rel=1e-5)
    a = aggregate([score_ner(GOLD, GOLD), score_ner(GOLD, [["O"] * len(x) for x in GOLD])])
    assert a["f1"]["mean"] == pytest.approx(0.5) and a["strict_f1"]["n"] == 2
    assert a["per_type_f1"]["ORG"]["mean"] == pytest.approx(0.5)


def test_table_lists_each_language_with_mean_and_std():
    perfect, zero = score_ner(GOLD, GOLD), score_ner(GOLD, [["O"] * len(x) for x in GOLD])
    result = {
        "config": {"mode": "finetune", "train_lang": "en", "train_split": "dev", "epochs": 10, "lr": 3e-5, "batch_size": 16},
        "data": {"en": {"dev": {"sentences": 2001}}},
        "runs": [{"scores": {"en": perfect, "da": zero}}, {"scores": {"en": zero, "da": zero}}],
        "summary": {"en": aggregate([perfect, zero]), "da": aggregate([zero, zero])},
        "baseline_all_o": {"en": 0.0, "da": 0.0},
        "notes": ["no train file: dev used"],
        "warnings": {"count": 2},
    }
    table = format_ner_table(result)
    lines = table.splitlines()
    assert "trained on en/dev (2001 sentences)" in lines[0] and "2 seeds" in lines[0]
    assert lines[1].split()[:5] == ["test", "F1", "strict", "F1", "P"]
    en = next(x for x in lines if x.startswith("en (in-language)"))
    assert "50.0 ± 70.7" in en
    assert any(x.startswith("da (zero-shot)") for x in lines)
    assert "note: no train file: dev used" in table and "2 dangling" in table
