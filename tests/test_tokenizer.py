"""Byte-level BPE tokenizer: round trip, special tokens, save/load as a transformers tokenizer."""

from __future__ import annotations

from transformers import AutoTokenizer

import json

from metalm.tokenizer import BOS, EOS, MASK, PAD, load_tokenizer, save_tokenizer, train_tokenizer

TEXT = ["The quick brown fox jumps over the lazy dog.", "Zürich, 北京 and São Paulo — naïve café!"] * 50


def test_round_trip_and_special_tokens(tmp_path):
    tok = train_tokenizer(TEXT, 400)
    for text in TEXT[:2] + ["unseen wörds ☃ 🙂 \t tabs\nnew lines"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: lossless, no unknown token
    assert [tok.pad_token, tok.bos_token, tok.eos_token, tok.mask_token] == [PAD, EOS, EOS, MASK]
    specials = [tok.pad_token_id, tok.convert_tokens_to_ids(BOS), tok.eos_token_id, tok.mask_token_id]
    assert specials == [0, 1, 2, 3]  # <|bos|> keeps its id
    assert tok(MASK, add_special_tokens=False)["input_ids"] == [tok.mask_token_id]
    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.mask_token_id == tok.mask_token_id and len(loaded) == len(tok)
    assert loaded.bos_token_id == tok.eos_token_id  # lm-eval's BOS-prefixed documents see training's separator
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


RUNNING = ("Where can the quick brown fox find a lazy dog? In Zürich, said the naïve café owner, "
           "where foxes and dogs can meet.")


def test_split_words_get_the_tokens_they_have_inside_running_text(tmp_path):
    """The Hugging Face token-classification recipe (`is_split_into_words=True` with
    `add_prefix_space=True`) sees each word as it appears after a space in running text."""
    tok = train_tokenizer(TEXT + [RUNNING] * 20, 400)
    save_tokenizer(tok, tmp_path)
    words = RUNNING.split()
    split = AutoTokenizer.from_pretrained(tmp_path, add_prefix_space=True)
    got = split(words, is_split_into_words=True).tokens()
    assert got == [t for w in words for t in tok.tokenize(" " + w)]
    assert tok.tokenize(" can") == ["Ġcan"] and "Ġcan" in got
    plain = AutoTokenizer.from_pretrained(tmp_path)  # without the flag: exactly training's encoding
    assert plain(RUNNING)["input_ids"] == tok(RUNNING)["input_ids"] and len(plain) == len(tok)


def test_tokenizers_saved_before_keep_their_backend_and_get_eos_as_bos(tmp_path):
    """A tokenizer saved by the old wrapper (BOS <|bos|>, generic class) loads with BOS = EOS and the
    same backend (so the token caches keyed by it stay valid); a re-saved one loads identically."""
    tok = train_tokenizer(TEXT, 400)
    tok.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "tokenizer_config.json").read_text())
    config["bos_token"] = BOS
    (tmp_path / "old" / "tokenizer_config.json").write_text(json.dumps(config))
    old = load_tokenizer(tmp_path / "old")
    assert old.bos_token == EOS and old.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    save_tokenizer(old, tmp_path / "new")
    assert json.loads((tmp_path / "new" / "tokenizer_config.json").read_text())["tokenizer_class"] == "GPT2Tokenizer"
    new = load_tokenizer(tmp_path / "new")
    assert new.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str() and len(new) == len(tok)
