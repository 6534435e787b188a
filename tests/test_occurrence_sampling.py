"""The SMLMT occurrence index over a bounded, seeded sample of the token stream (DESIGN 2.9): only
the sampled regions are read, positions are global, no word is glued or cut at a region edge, and
episodes are cut inside the sampled regions."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from helpers import decoded, make_docs

from metalm.meta import MetaConfig
from metalm.meta import occurrences as occ_mod
from metalm.meta.occurrences import (SAMPLE_CONTEXT, build_index, build_sampled_index, occurrence_index,
                                     region_length, sample_regions, sample_runs, segment_words, token_kinds)
from metalm.meta.sampler import EpisodeSampler
from metalm.tokenizer import train_tokenizer

torch.set_num_threads(1)
INDEX_TOKENS = 16_384  # regions of 1024 tokens: 16 of them



@pytest.fixture(scope="module")
def stream():
    """(tokenizer, ~100k tokens, document offsets): EOS after each document, as the token store has it."""
    docs = make_docs(0, 600, long_share=0.15)
    tok = train_tokenizer(docs[:100], 300)
    ids, offsets = [], [0]
    for enc in tok(docs)["input_ids"]:
        ids += enc + [tok.eos_token_id]
        offsets.append(len(ids))
    tokens = np.asarray(ids, dtype=np.uint16)
    assert tokens.size > 8 * INDEX_TOKENS
    return tok, tokens, np.asarray(offsets, dtype=np.int64)


class Recorder:
    """Token array stand-in (like the training np.memmap) that records every slice read from it and
    refuses to be read whole. `period`: a virtual stream of `length` tokens repeating `base`."""

    def __init__(self, base: np.ndarray, length: int | None = None):
        self.base, self.length = base, len(base) if length is None else length
        self.dtype = base.dtype
        self.reads: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self):
        return (self.length,)

    def __getitem__(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise AssertionError(f"unexpected read {key!r}")
        a, b, _ = key.indices(self.length)
        self.reads.append((a, b))
        if self.length == len(self.base):
            return self.base[a:b]
        return self.base[np.arange(a, b) % len(self.base)]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole token stream was read")


def inside(spans: np.ndarray, a: int, b: int, pad: int = 0) -> bool:
    """Whether [a, b) lies inside one of `spans` ([R, 2], ascending) widened by `pad` either side."""
    r = int(np.searchsorted(spans[:, 0] - pad, a, side="right")) - 1
    return r >= 0 and a >= spans[r, 0] - pad and b <= spans[r, 1] + pad


def sampled_runs(n: int, seed: int, index_tokens: int = INDEX_TOKENS) -> np.ndarray:
    return sample_runs(sample_regions(n, index_tokens, seed), region_length(index_tokens))


def global_words(tok, tokens):
    kind, text = token_kinds(tok)
    return segment_words(tokens, kind, text)


@pytest.mark.parametrize("variant", ["sentence", "token"])
def test_short_stream_is_indexed_whole_as_before(stream, variant, tmp_path):
    tok, tokens, _ = stream
    part = tokens[:20_000]
    direct = build_index(part, tok, variant, 5, None, 3)
    for index_tokens in (20_000, 50_000, None):
        got = occurrence_index(part, tok, variant, 5, None, 3, tmp_path, index_tokens=index_tokens, seed=7)
        assert got.regions is None
        for name, arr in direct.arrays().items():
            assert np.array_equal(arr, got.arrays()[name]) and arr.dtype == got.arrays()[name].dtype, name
    # the cache key of a whole-stream index is the one it always had
    key = occ_mod._content_key(part, tok, variant, 5, None, 3, False)
    assert [p.name for p in tmp_path.glob("occurrences-*.npz")] == [f"occurrences-{key}.npz"]
    assert sample_regions(len(part), len(part), 7) is None


def test_sample_is_a_pure_function_of_seed_length_and_size(stream):
    tok, tokens, _ = stream
    n = len(tokens)
    a, b, c = sample_regions(n, INDEX_TOKENS, 0), sample_regions(n, INDEX_TOKENS, 0), sample_regions(n, INDEX_TOKENS, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    length = region_length(INDEX_TOKENS)
    assert length == 1024 and a.size == INDEX_TOKENS // length
    assert (np.diff(a) >= length).all() and (a % length == 0).all() and a[-1] + length <= n
    assert region_length(16_000_000) == 1 << 16 and region_length(1024) == 1024
    first = build_sampled_index(tokens, sampled_runs(n, 0), tok, "sentence", 3, None, 5)
    again = occurrence_index(tokens, tok, "sentence", 3, None, 5, index_tokens=INDEX_TOKENS, seed=0)
    other = occurrence_index(tokens, tok, "sentence", 3, None, 5, index_tokens=INDEX_TOKENS, seed=1)
    for name, arr in first.arrays().items():
        assert np.array_equal(arr, again.arrays()[name]), name
    assert not np.array_equal(first.regions, other.regions)


def test_token_index_counts_the_sampled_tokens(stream):
    tok, tokens, _ = stream
    runs = sampled_runs(len(tokens), 3)
    index = occurrence_index(tokens, tok, "token", 2, None, 4, index_tokens=INDEX_TOKENS, seed=3)
    assert np.array_equal(index.regions, runs)
    sample = np.concatenate([tokens[s:e] for s, e in runs])
    counts = np.bincount(sample, minlength=len(tok))
    assert index.n_candidates > 20
    assert np.array_equal(index.counts, counts[index.keys])
    for c in range(index.n_candidates):
        pos = index.occurrences(c)
        assert (tokens[pos] == index.keys[c]).all()
        assert all(inside(runs, p, p + 1) for p in pos.tolist())
    # the band counts the sample: the whole-stream band is a different one
    whole = build_index(tokens, tok, "token", 2, None, 4)
    assert whole.counts.sum() > 4 * index.counts.sum()


def test_sentence_index_is_the_stream_words_wholly_inside_the_sample(stream):
    tok, tokens, _ = stream
    for seed in (0, 5):
        runs = sampled_runs(len(tokens), seed)
        index = occurrence_index(tokens, tok, "sentence", 1, None, 0, index_tokens=INDEX_TOKENS, seed=seed)
        st, ln, h = global_words(tok, tokens)  # the whole stream's words: independent of the sample
        end = st + ln
        r = np.searchsorted(runs[:, 0], st, side="right") - 1
        whole = (r >= 0) & (st >= runs[np.maximum(r, 0), 0]) & (end <= runs[np.maximum(r, 0), 1])
        crossing = np.zeros(st.size, bool)
        for s, e in runs.tolist():
            crossing |= ((st < s) & (end > s)) | ((st < e) & (end > e))
        assert crossing.sum() > 0  # some multi-token word crosses a region edge: the rule is exercised
        assert index.n_candidates > 40
        got_pos = set()
        for c in range(index.n_candidates):
            pos, lens = index.occurrences(c), index.occurrence_lengths(c)
            sel = whole & (h == index.keys[c])
            assert np.array_equal(pos, st[sel]) and np.array_equal(lens, ln[sel]), index.text(c, tokens, tok)
            assert index.counts[c] == sel.sum()
            got_pos.update(pos.tolist())
            for p, n in zip(pos.tolist(), lens.tolist()):  # no occurrence spans a region edge
                assert inside(runs, p, p + n) and inside(index.regions, p, p + n)
        assert not got_pos & set(st[crossing].tolist())
        # the spans windows are cut from cut no word either
        for lo, hi in index.regions.tolist():
            assert not (((st < lo) & (end > lo)) | ((st < hi) & (end > hi))).any()
            assert inside(runs, lo, hi)


@pytest.mark.parametrize("variant", ["sentence", "token"])
def test_only_the_sampled_regions_are_read(stream, variant, caplog):
    tok, tokens, _ = stream
    rec = Recorder(tokens)
    with caplog.at_level(logging.INFO, logger="metalm.meta"):
        index = occurrence_index(rec, tok, variant, 3, None, 5, index_tokens=INDEX_TOKENS, seed=2)
    runs = sampled_runs(len(tokens), 2)
    assert rec.reads and all(inside(runs, a, b, SAMPLE_CONTEXT) for a, b in rec.reads)
    reference = occurrence_index(tokens, tok, variant, 3, None, 5, index_tokens=INDEX_TOKENS, seed=2)
    for name, arr in reference.arrays().items():
        assert np.array_equal(arr, index.arrays()[name]), name
    assert f"occurrence index over {INDEX_TOKENS} of {len(tokens)} tokens (16 regions, seed 2)" in caplog.text


def test_huge_stream_reads_a_bounded_sample():
    """A virtual stream of 10^10 tokens: positions beyond 2^32 and reads bounded by index_tokens."""
    docs = make_docs(3, 120, long_share=0.15)
    tok = train_tokenizer(docs, 300)
    base = np.asarray([t for d in tok(docs)["input_ids"] for t in d + [tok.eos_token_id]], dtype=np.uint16)
    rec = Recorder(base, 10**10)
    index = occurrence_index(rec, tok, "sentence", 3, None, 5, index_tokens=INDEX_TOKENS, seed=0)
    runs = sampled_runs(10**10, 0)
    assert sum(b - a for a, b in rec.reads) <= INDEX_TOKENS + 2 * SAMPLE_CONTEXT * len(runs)
    assert index.positions.dtype == np.int64 and index.positions.max() >= 2**32
    c = int(np.argmax(index.counts))
    for p, n in zip(index.occurrences(c).tolist(), index.occurrence_lengths(c).tolist()):
        assert inside(runs, p, p + n)
        assert tok.decode(rec[p:p + n].tolist()).strip() == index.text(c, rec, tok)


def smlmt_cfg(variant: str, **kw) -> MetaConfig:
    return MetaConfig(enabled=True, task="smlmt", smlmt_variant=variant, n_way=4, k_shot=3, q_query=2, window_len=32,
                      band_min_count=8, band_skip_top=10, index_tokens=INDEX_TOKENS, **kw)


@pytest.mark.parametrize("variant", ["sentence", "token"])
def test_episodes_are_cut_from_the_sampled_regions(stream, variant, tmp_path):
    tok, tokens, offsets = stream
    rec = Recorder(tokens)
    sampler = EpisodeSampler(smlmt_cfg(variant), rec, offsets, tok, seed=4, cache_dir=tmp_path)
    index = sampler.occurrences
    assert index.regions is not None
    runs = sampled_runs(len(tokens), 4)
    pattern = {}
    for step in range(8):
        ep = sampler.episode(step)
        for part in ("support", "query"):
            ids, origin = getattr(ep, f"{part}_ids"), getattr(ep, f"{part}_origin")
            labels, source = getattr(ep, f"{part}_labels"), getattr(ep, f"{part}_source")
            for row, (a, b), label, src in zip(ids, origin.tolist(), labels.tolist(), source.tolist()):
                assert inside(index.regions, a, b) and a <= src < b
                if variant == "token":
                    assert not (row == int(ep.class_ids[label])).any()  # every occurrence masked
                    continue
                word = index.text(int(ep.class_ids[label]), tokens, tok)
                pattern.setdefault(word, re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])"))
                text = tok.decode([t for t in row.tolist() if t != tok.mask_token_id])
                assert not pattern[word].search(text), (word, text)  # no window shows its class word
    assert all(inside(runs, a, b, SAMPLE_CONTEXT) for a, b in rec.reads)
    # a second sampler hits the cache: same index, and still only the sampled regions are read
    rec2 = Recorder(tokens)
    again = EpisodeSampler(smlmt_cfg(variant), rec2, offsets, tok, seed=4, cache_dir=tmp_path).occurrences
    for name, arr in index.arrays().items():
        assert np.array_equal(arr, again.arrays()[name]), name


@pytest.mark.parametrize("variant", ["sentence", "token"])
def test_cache_hit_reads_only_the_sample(stream, variant, tmp_path, monkeypatch):
    tok, tokens, _ = stream
    first = occurrence_index(tokens, tok, variant, 3, None, 5, tmp_path, index_tokens=INDEX_TOKENS, seed=9)
    assert len(list(tmp_path.glob("occurrences-*.npz"))) == 1
    runs = sampled_runs(len(tokens), 9)
    outside = next(p for p in range(len(tokens)) if not inside(runs, p, p + 1, SAMPLE_CONTEXT))
    changed = tokens.copy()
    changed[outside] = (int(changed[outside]) + 1) % 250  # a token the sample never reads
    rec = Recorder(changed)
    monkeypatch.setattr(occ_mod, "build_sampled_index", lambda *a, **k: pytest.fail("rebuilt a cached index"))
    again = occurrence_index(rec, tok, variant, 3, None, 5, tmp_path, index_tokens=INDEX_TOKENS, seed=9)
    for name, arr in first.arrays().items():
        assert np.array_equal(arr, again.arrays()[name]), name
    assert rec.reads and all(inside(runs, a, b, SAMPLE_CONTEXT) for a, b in rec.reads)
    monkeypatch.undo()
    changed[runs[0, 0] + 10] = (int(changed[runs[0, 0] + 10]) + 1) % 250  # a sampled token: a new entry
    occurrence_index(changed, tok, variant, 3, None, 5, tmp_path, index_tokens=INDEX_TOKENS, seed=9)
    occurrence_index(tokens, tok, variant, 3, None, 5, tmp_path, index_tokens=INDEX_TOKENS, seed=10)
    assert len(list(tmp_path.glob("occurrences-*.npz"))) == 3


def test_no_sampled_window_shows_its_class_word_in_prose():
    """Real prose (ELTeC English) indexed over a sample: every row is cut inside a sampled region
    and no row shows its class word, whatever that word's tokenization there."""
    from helpers import ELTEC, word_pattern

    files = sorted(ELTEC.glob("*.txt")) if ELTEC.is_dir() else []
    if not files:
        pytest.skip(f"the ELTeC English corpus is not at {ELTEC}")
    docs = files[0].read_text(encoding="utf-8")[:300_000].split("\n\n")[:-1]
    tok = train_tokenizer(docs, 1500)
    ids, offsets = [], [0]
    for enc in tok(docs)["input_ids"]:
        ids += enc + [tok.eos_token_id]
        offsets.append(len(ids))
    tokens = np.asarray(ids, dtype=np.uint16)
    cfg = MetaConfig(enabled=True, task="smlmt", smlmt_variant="sentence", n_way=5, k_shot=3, q_query=2,
                     window_len=48, band_min_count=6, band_skip_top=30, index_tokens=INDEX_TOKENS)
    rec = Recorder(tokens)
    sampler = EpisodeSampler(cfg, rec, np.asarray(offsets), tok, seed=1)
    index = sampler.occurrences
    assert len(tokens) > 3 * INDEX_TOKENS and index.regions is not None
    checked = 0
    for step in range(8):
        ep = sampler.episode(step)
        words = [index.text(int(c), tokens, tok) for c in ep.class_ids]
        for part in ("support", "query"):
            ids_, labels = getattr(ep, f"{part}_ids"), getattr(ep, f"{part}_labels")
            for row, label, (a, b) in zip(ids_, labels.tolist(), getattr(ep, f"{part}_origin").tolist()):
                assert inside(index.regions, a, b)
                row_text, _ = decoded(tok, row)
                assert not word_pattern(words[label], False).search(row_text), (words[label], row_text)
                checked += 1
    assert checked == 8 * 5 * 5
    runs = sampled_runs(len(tokens), 1)
    assert all(inside(runs, a, b, SAMPLE_CONTEXT) for a, b in rec.reads)
