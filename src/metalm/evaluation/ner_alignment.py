"""Word → sub-word alignment for token classification with a causal LM's tokenizer.

Each word is tokenized on its own, with a leading space when a space preceded it in the
sentence's text (recovered from the `# text =` line; without it, every word but the first), so
its pieces are the ones the model saw in running text and word boundaries are exact. This does not
rely on `add_prefix_space` or on a fast tokenizer's `word_ids`, which byte-level BPE tokenizers
do not provide reliably for pre-split words. Distinct (word, space) pairs are encoded once, in one
batched call, which is what makes encoding a whole treebank take well under a second.

The first piece of a word carries its label; the others get -100 (ignored by the loss). A
sentence longer than the model's context is split into consecutive chunks at word boundaries
(never truncated silently); predictions are stitched back per word with `stitch`. A single word
longer than a whole chunk keeps its first `budget` pieces (only the first is ever read) and is
counted in `Encoded.truncated_words`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from ..errors import DataError
from .iob2 import Sentence

IGNORE = -100


def spaces_before(tokens: Sequence[str], text: str | None) -> list[bool]:
    """Whether each token was preceded by whitespace in `text`.

    Falls back to "a space before every token but the first" when `text` is missing or the
    tokens cannot be found in it in order."""
    default = [i > 0 for i in range(len(tokens))]
    if not text:
        return default
    out = []
    pos = 0
    for i, tok in enumerate(tokens):
        start = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith(tok, pos):
            return default
        out.append(i > 0 and pos > start)
        pos += len(tok)
    return out


class WordPieces:
    """Sub-word ids of words, cached per (word, preceded-by-space)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.cache: dict[tuple[str, bool], list[int]] = {}
        fallback = tokenizer(" ", add_special_tokens=False)["input_ids"]
        if not fallback:
            unk = tokenizer.unk_token_id
            fallback = [unk if unk is not None else tokenizer.eos_token_id]
        # A word that tokenizes to nothing (an empty token column) still needs a position to
        # carry its label: it gets the pieces of a single space.
        self.fallback = list(fallback)

    def add(self, pairs: Sequence[tuple[str, bool]]) -> None:
        """Encode all pairs not yet cached, in one batched tokenizer call."""
        todo = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if not todo:
            return
        texts = [(" " + w if space else w) for w, space in todo]
        for pair, ids in zip(todo, self.tokenizer(texts, add_special_tokens=False)["input_ids"]):
            self.cache[pair] = list(ids) if ids else self.fallback

    def __call__(self, word: str, space: bool) -> list[int]:
        if (word, space) not in self.cache:
            self.add([(word, space)])
        return self.cache[(word, space)]


@dataclass
class Encoded:
    """Model inputs for a list of sentences: one entry per chunk.

    `labels[c]` is -100 everywhere except at the first piece of each word, where it is the word's
    label id; so `labels[c] != -100` marks the positions whose prediction is a word's."""

    input_ids: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    sentence: list[int] = field(default_factory=list)  # sentence index of each chunk
    word_start: list[int] = field(default_factory=list)  # index of the chunk's first word
    n_words: list[int] = field(default_factory=list)  # words per sentence
    split_sentences: int = 0  # sentences that needed more than one chunk
    truncated_words: int = 0  # words with more pieces than a chunk holds

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(x) for x in self.input_ids], dtype=torch.long)


def encode_sentences(
    sentences: Sequence[Sentence],
    tokenizer: PreTrainedTokenizerBase,
    label_to_id: dict[str, int],
    max_length: int,
    prefix_ids: Sequence[int] = (),
    pieces: WordPieces | None = None,
) -> Encoded:
    """Align words to sub-words and cut sentences into chunks of at most `max_length` ids.

    `prefix_ids` (e.g. the EOS that precedes every document in pretraining) start each chunk and
    are never labelled."""
    budget = max_length - len(prefix_ids)
    if budget < 1:
        raise DataError(f"NER: max_length {max_length} leaves no room after {len(prefix_ids)} prefix token(s)")
    pieces = pieces or WordPieces(tokenizer)
    spaces = [spaces_before(s.tokens, s.text) for s in sentences]
    pieces.add([(w, sp) for s, sps in zip(sentences, spaces) for w, sp in zip(s.tokens, sps)])
    enc = Encoded()
    prefix = list(prefix_ids)

    def close(sent: int, start: int, ids: list[int], firsts: list[int], labels: list[int]) -> None:
        ids_t = torch.tensor(prefix + ids, dtype=torch.long)
        lab = torch.full((len(ids_t),), IGNORE, dtype=torch.long)
        lab[torch.tensor(firsts, dtype=torch.long) + len(prefix)] = torch.tensor(labels, dtype=torch.long)
        enc.input_ids.append(ids_t)
        enc.labels.append(lab)
        enc.sentence.append(sent)
        enc.word_start.append(start)

    for si, (sent, sps) in enumerate(zip(sentences, spaces)):
        try:
            word_labels = [label_to_id[t] for t in sent.tags]
        except KeyError as exc:
            raise DataError(f"{sent.source}: tag {exc.args[0]!r} is not in the label set {sorted(label_to_id)}") from None
        enc.n_words.append(len(sent.tokens))
        ids: list[int] = []
        firsts: list[int] = []
        labels: list[int] = []
        start = 0
        chunks = 0
        for wi, (word, space) in enumerate(zip(sent.tokens, sps)):
            wp = pieces(word, space)
            if len(wp) > budget:
                wp = wp[:budget]
                enc.truncated_words += 1
            if ids and len(ids) + len(wp) > budget:
                close(si, start, ids, firsts, labels)
                chunks += 1
                ids, firsts, labels, start = [], [], [], wi
            firsts.append(len(ids))
            labels.append(word_labels[wi])
            ids.extend(wp)
        close(si, start, ids, firsts, labels)
        enc.split_sentences += chunks > 0
    return enc


def stitch(enc: Encoded, chunk_predictions: Sequence[torch.Tensor]) -> list[list[int]]:
    """Per-sentence word predictions from per-chunk predictions (one id per labelled position,
    in order), concatenated back in word order."""
    out: list[list[int]] = [[] for _ in enc.n_words]
    for c, pred in enumerate(chunk_predictions):
        sent = enc.sentence[c]
        if len(out[sent]) != enc.word_start[c]:
            raise ValueError(f"chunk {c} of sentence {sent} is out of order")
        out[sent].extend(pred.tolist())
    for s, words in enumerate(out):
        if len(words) != enc.n_words[s]:
            raise ValueError(f"sentence {s}: {len(words)} predictions for {enc.n_words[s]} words")
    return out
