"""Data pipeline: sources, token cache, packing, and batches as pure functions of (seed, step)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import data_cfg
from metalm.data import PackedSequences, TrainBatches, prepare_corpus, validation_batches
from metalm.data.sources import iter_documents, resolve_files
from metalm.data.token_store import TokenArray
from metalm.data.tokenization import held_out
from metalm.errors import DataError


def test_txt_jsonl_parquet_sources(tmp_path):
    (tmp_path / "a.txt").write_text("doc one line one\nline two\n\n\ndoc two\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "json doc"}) + "\n\n" + json.dumps({"text": "second"}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["parquet doc", "  ", "another"]}), tmp_path / "c.parquet")
    assert list(iter_documents(tmp_path / "a.txt")) == ["doc one line one\nline two", "doc two"]
    assert list(iter_documents(tmp_path / "a.txt", txt_documents="file")) == ["doc one line one\nline two\n\n\ndoc two"]
    assert list(iter_documents(tmp_path / "b.jsonl")) == ["json doc", "second"]
    assert list(iter_documents(tmp_path / "c.parquet", text_field="body")) == ["parquet doc", "another"]
    assert resolve_files(str(tmp_path)) == [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"]
    assert resolve_files(str(tmp_path / "*.txt")) == [tmp_path / "a.txt"]
    assert resolve_files([str(tmp_path / "a.txt"), str(tmp_path / "*.txt")]) == [tmp_path / "a.txt"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "data file not found"),
    (lambda p: p.write_text("  \n\n \n"), "no documents"),
    (lambda p: p.write_bytes(b"caf\xe9 ok\n"), r"not valid UTF-8 text \(byte 3\)"),
])
def test_bad_training_files(tmp_path, setup, message):
    path = tmp_path / "train.txt"
    setup(path)
    with pytest.raises(DataError, match=message):
        prepare_corpus(data_cfg(path))


def test_bad_jsonl_and_globs(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: not valid JSON"):
        list(iter_documents(tmp_path / "x.jsonl"))
    (tmp_path / "y.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(DataError, match=r"y.jsonl:1: record has no 'text' field"):
        list(iter_documents(tmp_path / "y.jsonl"))
    with pytest.raises(DataError, match="glob matches no file"):
        resolve_files(str(tmp_path / "*.parquet"))
    (tmp_path / "z.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type .csv"):
        resolve_files(str(tmp_path / "z.csv"))


def test_validation_shorter_than_one_sequence(tmp_path, corpus_dir):
    (tmp_path / "v.txt").write_text("tiny\n")
    corpus = prepare_corpus(data_cfg(corpus_dir / "train", tmp_path / "v.txt"))
    with pytest.raises(DataError, match=r"data.validation: \d+ tokens is shorter than one sequence of train.seq_len \+ 1 = 33"):
        PackedSequences(corpus.validation, 32, "data.validation")


def test_tokens_and_document_offsets(corpus_dir):
    corpus = prepare_corpus(data_cfg(corpus_dir / "train", corpus_dir / "validation"))
    tok, arr = corpus.tokenizer, corpus.train
    docs = list(iter_documents(corpus_dir / "train" / "train-00.txt"))
    assert arr.n_docs == len(docs) == 40
    first = arr.tokens[arr.doc_offsets[0]:arr.doc_offsets[1]]
    assert first[-1] == tok.eos_token_id and tok.decode(first[:-1]) == docs[0]
    assert arr.doc_offsets[-1] == len(arr.tokens)


def test_cache_reuse_skips_tokenization(corpus_dir, monkeypatch):
    cfg = data_cfg(corpus_dir / "train", corpus_dir / "validation")
    first = prepare_corpus(cfg)

    def fail(*a, **k):
        raise AssertionError("tokenized again despite a cache hit")

    monkeypatch.setattr("metalm.data.pipeline.StoreBuilder.build", fail)
    monkeypatch.setattr("metalm.data.pipeline.train_tokenizer", fail)
    second = prepare_corpus(cfg)
    assert np.array_equal(first.train.tokens, second.train.tokens)
    assert first.info["cache"] == second.info["cache"]
    # a change in the bytes of the corpus changes the key
    (corpus_dir / "train" / "train-00.txt").write_text("changed text\n\nand more of it\n" * 20)
    monkeypatch.undo()
    assert prepare_corpus(cfg).info["cache"] != first.info["cache"]


def test_holdout_rule_is_deterministic(tmp_path):
    assert np.flatnonzero(held_out(np.arange(20), 0.1)).tolist() == [5, 15]
    # one document: its last val_fraction of tokens is held out
    (tmp_path / "one.txt").write_text(("word " * 400).strip() + "\n")
    one = prepare_corpus(data_cfg(tmp_path / "one.txt", val_fraction=0.1))
    total = len(one.train) + len(one.validation)
    assert len(one.train) == int(total * 0.9) and one.train.n_docs == one.validation.n_docs == 1
    assert list(one.train.doc_offsets) == [0, len(one.train)]


def make_seqs(n_tokens=1000, seq_len=10):
    arr = TokenArray(np.arange(n_tokens, dtype=np.uint32), np.array([0, n_tokens]))
    return PackedSequences(arr, seq_len)


def test_batches_are_pure_functions_of_seed_and_step():
    seqs = make_seqs()
    a, b = TrainBatches(seqs, 8, seed=3), TrainBatches(seqs, 8, seed=3)
    assert np.array_equal(a.batch(5), b.batch(5))  # same seed & step, fresh object: same batch
    assert not np.array_equal(a.batch(5), a.batch(6))
    assert not np.array_equal(a.batch(5), TrainBatches(seqs, 8, seed=4).batch(5))
    # windows are (seq_len + 1) consecutive tokens starting at a chunk boundary
    w = a.batch(0)
    assert w.shape == (8, 11) and np.all(np.diff(w, axis=1) == 1) and np.all(w[:, 0] % 10 == 0)


def test_each_epoch_visits_every_sequence_once():
    seqs = make_seqs(n_tokens=161, seq_len=10)  # 16 sequences
    batches = TrainBatches(seqs, 4, seed=0)
    epoch0 = np.concatenate([batches.chunk_ids(s) for s in range(4)])
    epoch1 = np.concatenate([batches.chunk_ids(s) for s in range(4, 8)])
    assert sorted(epoch0) == list(range(16)) == sorted(epoch1)
    assert not np.array_equal(epoch0, epoch1)


def test_validation_batches_fixed_and_spread():
    seqs = make_seqs(n_tokens=1001, seq_len=10)  # 100 sequences
    vb = validation_batches(seqs, 4, 3)
    assert [b.shape for b in vb] == [(4, 11)] * 3
    starts = np.concatenate([b[:, 0] for b in vb]) // 10
    assert starts[0] == 0 and starts[-1] == 99 and len(set(starts)) == 12
    assert all(np.array_equal(x, y) for x, y in zip(vb, validation_batches(seqs, 4, 3)))
