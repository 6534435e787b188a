"""IOB2 reading: the shared Universal NER files, malformed input, dangling I- tags, Hub rows."""

from pathlib import Path

import pytest

from metalm.errors import DataError
from metalm.evaluation.iob2 import (
    count_entities,
    count_warnings,
    dangling_inside,
    load_language,
    read_iob2,
    training_split,
)
from metalm.evaluation.uner_hub import is_hub, sentences_from_dataset

UNER = Path(__file__).resolve().parents[2] / "shared" / "data" / "uner"
if not UNER.is_dir():
    UNER = Path("/work/shared/data/uner")

# SOURCE.md: sentences / entities (entities = B- tags) per split.
TABLE = {
    ("en", "dev"): (2001, 966),
    ("en", "test"): (2077, 1088),
    ("da", "train"): (4383, 3022),
    ("da", "dev"): (564, 379),
    ("da", "test"): (565, 446),
    ("sv", "train"): (4303, 967),
    ("sv", "dev"): (504, 23),
    ("sv", "test"): (1219, 196),
    ("pt", "train"): (7018, 8101),
    ("pt", "dev"): (1172, 1401),
    ("pt", "test"): (1167, 1215),
    ("zh", "train"): (3997, 6136),
    ("zh", "dev"): (500, 810),
    ("zh", "test"): (500, 767),
}


@pytest.mark.skipif(not UNER.is_dir(), reason=f"shared Universal NER data not found at {UNER}")
@pytest.mark.parametrize(("lang", "split"), sorted(TABLE))
def test_shared_files_match_source_table(lang, split):
    sents = load_language(UNER, lang, split)
    n_sent, n_ent = TABLE[(lang, split)]
    assert len(sents) == n_sent
    assert sum(t.startswith("B-") for s in sents for t in s.tags) == n_ent
    # conlleval also opens an entity at each dangling I- (Danish has a few): counted as warnings.
    assert count_entities(sents) == n_ent + count_warnings(sents)
    assert all(len(s.tokens) == len(s.tags) > 0 for s in sents)
    assert all(s.sent_id and s.text for s in sents)
    assert {t for s in sents for t in s.tags} <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}


@pytest.mark.skipif(not UNER.is_dir(), reason=f"shared Universal NER data not found at {UNER}")
def test_shared_danish_dangling_tags_are_reported():
    sents = load_language(UNER, "da", "test")
    assert count_warnings(sents) == 1
    (msg,) = [w for s in sents for w in s.warnings]
    assert "da/test.iob2:6002:" in msg and "I-PER" in msg
    assert training_split(UNER, "en", False)[0] == "dev"  # no English train file: dev, with a note
    assert training_split(UNER, "en", False)[1]
    assert training_split(UNER, "da", False) == ("train", None)


GOOD = "# sent_id = s1\n# text = John lives in New York.\n1\tJohn\tB-PER\t-\t-\n2\tlives\tO\n3\tin\tO\n4\tNew\tB-LOC\n5\tYork\tI-LOC\n6\t.\tO\n\n"


def write(tmp_path, text, name="x.iob2"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_sentences_comments_and_extra_columns(tmp_path):
    path = write(tmp_path, GOOD + "# sent_id = s2\n1\tHi\tO\n")  # no trailing blank line
    sents = read_iob2(path)
    assert [s.sent_id for s in sents] == ["s1", "s2"]
    assert sents[0].tokens == ["John", "lives", "in", "New", "York", "."]
    assert sents[0].tags == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    assert sents[0].text == "John lives in New York."
    assert sents[0].source == f"{path}:3"
    assert count_entities(sents) == 2 and count_warnings(sents) == 0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (GOOD + "1\tonly-two-columns\n", 10, "at least 3 tab-separated columns"),
        (GOOD + "1 space separated O\n", 10, "at least 3 tab-separated columns"),
        (GOOD + "1\tParis\tB-loc\n", 10, "unknown tag 'B-loc'"),
        (GOOD + "1\tParis\tE-LOC\n", 10, "unknown tag 'E-LOC'"),
        (GOOD + "1\tParis\tLOC\n", 10, "unknown tag 'LOC'"),
        ("1\tParis\tS-LOC\n", 1, "unknown tag"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_iob2(path)
    assert f"{path}:{line}:" in str(err.value)
    assert words in str(err.value)


def test_restricted_type_set(tmp_path):
    path = write(tmp_path, GOOD + "1\tX\tB-MISC\n")
    read_iob2(path)  # any upper-case type by default
    with pytest.raises(DataError, match=rf"{path}:10: unknown entity type 'MISC'"):
        read_iob2(path, types={"PER", "LOC", "ORG"})


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_iob2(tmp_path / "nope.iob2")
    with pytest.raises(DataError, match="no sentences"):
        read_iob2(write(tmp_path, ""))
    with pytest.raises(DataError, match="no sentences"):
        read_iob2(write(tmp_path, "# sent_id = a\n# text = b\n\n\n"))
    (tmp_path / "bad.iob2").write_bytes(b"1\t\xff\xfe\tO\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_iob2(tmp_path / "bad.iob2")


def test_language_folders(tmp_path):
    (tmp_path / "xx").mkdir()
    write(tmp_path / "xx", GOOD, "dev.iob2")
    with pytest.raises(DataError, match="no folder for language 'yy'.*found: xx"):
        load_language(tmp_path, "yy", "test")
    with pytest.raises(DataError, match="test.iob2: IOB2 file not found"):
        load_language(tmp_path, "xx", "test")
    split, note = training_split(tmp_path, "xx", use_dev_for_train=False)
    assert split == "dev" and "no train.iob2" in note
    write(tmp_path / "xx", GOOD, "train.iob2")
    assert training_split(tmp_path, "xx", use_dev_for_train=False) == ("train", None)
    assert training_split(tmp_path, "xx", use_dev_for_train=True)[0] == "dev"


def test_dangling_inside_tags_are_accepted_and_counted(tmp_path):
    text = "1\tin\tO\n2\tYork\tI-LOC\n\n1\tAnn\tB-PER\n2\tCorp\tI-ORG\n3\tX\tI-ORG\n\n1\tY\tI-PER\n"
    path = write(tmp_path, text)
    sents = read_iob2(path)
    assert count_warnings(sents) == 3
    assert f"{path}:2:" in sents[0].warnings[0]
    assert f"{path}:5:" in sents[1].warnings[0]
    assert f"{path}:8:" in sents[2].warnings[0]
    assert count_entities(sents) == 4  # conlleval: York, Ann, Corp X, Y
    assert dangling_inside(["B-PER", "I-PER", "I-LOC", "I-LOC", "O", "I-LOC"]) == [2, 5]


def test_hub_rows_map_through_classlabel_names():
    from datasets import ClassLabel, Dataset, Features, List, Value

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    features = Features(
        {"idx": Value("string"), "text": Value("string"), "tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))}
    )
    ds = Dataset.from_dict(
        {"idx": ["a", "b"], "text": ["Ann met Bo", "in Oslo"], "tokens": [["Ann", "met", "Bo"], ["in", "Oslo"]], "ner_tags": [[1, 0, 1], [0, 6]]},
        features=features,
    )
    sents = sentences_from_dataset(ds, "hub/en_ewt/test")
    assert [s.tags for s in sents] == [["B-PER", "O", "B-PER"], ["O", "I-LOC"]]
    assert sents[0].sent_id == "a" and sents[1].text == "in Oslo"
    assert count_warnings(sents) == 1
    assert is_hub("hf:universalner/universal_ner") and not is_hub("/data/uner")
    bad = Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]})
    with pytest.raises(DataError, match="not a sequence of ClassLabel"):
        sentences_from_dataset(bad, "hub/x")
