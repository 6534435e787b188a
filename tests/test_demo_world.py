"""The generated demo world: deterministic, in the exact formats of the shared data, sized as
documented, with a toy second language that shares names but not common words, and cached
atomically."""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from metalm.data import demo
from metalm.data.demo import generate as gen
from metalm.data.demo import lexicon as lex
from metalm.data.demo import tables
from metalm.data.demo import text as txt
from metalm.data.demo import world as wld

TAGS = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG")}
WORD = re.compile(r"\b[^\W\d_]+\b")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return gen.generate_demo_world(tmp_path_factory.mktemp("demo") / "seed0", seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_iob2(path: Path) -> list[dict]:
    """Parse an .iob2 file strictly; fails on any deviation from the UNER layout."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n"), path
    sentences = []
    for block in text[:-1].split("\n\n"):
        lines = block.split("\n")
        assert lines[0].startswith("# sent_id = ") and lines[1].startswith("# text = "), block[:80]
        tokens, tags = [], []
        for i, line in enumerate(lines[2:], 1):
            cols = line.split("\t")
            assert len(cols) == 5 and cols[0] == str(i) and cols[3:] == ["-", "-"], line
            assert cols[1] and not any(ch.isspace() for ch in cols[1]), line
            assert cols[2] in TAGS, line
            tokens.append(cols[1])
            tags.append(cols[2])
        assert tokens, block
        sentences.append({"id": lines[0][12:], "text": lines[1][9:], "tokens": tokens, "tags": tags})
    return sentences


def _entities(sentence: dict) -> list[tuple[str, str]]:
    out, current = [], None
    for tok, tag in zip(sentence["tokens"], sentence["tags"]):
        if tag.startswith("B-"):
            current = [tag[2:], [tok]]
            out.append(current)
        elif tag.startswith("I-"):
            current[1].append(tok)
    return [(label, " ".join(toks)) for label, toks in out]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world_dir, tmp_path):
    again = _files(gen.generate_demo_world(tmp_path / "again", seed=0))
    assert again == _files(world_dir)
    other = _files(gen.generate_demo_world(tmp_path / "other", seed=1))
    assert other.keys() == again.keys()
    for name in ("corpus/train/train-00.txt", "ner/en/train.iob2", "ner/xx/test.iob2"):
        assert other[name] != again[name], name


def test_corpus_files_have_the_shared_format_and_sizes(world_dir):
    sizes = {"train": (2_000_000, 3_000_000), "validation": (100_000, 150_000)}
    for split, (lo, hi) in sizes.items():
        raw = (world_dir / "corpus" / split / f"{split}-00.txt").read_bytes()
        assert lo <= len(raw) <= hi, (split, len(raw))
        text = raw.decode("utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n") and not text.startswith("\n")
        docs = text[:-1].split("\n\n")
        assert len(docs) > 100
        for doc in docs:
            lines = doc.split("\n")
            assert all(line.strip() and line == line.strip() for line in lines), doc[:200]


def test_validation_documents_are_about_held_out_entities(world_dir):
    world = wld.build_world(0)
    split_of = {e.name: e.split for e in world.subjects()}
    for split in ("train", "validation"):
        text = (world_dir / "corpus" / split / f"{split}-00.txt").read_text(encoding="utf-8")
        titles = [doc.split("\n")[0] for doc in text[:-1].split("\n\n")]
        profile_titles = [t for t in titles if t in split_of]  # profiles start with the subject's name
        assert len(profile_titles) > len(titles) // 3
        assert {split_of[t] for t in profile_titles} == {split}


def test_word_frequencies_span_a_wide_band(world_dir):
    text = (world_dir / "corpus" / "train" / "train-00.txt").read_text(encoding="utf-8")
    counts = Counter(WORD.findall(text))
    assert len(counts) > 1500
    mid_band = [w for w, c in counts.items() if 20 <= c <= 500]
    assert len(mid_band) > 300
    assert max(counts.values()) > 5000


@pytest.mark.parametrize("lang", gen.LANGUAGES)
def test_ner_files_are_strict_iob2_with_all_entity_types(world_dir, lang):
    seen_texts = set()
    for split, expected in txt.NER_SENTENCES.items():
        sentences = _read_iob2(world_dir / "ner" / lang / f"{split}.iob2")
        assert len(sentences) == expected
        assert len({s["id"] for s in sentences}) == expected
        counts = Counter()
        for s in sentences:
            previous = "O"
            for tag in s["tags"]:
                if tag.startswith("I-"):
                    assert previous in (f"B-{tag[2:]}", tag), (s["id"], s["tags"])
                previous = tag
            counts.update(tag[2:] for tag in s["tags"] if tag.startswith("B-"))
            # punctuation is split off words; tokens rebuild the text
            assert "".join(s["tokens"]) == s["text"].replace(" ", ""), s["id"]
            assert all(re.fullmatch(r"\w[\w.,-]*|[^\w\s]", t) for t in s["tokens"]), s["tokens"]
        assert all(counts[t] > 0 for t in ("PER", "LOC", "ORG")), (split, counts)
        texts = {s["text"] for s in sentences}
        assert not texts & seen_texts, "a sentence repeats across splits"
        seen_texts |= texts
    multi_word = [e for s in sentences for e in _entities(s) if " " in e[1]]
    assert multi_word, "no multi-word entity: B-/I- sequences never exercised"


def test_ner_sentences_are_not_copied_from_the_corpus(world_dir):
    corpus = (world_dir / "corpus" / "train" / "train-00.txt").read_text(encoding="utf-8")
    sentences = _read_iob2(world_dir / "ner" / "en" / "train.iob2")
    long_ones = [s["text"] for s in sentences if len(s["tokens"]) >= 8][:150]
    assert long_ones and not [t for t in long_ones if t in corpus]


def test_xx_differs_in_common_words_but_shares_names(world_dir):
    def vocab(lang):
        sentences = _read_iob2(world_dir / "ner" / lang / "train.iob2")
        common = {t.lower() for s in sentences for t, g in zip(s["tokens"], s["tags"]) if g == "O" and t.isalpha()}
        names = {t for s in sentences for t, g in zip(s["tokens"], s["tags"]) if g != "O"}
        return common, names

    en_common, en_names = vocab("en")
    xx_common, xx_names = vocab("xx")
    assert len(en_common & xx_common) <= 0.02 * len(en_common), en_common & xx_common
    assert len(en_names & xx_names) >= 0.5 * min(len(en_names), len(xx_names))
    lexicon = lex.xx_lexicon()
    assert en_common <= set(lexicon), en_common - set(lexicon)  # every common word has a translation
    assert xx_common <= set(lexicon.values())
    assert len(set(lexicon.values())) == len(lexicon) and not set(lexicon.values()) & set(lexicon)


def test_xx_lexicon_does_not_depend_on_the_seed(world_dir, tmp_path):
    before = lex.xx_lexicon()
    lex._xx_lexicon.cache_clear()
    lex.english_vocabulary.cache_clear()
    assert lex.xx_lexicon() == before


def test_corpus_holds_a_small_share_of_xx_documents(world_dir):
    xx_words = set(lex.xx_lexicon().values())
    text = (world_dir / "corpus" / "train" / "train-00.txt").read_text(encoding="utf-8")
    docs = text[:-1].split("\n\n")
    xx_docs = [d for d in docs if sum(w.lower() in xx_words for w in WORD.findall(d)) > 0.4 * len(WORD.findall(d))]
    assert 0.05 * len(docs) < len(xx_docs) < 0.2 * len(docs)
    english = set(lex.english_vocabulary())
    name_words = {w for e in wld.build_world(0).subjects() for w in e.name.split()}
    leftover = {w for d in xx_docs for w in WORD.findall(d) if w.lower() in english}
    assert leftover <= name_words, leftover - name_words  # only names ("Steel" in "Norex Steel") stay


def test_every_corpus_template_can_be_used(world_dir):
    world = wld.build_world(0)
    usable = set()
    for kind, pools in txt.POOLS.items():
        facts = [wld.FACTS[kind](e) for e in world.of(kind)]
        usable |= {t for pool in pools.values() for t in pool if any(txt._usable(t, f) for f in facts)}
    for kind, events in tables.EVENTS.items():
        facts = [{**txt._event_facts(random.Random(0), world, f), **f}
                 for f in (wld.FACTS[kind](e) for e in world.of(kind))]
        usable |= {t for e in events for pool in e.values() for t in pool if any(txt._usable(t, f) for f in facts)}
    assert set(lex.corpus_templates()) <= usable, set(lex.corpus_templates()) - usable


def test_readme_says_synthetic_and_reports_computed_sizes(world_dir):
    readme = (world_dir / "README.md").read_text(encoding="utf-8")
    assert "synthetic demo set" in readme and "nothing about real language" in readme
    train_bytes = (world_dir / "corpus" / "train" / "train-00.txt").stat().st_size
    assert f"{train_bytes:,} bytes" in readme


def test_ensure_demo_world_generates_once_then_reuses(tmp_path, monkeypatch):
    stale = tmp_path / f".tmp-demo-world-v{gen.VERSION}-seed0.killed"  # left by a generation killed long ago
    (stale / "corpus").mkdir(parents=True)
    os.utime(stale, (time.time() - 2 * gen.STALE_TMP_SECONDS,) * 2)
    path = gen.ensure_demo_world(tmp_path, seed=0)
    assert path == tmp_path / f"demo-world-v{gen.VERSION}-seed0"
    assert (path / "corpus" / "train" / "train-00.txt").is_file()
    assert (path / "ner" / "xx" / "test.iob2").is_file() and (path / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp dir left behind

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cached world exists")

    monkeypatch.setattr(gen, "generate_demo_world", fail)
    assert gen.ensure_demo_world(tmp_path, seed=0) == path


def test_interrupted_generation_leaves_no_directory(tmp_path, monkeypatch):
    real_write = gen._write
    calls = []

    def write_then_die(path, text):
        calls.append(path)
        if len(calls) == 3:  # corpus files written, NER half-way: simulate a crash
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(gen, "_write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        gen.ensure_demo_world(tmp_path, seed=0)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []
    assert not gen.demo_world_dir(tmp_path, 0).exists()


def test_the_demo_spec_resolves_to_the_generated_files(tmp_path):
    root = gen.demo_world_dir(tmp_path, 0)
    root.mkdir()  # an existing copy is reused, not regenerated
    train, val, is_demo = demo.resolve_corpus_specs("demo", None, tmp_path)
    assert (train, val, is_demo) == (str(root / "corpus" / "train"), str(root / "corpus" / "validation"), True)
    assert demo.resolve_corpus_specs("demo", "my/val.txt", tmp_path)[1] == "my/val.txt"
    assert demo.resolve_corpus_specs(["a.txt"], None, tmp_path) == (["a.txt"], None, False)
    assert demo.resolve_ner_data("demo", tmp_path) == str(root / "ner")
    assert demo.resolve_ner_data("shared/data/uner", tmp_path) == "shared/data/uner"
