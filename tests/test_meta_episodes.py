"""Episode construction: occurrence index, SMLMT (sentence and token variants), LM tasks, rank split."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers import LONG, decoded, make_docs, tokenized

from metalm.meta import MetaConfig, MetaTask
from metalm.meta import occurrences as occ_mod
from metalm.meta.lm_tasks import LMTaskSampler
from metalm.meta.occurrences import build_index, occurrence_index, segment_words, token_kinds
from metalm.model import build_model
from metalm.tokenizer import train_tokenizer

torch.set_num_threads(1)



@pytest.fixture(scope="module")
def corpus():
    return tokenized(make_docs(0))


@pytest.fixture(scope="module")
def model(corpus):
    torch.manual_seed(0)
    return build_model("nano", vocab_size=len(corpus[0]))


def word_occurrences(word: str, text: str, starts: np.ndarray) -> list[tuple[int, int]]:
    """Token ranges [a, b) of the whole-word occurrences of `word` (found by regex on the text)."""
    out = []
    for m in re.finditer(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", text):
        a = int(np.searchsorted(starts, m.start(), side="right")) - 1
        b = int(np.searchsorted(starts, m.end(), side="left"))
        out.append((a, b))
    return out


def test_index_matches_regex_word_counts(corpus):
    tok, tokens, _ = corpus
    text, starts = decoded(tok, tokens)
    index = build_index(tokens, tok, "sentence", 5, None, 0)
    words = [index.text(c, tokens, tok) for c in range(index.n_candidates)]
    assert len(set(words)) == len(words)  # one unit per word
    assert set(LONG) <= set(words)
    lengths = {w: int(index.lengths[c]) for c, w in enumerate(words)}
    assert any(lengths[w] > 1 for w in LONG)  # multi-token words are indexed as one unit
    for c, w in enumerate(words):
        found = word_occurrences(w, text, starts)
        assert int(index.counts[c]) == len(found), w
        assert index.occurrences(c).tolist() == [a for a, _ in found]


def test_word_identity_ignores_leading_space():
    tok = train_tokenizer(["river bank\nriver the river " * 50], 300)
    kind, canon = token_kinds(tok)
    ids = np.asarray(tok("a river\nriver")["input_ids"])
    starts, lengths, hashes = segment_words(ids, kind, canon)
    pieces = [tok.decode(ids[s:s + n].tolist()).strip() for s, n in zip(starts, lengths)]
    assert pieces == ["a", "river", "river"]
    assert hashes[1] == hashes[2] != hashes[0]


def test_band_and_candidates(corpus):
    tok, tokens, _ = corpus
    full = build_index(tokens, tok, "token", 1, None, 0)
    band = build_index(tokens, tok, "token", 30, 400, 10)
    counts = np.bincount(tokens, minlength=len(tok))
    top = set(np.argsort(-counts, kind="stable")[:10].tolist())
    for key, count in zip(band.keys.tolist(), band.counts.tolist()):
        assert 30 <= count <= 400 and key not in top and count == counts[key]
        assert re.search(r"[A-Za-z0-9]", tok.decode([key]))  # no punctuation / whitespace
    assert not set(band.keys.tolist()) & set(tok.all_special_ids)
    assert set(band.keys.tolist()) < set(full.keys.tolist())
    for c in range(band.n_candidates):
        assert (tokens[band.occurrences(c)] == band.keys[c]).all()
        assert band.occurrences(c).size == band.counts[c]


def test_index_is_cached_by_content(corpus, tmp_path, monkeypatch):
    tok, tokens, _ = corpus
    first = occurrence_index(tokens, tok, "sentence", 5, None, 3, tmp_path)
    assert len(list(tmp_path.glob("occurrences-*.npz"))) == 1
    monkeypatch.setattr(occ_mod, "build_index", lambda *a, **k: pytest.fail("rebuilt a cached index"))
    again = occurrence_index(tokens, tok, "sentence", 5, None, 3, tmp_path)
    for name, arr in first.arrays().items():
        assert np.array_equal(arr, again.arrays()[name]), name
    other = tokens.copy()
    other[5] = other[6]
    monkeypatch.undo()
    occurrence_index(other, tok, "sentence", 5, None, 3, tmp_path)
    assert len(list(tmp_path.glob("occurrences-*.npz"))) == 2


def smlmt_cfg(**kw) -> MetaConfig:
    base = dict(enabled=True, task="smlmt", n_way=4, k_shot=3, q_query=2, window_len=24, band_min_count=10,
                band_skip_top=8)
    base.update(kw)
    return MetaConfig(**base)


def check_common(ep, cfg):
    n, k, q, w = cfg.n_way, cfg.k_shot, cfg.q_query, cfg.window_len
    assert ep.n_way == n and len(set(ep.class_ids.tolist())) == n
    assert ep.support_ids.shape == (n * k, w) and ep.query_ids.shape == (n * q, w)
    assert torch.bincount(ep.support_labels, minlength=n).tolist() == [k] * n
    assert torch.bincount(ep.query_labels, minlength=n).tolist() == [q] * n
    spans = sorted(torch.cat([ep.support_origin, ep.query_origin]).tolist())
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # no corpus token shared by two items
    for _ids, target in ((ep.support_ids, ep.support_target), (ep.query_ids, ep.query_target)):
        assert (target >= w // 2).float().mean() > 0.9  # left context of at least half a window
        assert len(set(target.tolist())) > 2  # a different position in different rows


@pytest.mark.parametrize("pool", ["last", "mask"])
def test_sentence_episode(corpus, model, pool):
    tok, tokens, offsets = corpus
    text, starts = decoded(tok, tokens)
    cfg = smlmt_cfg(smlmt_variant="sentence", pool=pool)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=3)
    ep = task.episode(step=7, index=0)
    check_common(ep, cfg)
    words = [task.sampler.occurrences.text(int(c), tokens, tok) for c in ep.class_ids]
    mask = tok.mask_token_id
    for part in ("support", "query"):
        ids, target, labels = getattr(ep, f"{part}_ids"), getattr(ep, f"{part}_target"), getattr(ep, f"{part}_labels")
        origin, source, pos = getattr(ep, f"{part}_origin"), getattr(ep, f"{part}_source"), getattr(ep, f"{part}_pos")
        assert pos.tolist() == (target.tolist() if pool == "mask" else [cfg.window_len - 1] * len(pos))
        for row, t, label, (s, e), src in zip(ids, target.tolist(), labels.tolist(), origin.tolist(), source.tolist()):
            word = words[label]
            found = word_occurrences(word, text, starts)
            # before masking, the labelled occurrence is the class word
            assert src in {a for a, _ in found}
            # the row is the corpus span with every occurrence of the word collapsed to one mask
            expected, i = [], s
            inside = {a: b for a, b in found if s <= a < e}
            assert all(not (a < s < b or a < e < b) for a, b in found)  # no occurrence cut
            while i < e:
                if i in inside:
                    expected.append(mask)
                    i = inside[i]
                else:
                    expected.append(int(tokens[i]))
                    i += 1
            assert row.tolist() == expected
            # after masking, no occurrence of the word is left: all of them are (single) masks
            assert row[t] == mask and int((row == mask).sum()) == len(inside)
            assert src in inside


def test_token_episode(corpus, model):
    tok, tokens, offsets = corpus
    cfg = smlmt_cfg(smlmt_variant="token")
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=3)
    ep = task.episode(step=2, index=1)
    check_common(ep, cfg)
    mask = tok.mask_token_id
    assert set(ep.class_ids.tolist()) <= set(task.sampler.occurrences.keys.tolist())
    for part in ("support", "query"):
        ids, target, labels = getattr(ep, f"{part}_ids"), getattr(ep, f"{part}_target"), getattr(ep, f"{part}_labels")
        origin, source, pos = getattr(ep, f"{part}_origin"), getattr(ep, f"{part}_source"), getattr(ep, f"{part}_pos")
        assert torch.equal(pos, target)  # read at the labelled mask
        for row, t, label, (s, e), src in zip(ids, target.tolist(), labels.tolist(), origin.tolist(), source.tolist()):
            cls = int(ep.class_ids[label])
            assert int(tokens[src]) == cls  # the item carries its class before masking …
            span = tokens[s:e].astype(np.int64)
            assert e - s == cfg.window_len and src - s == t
            expected = np.where(span == cls, mask, span)
            assert row.tolist() == expected.tolist()  # … and nowhere in the row after
            assert cls not in row.tolist()
    # only labelled positions carry labels: one label per row, at a masked class occurrence
    assert ep.support_labels.numel() == ep.support_ids.shape[0]


def test_episodes_are_pure_functions_of_seed_and_step(corpus, model):
    tok, tokens, offsets = corpus
    cfg = smlmt_cfg(smlmt_variant="sentence", episodes_per_step=3)
    a = MetaTask(cfg, tokens, offsets, tok, model, seed=11)
    b = MetaTask(cfg, tokens, offsets, tok, model, seed=11)
    b.episode(5, 0)  # history does not matter
    for step in (0, 4):
        for i in range(3):
            x, y = a.episode(step, i), b.episode(step, i)
            assert torch.equal(x.support_ids, y.support_ids) and torch.equal(x.query_labels, y.query_labels)
            assert torch.equal(x.class_ids, y.class_ids)
    assert not torch.equal(a.episode(0, 0).support_ids, a.episode(1, 0).support_ids)
    assert not torch.equal(a.episode(0, 0).support_ids, a.episode(0, 1).support_ids)
    c = MetaTask(cfg, tokens, offsets, tok, model, seed=12)
    assert not torch.equal(a.episode(0, 0).support_ids, c.episode(0, 0).support_ids)


def test_rank_split_covers_the_global_batch(corpus, model):
    tok, tokens, offsets = corpus
    cfg = smlmt_cfg(smlmt_variant="token", episodes_per_step=4)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    single = task.episodes(6)
    ranks = [task.episodes(6, rank=r, world_size=2) for r in range(2)]
    assert sorted(i for b in ranks for i in b.indices) == single.indices == [0, 1, 2, 3]
    by_index = {i: ep for b in ranks for i, ep in zip(b.indices, b.episodes)}
    for i, ep in zip(single.indices, single.episodes):
        assert torch.equal(ep.support_ids, by_index[i].support_ids)
    with pytest.raises(Exception, match="episodes_per_step"):
        task.episodes(0, rank=0, world_size=8)


def test_lm_task_episode(corpus, model):
    tok, tokens, offsets = corpus
    cfg = MetaConfig(enabled=True, task="lm", k_shot=2, q_query=3, window_len=16)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=1)
    for step in range(5):
        ep = task.episode(step)
        assert ep.support_ids.shape == (2, 17) and ep.query_ids.shape == (3, 17)
        doc = int(ep.class_ids[0])
        spans = torch.cat([ep.support_origin, ep.query_origin]).tolist()
        for (s, e), row in zip(spans, torch.cat([ep.support_ids, ep.query_ids])):
            assert offsets[doc] <= s and e <= offsets[doc + 1]  # all rows from one document
            assert row.tolist() == tokens[s:e].astype(np.int64).tolist()
        spans.sort()
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # support ∩ query = ∅
    assert task.sampler.vocab_stats.unit == "documents" and task.sampler.vocab_stats.n_candidates > 0


def test_lm_task_groups():
    offsets = np.array([0, 50, 60, 200, 230, 400])
    groups = np.array([1, 0, 1, 0, 2])
    sampler = LMTaskSampler(offsets, window=9, k_shot=2, q_query=2, doc_groups=groups)
    # slots of 10 tokens: doc0 5, doc1 1, doc2 14, doc3 3, doc4 17 → group0 4, group1 19, group2 17
    assert sorted(sampler.eligible.tolist()) == [0, 1, 2]
    tokens = np.arange(400)
    for seed in range(10):
        ep = sampler.episode(tokens, np.random.default_rng(seed))
        g = int(ep.class_ids[0])
        members = np.flatnonzero(groups == g)
        for s, e in torch.cat([ep.support_origin, ep.query_origin]).tolist():
            d = int(np.searchsorted(offsets, s, side="right")) - 1
            assert d in members and e <= offsets[d + 1]
