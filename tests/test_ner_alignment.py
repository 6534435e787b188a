"""Word → sub-word alignment: first piece labelled, spaces as in the text, CJK, chunking."""

import pytest
import torch

from metalm.errors import DataError
from metalm.evaluation.iob2 import Sentence
from metalm.evaluation.ner_alignment import IGNORE, WordPieces, encode_sentences, spaces_before, stitch
from metalm.tokenizer import train_tokenizer

LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}
EOS = 2


@pytest.fixture(scope="module")
def tok():
    texts = ["John Smith lives in New York, near the river.", "Ann went to Paris!", "北京是中国的首都。"] * 20
    return train_tokenizer(texts, vocab_size=320)


def pieces_of(tok, enc, c):
    return tok.convert_ids_to_tokens(enc.input_ids[c].tolist())


def test_multi_piece_words_label_the_first_piece_only(tok):
    s = Sentence(["Johnathan", "Smithsonian", "lives", "in", "York", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"], "s",
                 "Johnathan Smithsonian lives in York.")
    enc = encode_sentences([s], tok, LABELS, max_length=100, prefix_ids=[EOS])
    ids, labels = enc.input_ids[0], enc.labels[0]
    assert ids[0] == EOS and labels[0] == IGNORE  # the context prefix is never labelled
    wp = WordPieces(tok)
    expected_ids, expected_labels = [EOS], [IGNORE]
    for i, (word, tag) in enumerate(zip(s.tokens, s.tags)):
        space = 0 < i < 5  # "." follows "York" without a space in the text
        p = wp(word, space)
        expected_ids += p
        expected_labels += [LABELS[tag]] + [IGNORE] * (len(p) - 1)
    assert ids.tolist() == expected_ids and labels.tolist() == expected_labels
    assert len(wp("Johnathan", False)) > 1 and len(wp("Smithsonian", True)) > 1  # really multi-piece
    assert int((labels != IGNORE).sum()) == len(s.tokens)


def test_word_pieces_agree_with_tokenizing_the_text(tok):
    # Byte-level BPE pre-tokenises at spaces and punctuation, so for space-separated text the
    # per-word pieces are exactly the pieces of the whole text.
    text = "Ann went to New York, near the river!"
    words = ["Ann", "went", "to", "New", "York", ",", "near", "the", "river", "!"]
    s = Sentence(words, ["O"] * len(words), "s", text)
    enc = encode_sentences([s], tok, LABELS, max_length=100)
    assert enc.input_ids[0].tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert pieces_of(tok, enc, 0)[enc.labels[0].ne(IGNORE).nonzero()[5].item()] == ","


def test_punctuation_and_spaces_follow_the_text():
    assert spaces_before(["Hi", ",", "Bo", "!"], "Hi, Bo!") == [False, False, True, False]
    assert spaces_before(["北京", "是", "中国"], "北京是中国") == [False, False, False]
    assert spaces_before(["a", "b"], None) == [False, True]
    assert spaces_before(["a", "zzz"], "a b") == [False, True]  # text does not match: default


def test_cjk_words_get_their_multi_byte_pieces(tok):
    # 龍 never occurs in the tokenizer's training text: its 3 UTF-8 bytes are 3 pieces.
    s = Sentence(["北京", "是", "中国", "的", "首都", "龍", "。"], ["B-LOC", "O", "B-LOC", "O", "O", "B-PER", "O"], "z",
                 "北京是中国的首都龍。")
    enc = encode_sentences([s], tok, LABELS, max_length=100)
    wp = WordPieces(tok)
    ids = enc.input_ids[0].tolist()
    assert ids == sum((wp(w, False) for w in s.tokens), [])  # no spaces inserted between Chinese words
    assert tok.decode(ids) == "北京是中国的首都龍。"
    firsts = enc.labels[0].ne(IGNORE).nonzero().flatten().tolist()
    assert enc.labels[0][firsts].tolist() == [3, 0, 3, 0, 0, 1, 0]
    starts, pos = [], 0
    for w in s.tokens:
        starts.append(pos)
        pos += len(wp(w, False))
    assert firsts == starts
    assert len(wp("龍", False)) == 3 and enc.labels[0][firsts[5] + 1 : firsts[5] + 3].tolist() == [IGNORE] * 2


def test_empty_word_still_gets_a_position(tok):
    s = Sentence(["", "Ann"], ["O", "B-PER"], "e")
    enc = encode_sentences([s], tok, LABELS, max_length=10)
    assert enc.labels[0].ne(IGNORE).sum() == 2


def test_long_sentence_is_chunked_and_stitched_back(tok):
    words = (["John", "Smithsonian", "went", "to", "New", "York", ","] * 40)[:250]
    tags = (["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"] * 40)[:250]
    s = Sentence(words, tags, "long")
    short = Sentence(["Ann"], ["B-PER"], "short")
    enc = encode_sentences([short, s, short], tok, LABELS, max_length=16, prefix_ids=[EOS])
    assert enc.split_sentences == 1 and len(enc) > 3
    assert all(len(x) <= 16 and x[0] == EOS for x in enc.input_ids)
    assert enc.sentence[0] == 0 and enc.sentence[-1] == 2 and set(enc.sentence[1:-1]) == {1}
    # chunks cut at word boundaries: each starts with a word's first piece
    assert all(lab[1] != IGNORE for lab in enc.labels)
    # the gold labels read through the chunks and stitched back are the sentence's labels
    per_chunk = [lab[lab != IGNORE] for lab in enc.labels]
    back = stitch(enc, per_chunk)
    assert back[1] == [LABELS[t] for t in tags] and back[0] == back[2] == [1]
    with pytest.raises(ValueError):
        stitch(enc, per_chunk[:-1] + [torch.tensor([], dtype=torch.long)])


def test_word_longer_than_a_chunk_is_cut_and_counted(tok):
    s = Sentence(["Ann", "x" * 40, "Bo"], ["B-PER", "O", "B-PER"], "w")
    enc = encode_sentences([s], tok, LABELS, max_length=5, prefix_ids=[EOS])
    assert enc.truncated_words == 1
    assert stitch(enc, [lab[lab != IGNORE] for lab in enc.labels]) == [[1, 0, 1]]
    with pytest.raises(DataError, match="no room"):
        encode_sentences([s], tok, LABELS, max_length=1, prefix_ids=[EOS])


def test_unknown_tag_is_a_data_error(tok):
    s = Sentence(["Ann"], ["B-ORG"], "u", source="f.iob2:3")
    with pytest.raises(DataError, match=r"f.iob2:3: tag 'B-ORG'"):
        encode_sentences([s], tok, LABELS, max_length=8)
