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
