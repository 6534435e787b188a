"""Byte-level BPE tokenizer: round trip, special tokens, save/load as a transformers tokenizer."""

from __future__ import annotations

from transformers import AutoTokenizer

from metalm.tokenizer import BOS, EOS, MASK, PAD, train_tokenizer

TEXT = ["The quick brown fox jumps over the lazy dog.", "Zürich, 北京 and São Paulo — naïve café!"] * 50


def test_round_trip_and_special_tokens(tmp_path):
    tok = train_tokenizer(TEXT, 400)
    for text in TEXT[:2] + ["unseen wörds ☃ 🙂 \t tabs\nnew lines"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: lossless, no unknown token
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.mask_token] == [PAD, BOS, EOS, MASK]
    specials = {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id}
    assert len(specials) == 4 and max(specials) < 4
    assert tok(MASK, add_special_tokens=False)["input_ids"] == [tok.mask_token_id]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.mask_token_id == tok.mask_token_id and len(loaded) == len(tok)
    assert loaded(TEXT[1])["input_ids"] == tok(TEXT[1])["input_ids"]


def test_vocab_size_is_respected():
    tok = train_tokenizer(TEXT * 4, 300)
    assert len(tok) <= 300


def test_training_text_is_cut_into_bounded_pieces_without_changing_ordinary_words():
    import random

    from metalm.tokenizer import MAX_PIECE_CHARS, training_pieces

    rng = random.Random(0)
    unbroken = "".join(rng.choice("abcdefghij北京") for _ in range(1_000_000))  # ~1 MB without whitespace
    pieces = list(training_pieces([unbroken, *TEXT]))
    assert max(len(p) for p in pieces) <= MAX_PIECE_CHARS  # no giant "word" reaches the BPE trainer
    assert "".join(pieces) == unbroken + "".join(TEXT)
    prose = " ".join(TEXT) + "  two  spaces\n\nand lines"
    cut = list(training_pieces([prose], 40))
    assert "".join(cut) == prose and all(len(p) <= 40 for p in cut)
    assert all(p[0].isspace() and not p[1].isspace() for p in cut[1:])  # cut just before a word's leading space
    tok = train_tokenizer([unbroken[:200_000]], 300)  # quick (one 200 k-char word took minutes before)
    assert tok.decode(tok(unbroken[:500], add_special_tokens=False)["input_ids"]) == unbroken[:500]
