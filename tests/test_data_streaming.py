"""Streaming tokenization into the token store (DESIGN 2.9): same tokens as before, in parallel or
not, resumable after a kill; pretokenized sources; the token budget; Hub streaming."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import data_cfg, make_corpus, tiny_overrides, write_corpus
from metalm.config import DataConfig
from metalm.data import PackedSequences, TrainBatches, encode, prepare_corpus, tokenization
from metalm.errors import ConfigError, DataError


def digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# Digests of the token arrays and of the first batches, written by the pipeline before streaming
# tokenization (commit 0b48477, token cache format 1) on the test corpus: the new pipeline must
# give the same tokens, documents and batches.
PINNED = {
    "separate": (42208, 40, 4302, 4, "c4edda513f8baf7d", "f21273f7e8570c2d", "b23d995029a350d5", "ff4ec66735046677",
                 "58f11f86c0f3acdc"),
    "holdout": (41170, 39, 1038, 1, "cecb79ed93fa6c8d", "a390257f28b2a436", "6996899859c8b952", "4403aed1f2c35467",
                "f0fd336074ab238e"),
    "single": (41402, 1, 845, 1, "5370c9698cc39fb4", "e3721753ab4581b5", "2bc6a9a3546cbf13", "41e693412a7b07e1",
               "ba062597dcba818e"),
}


def _variants(corpus: Path) -> dict[str, DataConfig]:
    return {"separate": data_cfg(corpus / "train", corpus / "validation"),
            "holdout": data_cfg(corpus / "train"),
            "single": data_cfg(corpus / "train", txt_documents="file")}


def _fingerprint(c) -> tuple:
    b = TrainBatches(PackedSequences(c.train, 32), 4, 0)
    return (len(c.train), c.train.n_docs, len(c.validation), c.validation.n_docs, digest(c.train.tokens),
            digest(np.asarray(c.train.doc_offsets)), digest(c.validation.tokens),
            digest(np.asarray(c.validation.doc_offsets)), digest(np.stack([b.batch(s) for s in range(3)])))


@pytest.mark.parametrize("parallel", [False, True], ids=["one process", "two processes"])
def test_small_corpus_gives_the_tokens_and_batches_of_the_previous_pipeline(tmp_path, monkeypatch, parallel):
    corpus = make_corpus(tmp_path / "corpus")
    if parallel:
        monkeypatch.setattr(encode, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(encode, "BATCH_CHARS", 20_000)  # several tasks in flight
    for name, cfg in _variants(corpus).items():
        cfg = cfg.model_copy(update={"num_proc": 2 if parallel else 1})
        assert _fingerprint(prepare_corpus(cfg, str(tmp_path / f"cache-{parallel}"))) == PINNED[name], name


def test_entry_layout_and_description(corpus_dir, tmp_path):
    c = prepare_corpus(data_cfg(corpus_dir / "train", corpus_dir / "validation"), str(tmp_path / "cache"))
    entry = Path(c.info["cache"])
    assert sorted(p.name for p in entry.iterdir()) == ["info.json", "train.bin", "train_docs.bin",
                                                       "validation.bin", "validation_docs.bin"]
    assert isinstance(c.train.tokens, np.memmap) and isinstance(c.train.doc_offsets, np.memmap)
    (src,) = [s for s in c.info["sources"] if s["split"] == "data.train"]
    assert src["kind"] == "text" and src["tokens"] == len(c.train) and src["documents"] == 40
    assert c.info["tokens"] == len(c.train) + len(c.validation)
    assert not list(entry.parent.glob("*.partial"))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from metalm.config import DataConfig
    from metalm.data import encode, prepare_corpus, tokenization
    from metalm.data.token_writer import SplitWriter
    tokenization.COMMIT_TOKENS = 1
    encode.BATCH_CHARS = 5_000
    calls = {"n": 0}
    write = SplitWriter.write
    def dying_write(self, tokens, ends):
        calls["n"] += 1
        if calls["n"] == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, tokens, ends)
    SplitWriter.write = dying_write
    prepare_corpus(DataConfig(train=sys.argv[1], vocab_size=300, num_proc=1), sys.argv[2])
""")


def test_a_kill_during_tokenization_leaves_no_complete_entry_and_a_rerun_resumes(tmp_path, monkeypatch):
    write_corpus(tmp_path / "train.txt", n_docs=120, seed=3)
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "train.txt"), str(cache), "9"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    tokens_dir = cache / "tokens"
    assert not [p for p in tokens_dir.iterdir() if (p / "info.json").exists()]  # nothing looks complete
    (partial,) = tokens_dir.glob("*.partial")
    manifest = json.loads((partial / "progress.json").read_text())
    assert manifest["units"] > 0 and manifest["writers"]["train"]["tokens"] > 0

    monkeypatch.setattr(tokenization, "COMMIT_TOKENS", 1)
    monkeypatch.setattr(encode, "BATCH_CHARS", 5_000)
    encoded = []
    call = encode.Encoder.__call__
    monkeypatch.setattr(encode.Encoder, "__call__", lambda self, b: encoded.append(1) or call(self, b))
    resumed = prepare_corpus(data_cfg(tmp_path / "train.txt", num_proc=1), str(cache))
    assert not partial.exists() and (Path(resumed.info["cache"]) / "info.json").is_file()
    n_resumed = len(encoded)
    fresh = prepare_corpus(data_cfg(tmp_path / "train.txt", num_proc=1), str(tmp_path / "fresh-cache"))
    n_fresh = len(encoded) - n_resumed
    assert n_resumed > 0 and n_resumed == n_fresh - manifest["units"]  # committed batches were not encoded again
    for split in ("train", "validation"):
        a, b = getattr(resumed, split), getattr(fresh, split)
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.doc_offsets, b.doc_offsets)


def test_bad_data_leaves_nothing_to_resume(tmp_path):
    (tmp_path / "a.txt").write_text("fine text here\n\nmore of it\n")
    (tmp_path / "b.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="b.txt: not valid UTF-8"):
        prepare_corpus(data_cfg(tmp_path, tokenizer=None), str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob("*.partial"))


# -- pretokenized sources -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from metalm.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tok")
    write_corpus(root / "text.txt", n_docs=30, seed=5)
    tok = train_tokenizer([root.joinpath("text.txt").read_text()], 300)
    tok.save_pretrained(root / "tok")
    return root / "tok"


def _records(n: int, eos: int, seed: int = 0) -> list[list[int]]:
    """n token-id records of random lengths over ids 5..250; every third ends with EOS already."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids = rng.integers(5, 250, size=int(rng.integers(20, 200))).tolist()
        out.append(ids + [eos] if i % 3 == 0 else ids)
    return out


def _eos(tokenizer_dir: Path) -> int:
    from metalm.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir).eos_token_id


def _write_parquet(path: Path, records: list[list[int]], column: str = "input_ids") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({column: pa.array(records, pa.list_(pa.int32()))}), path, row_group_size=50)


def test_parquet_input_ids_read_as_tokens_with_one_eod_per_record(tmp_path, tokenizer_dir):
    eos = _eos(tokenizer_dir)
    records = _records(300, eos)
    _write_parquet(tmp_path / "train.parquet", records)
    c = prepare_corpus(data_cfg(tmp_path / "train.parquet", tokenizer=str(tokenizer_dir)), str(tmp_path / "cache"))
    expected = [r if r[-1] == eos else r + [eos] for r in records]
    assert c.info["tokens"] == sum(map(len, records)) + sum(r[-1] != eos for r in records)
    (src,) = c.info["sources"]
    assert src == {"source": str(tmp_path / "train.parquet"), "split": "data.train", "kind": "tokens",
                   "documents": 300, "tokens": c.info["tokens"], "eod_added": 200}
    held = tokenization.held_out(np.arange(300), 0.02)
    train = np.concatenate([expected[i] for i in range(300) if not held[i]])
    assert np.array_equal(np.asarray(c.train.tokens), train)
    assert c.train.n_docs == 300 - held.sum() and c.validation.n_docs == held.sum()


def test_jsonl_arrow_npy_and_bin_token_sources(tmp_path, tokenizer_dir):
    import pyarrow as pa

    eos = _eos(tokenizer_dir)
    records = _records(40, eos, seed=1)
    flat = np.concatenate([np.asarray(r + [eos] if r[-1] != eos else r) for r in records]).astype(np.uint16)
    with open(tmp_path / "a.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({"input_ids": r}) + "\n")
    with pa.OSFile(str(tmp_path / "b.arrow"), "wb") as sink:  # IPC stream, as `datasets` saves
        table = pa.table({"input_ids": pa.array(records, pa.list_(pa.int64()))})
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    np.save(tmp_path / "c.npy", flat[:-1])  # no final EOS: one is appended
    flat.tofile(tmp_path / "d.bin")
    for name in ("a.jsonl", "b.arrow", "c.npy", "d.bin"):
        c = prepare_corpus(data_cfg(tmp_path / name, tokenizer=str(tokenizer_dir), val_fraction=0.5),
                           str(tmp_path / "cache"))
        both = sorted([np.asarray(c.train.tokens[a:b]).tolist() for a, b in zip(c.train.doc_offsets[:-1], c.train.doc_offsets[1:])]
                      + [np.asarray(c.validation.tokens[a:b]).tolist()
                         for a, b in zip(c.validation.doc_offsets[:-1], c.validation.doc_offsets[1:])])
        assert both == sorted(np.split(flat, np.flatnonzero(flat == eos)[:-1] + 1)[i].tolist() for i in range(40)), name
        assert c.info["tokens"] == flat.size, name


def test_a_flat_array_read_in_chunks_keeps_documents_whole(tmp_path, tokenizer_dir, monkeypatch):
    from metalm.data import pretokenized

    monkeypatch.setattr(pretokenized, "ARRAY_CHUNK", 37)  # documents straddle chunks
    eos = _eos(tokenizer_dir)
    flat = np.concatenate([np.asarray(r + [eos] if r[-1] != eos else r) for r in _records(30, eos, 2)]).astype(np.uint16)
    flat.tofile(tmp_path / "t.bin")
    c = prepare_corpus(data_cfg(tmp_path / "t.bin", tokenizer=str(tokenizer_dir)), str(tmp_path / "cache"))
    ends = np.flatnonzero(flat == eos) + 1
    held = tokenization.held_out(np.arange(ends.size), 0.02)
    starts = np.concatenate([[0], ends[:-1]])
    train = np.concatenate([flat[a:b] for a, b, h in zip(starts, ends, held) if not h])
    assert np.array_equal(np.asarray(c.train.tokens), train)
    assert np.array_equal(np.diff(np.asarray(c.train.doc_offsets)), (ends - starts)[~held])


@pytest.mark.parametrize("setup, error, message", [
    (lambda p, eos: _write_parquet(p / "t.parquet", [[1, 2, 3], [4, 300, 5]]), DataError,
     r"t.parquet: token id 300 at record 1 is outside the tokenizer's vocabulary \(ids 0..\d+\)"),
    (lambda p, eos: (p / "t.jsonl").write_text('{"input_ids": [1, 2]}\n{"input_ids": [-1]}\n'), DataError,
     r"t.jsonl:2: token id -1 at position 0 is outside"),
    (lambda p, eos: (p / "t.bin").write_bytes(b"\x01\x00\x02"), DataError,
     r"t.bin: 3 bytes is not a whole number of uint16 tokens \(set data.bin_dtype\)"),
    (lambda p, eos: np.array([1, 2, 70000], np.uint32).tofile(p / "t.bin"), DataError,
     r"t.bin: token id 4464 at position 4 is outside"),  # uint32 read as uint16: caught by the range check
    (lambda p, eos: np.save(p / "t.npy", np.array([1, 2, 7, 900])), DataError,
     r"t.npy: token id 900 at position 3 is outside"),
    (lambda p, eos: _write_parquet(p / "t.parquet", [[1, 2]], column="ids"), DataError,
     r"t.parquet: no column 'text' \(text\) or 'input_ids' \(token ids\); set data.text_field or data.token_field"),
    (lambda p, eos: (p / "t.jsonl").write_text('{"input_ids": [1, 2]}\n{"input_ids": "1 2"}\n'), DataError,
     r"t.jsonl:2: record has a non-list-of-integers 'input_ids' field"),
])
def test_pretokenized_errors_name_the_file(tmp_path, tokenizer_dir, setup, error, message):
    setup(tmp_path, _eos(tokenizer_dir))
    (path,) = tmp_path.glob("t.*")
    with pytest.raises(error, match=message):
        prepare_corpus(data_cfg(path, tokenizer=str(tokenizer_dir)), str(tmp_path / "cache"))
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_token_ids_need_data_tokenizer(tmp_path):
    _write_parquet(tmp_path / "t.parquet", [[1, 2, 3]])
    with pytest.raises(ConfigError, match=r"data.tokenizer: .*t.parquet holds token ids; name the tokenizer"):
        prepare_corpus(data_cfg(tmp_path / "t.parquet"), str(tmp_path / "cache"))


def test_parquet_input_ids_train_end_to_end_and_data_json_counts_them(tmp_path, tokenizer_dir, corpus_dir):
    from metalm.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    docs = (corpus_dir / "train" / "train-00.txt").read_text().split("\n\n")
    records = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    _write_parquet(tmp_path / "train.parquet", records)
    run = tmp_path / "run"
    over = tiny_overrides(corpus_dir, run, **{"data.train": str(tmp_path / "train.parquet"),
                                              "data.tokenizer": str(tokenizer_dir), "train.steps": 2})
    (tmp_path / "cfg.yaml").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "metalm", "train", str(tmp_path / "cfg.yaml"), *over],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((run / "data.json").read_text())
    (src,) = [s for s in info["sources"] if s["split"] == "data.train"]
    assert src["kind"] == "tokens" and src["documents"] == len(records)
    assert src["tokens"] == sum(map(len, records)) + len(records)  # none ended with EOS: one each
    assert info["splits"]["train"]["tokens"] == src["tokens"]


# -- the token budget -----------------------------------------------------------------------------------
def test_max_tokens_cuts_the_training_stream_exactly(tmp_path, corpus_dir):
    full = prepare_corpus(data_cfg(corpus_dir / "train"), str(tmp_path / "cache"))
    cut = prepare_corpus(data_cfg(corpus_dir / "train", max_tokens=5000), str(tmp_path / "cache"))
    assert len(cut.train) + len(cut.validation) == 5000
    assert cut.info["max_tokens"] == 5000 and cut.info["max_tokens_reached"] is True
    assert np.array_equal(np.asarray(cut.train.tokens)[:1000], np.asarray(full.train.tokens)[:1000])
    whole = prepare_corpus(data_cfg(corpus_dir / "train", max_tokens=10**9), str(tmp_path / "cache"))
    assert whole.info["max_tokens_reached"] is False and len(whole.train) == len(full.train)


def test_max_tokens_stops_reading_early(tmp_path, monkeypatch):
    write_corpus(tmp_path / "big.txt", n_docs=400, seed=4)
    monkeypatch.setattr(encode, "BATCH_CHARS", 5_000)
    encoded = []
    call = encode.Encoder.__call__
    monkeypatch.setattr(encode.Encoder, "__call__", lambda self, b: encoded.append(len(b.texts)) or call(self, b))
    c = prepare_corpus(data_cfg(tmp_path / "big.txt", max_tokens=3000, num_proc=1), str(tmp_path / "cache"))
    assert len(c.train) + len(c.validation) == 3000
    assert sum(encoded) < 100  # of 400 documents


# -- Hub datasets stream --------------------------------------------------------------------------------
def test_hub_datasets_are_streamed_and_stop_at_the_budget(tmp_path, monkeypatch):
    import datasets

    from metalm.data import sources

    yielded = []

    def gen():
        for i in range(10_000):
            yielded.append(i)
            yield {"text": f"record {i} of a streamed dataset, with some words in it to tokenize."}

    calls = []

    def fake_load(name, config=None, split=None, streaming=False, **kw):
        calls.append(streaming)
        return datasets.IterableDataset.from_generator(gen)

    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(encode, "BATCH_CHARS", 5_000)
    cfg = DataConfig(train="hf:someone/stream", vocab_size=300, max_tokens=4000, num_proc=1,
                     tokenizer_sample_bytes=50_000)  # the tokenizer is trained on the stream's first 50 kB
    c = prepare_corpus(cfg, str(tmp_path / "cache"))
    assert calls and all(calls)  # streaming=True every time
    assert len(c.train) + len(c.validation) == 4000
    assert len(yielded) < 3000  # of 10,000 (records come 1,000 at a time): neither the tokenizer's sample nor the tokens read the stream to its end
    assert c.info["sources"][0]["source"] == "hf:someone/stream@train"


def test_metalm_data_tokenizes_into_the_cache_and_describes_it(tmp_path, corpus_dir, monkeypatch, capsys):
    from metalm.cli import main

    monkeypatch.setenv("METALM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cfg.yaml").write_text("{}")
    argv = ["data", str(tmp_path / "cfg.yaml"), f"data.train={corpus_dir / 'train'}", "data.vocab_size=300",
            "data.max_tokens=4000"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data.max_tokens 4,000 reached" in out and "train-00.txt: text, " in out
    assert main([*argv, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tokens"] == 4000 and Path(info["cache"]).parent == tmp_path / "cache" / "tokens"


def test_stale_interrupted_tokenizations_of_other_data_are_removed(tmp_path, corpus_dir):
    tokens = tmp_path / "cache" / "tokens"
    old, recent = tokens / "aaaa.partial", tokens / "bbbb.partial"
    for partial in (old, recent):
        partial.mkdir(parents=True)
        (partial / "progress.json").write_text("{}")
    week = 8 * 24 * 3600
    os.utime(old / "progress.json", (os.path.getatime(old) - week, os.path.getmtime(old) - week))
    prepare_corpus(data_cfg(corpus_dir / "train"), str(tmp_path / "cache"))
    assert not old.exists() and recent.exists()
