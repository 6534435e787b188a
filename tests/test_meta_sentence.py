"""Sentence-variant class words on real prose (ELTeC English): a word is its text, whatever its
tokenization — and, with casefold, whatever its case — and no window shows its class word after
masking. Checked against regular expressions on the decoded text."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from helpers import ELTEC, decoded, tokenized, word_pattern

from metalm.meta import MetaConfig, MetaTask
from metalm.meta.occurrences import build_index
from metalm.model import build_model

torch.set_num_threads(1)



@pytest.fixture(scope="module")
def prose():
    files = sorted(ELTEC.glob("*.txt")) if ELTEC.is_dir() else []
    if not files:
        pytest.skip(f"the ELTeC English corpus is not at {ELTEC}")
    docs = files[0].read_text(encoding="utf-8")[:300_000].split("\n\n")[:-1]
    return tokenized(docs, 1500)  # small vocabulary: many words have no bare (space-less) form


def test_some_words_have_no_bare_form(prose):
    tok, _, _ = prose
    vocab = tok.get_vocab()
    spaced = [p[1:] for p in vocab if p.startswith("Ġ") and len(p) > 3 and p[1:].isalpha()]
    assert sum(w not in vocab for w in spaced) > 50  # the case the text identity is for


@pytest.mark.parametrize("casefold", [False, True])
def test_index_counts_every_spelling_of_a_word(prose, casefold):
    tok, tokens, _ = prose
    text, starts = decoded(tok, tokens)
    index = build_index(tokens, tok, "sentence", 5, None, 20, casefold=casefold)
    rng = np.random.default_rng(0)
    # words spelled by more than one token sequence (" arm" / "ar"+"m", or "Arm" with casefold) are one unit
    mixed = [c for c in range(index.n_candidates) if np.unique(tokens[index.occurrences(c)]).size > 1]
    assert len(mixed) > 10
    for c in rng.choice(index.n_candidates, size=30, replace=False).tolist() + mixed[:10]:
        word = index.text(c, tokens, tok)
        found = [m.start() for m in word_pattern(word, casefold).finditer(text)]
        assert int(index.counts[c]) == len(found), word
        assert (np.searchsorted(starts, found, side="right") - 1).tolist() == index.occurrences(c).tolist()


@pytest.mark.parametrize("casefold", [False, True])
def test_no_window_shows_its_class_word(prose, casefold):
    tok, tokens, offsets = prose
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=len(tok))
    cfg = MetaConfig(enabled=True, task="smlmt", smlmt_variant="sentence", casefold=casefold, n_way=5, k_shot=3,
                     q_query=2, window_len=48, band_min_count=10, band_skip_top=30)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=1)
    index = task.sampler.occurrences
    checked = variants = 0
    for step in range(12):
        ep = task.episode(step)
        words = [index.text(int(c), tokens, tok) for c in ep.class_ids]
        for part in ("support", "query"):
            ids, labels = getattr(ep, f"{part}_ids"), getattr(ep, f"{part}_labels")
            target, source = getattr(ep, f"{part}_target"), getattr(ep, f"{part}_source")
            for row, label, t, src in zip(ids, labels.tolist(), target.tolist(), source.tolist()):
                word = words[label]
                pattern = word_pattern(word, casefold)
                row_text, _ = decoded(tok, row)
                assert not pattern.search(row_text), (word, row_text)  # the class word is gone …
                assert int(row[t]) == tok.mask_token_id
                n = int(index.lengths[int(ep.class_ids[label])]) + 8
                before, _ = decoded(tok, tokens[src:src + n])
                assert pattern.match(before.lstrip(" "))  # … where the corpus had it
                variants += before.lstrip(" ").startswith(word) is False
                checked += 1
    assert checked == 12 * 5 * 5
    if casefold:
        assert variants > 0  # some items are a case variant of the word's first spelling
