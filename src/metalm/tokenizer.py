"""Byte-level BPE tokenizers: train one on a corpus, or load an existing one.

Every metalm tokenizer is a `transformers.PreTrainedTokenizerFast` with four special tokens:
padding, beginning and end of document, and the mask token that SMLMT episodes need. It is saved
with `save_pretrained`, so `AutoTokenizer.from_pretrained(path)` loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .errors import ConfigError

PAD, BOS, EOS, MASK = "<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, MASK]


# Longest piece of text the BPE trainer sees at once (see `training_pieces`).
MAX_PIECE_CHARS = 256
_LAST_CUT = re.compile(r".*(?=\s\S)", re.DOTALL)  # greedy: up to the last whitespace that precedes a non-space


def training_pieces(texts: Iterable[str], max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """Each text cut into pieces of at most `max_chars` characters, what the BPE trainer is fed.

    Byte-level pre-tokenisation splits text into "words" (a run of letters, digits, punctuation or
    whitespace, with one leading space) and the trainer's cost grows with the square of a word's
    length: 2 MB of text without whitespace (Chinese, Thai, minified data) is one giant word that
    takes many minutes. A piece ends just before a whitespace character that precedes a non-space
    one - where pre-tokenisation splits anyway, so ordinary text gives exactly the same words and
    tokenizer - or, in a longer run without such a place, after `max_chars` characters, which
    bounds every word's length."""
    for text in texts:
        start, end = 0, len(text)
        while end - start > max_chars:
            match = _LAST_CUT.match(text, start + 1, start + max_chars + 1)
            cut = match.end() if match else start + max_chars
            yield text[start:cut]
            start = cut
        if start < end:
            yield text[start:]


def check_vocab_size(vocab_size: int, name: str = "data.vocab_size") -> None:
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ConfigError(f"{name}: {vocab_size} is smaller than the 256 bytes + {len(SPECIAL_TOKENS)} special tokens")


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style pre-tokenisation, no unknown token) on
    `texts`, fed to the trainer in bounded pieces (`training_pieces`)."""
    check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_pieces(texts), trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` (with metalm's special tokens) as a transformers tokenizer."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        mask_token=MASK,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or a Hub name; add missing special tokens.

    A tokenizer without a mask or padding token (most causal-LM tokenizers) gets metalm's; the
    model's embedding matrix is sized from `len(tokenizer)`, so the added ids are trainable.
    """
    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.tokenizer: cannot load tokenizer {str(name_or_path)!r}: {exc}") from None
    missing = {}
    if tok.eos_token is None:
        missing["eos_token"] = EOS
    if tok.bos_token is None:
        missing["bos_token"] = BOS
    if tok.pad_token is None:
        missing["pad_token"] = PAD
    if tok.mask_token is None:
        missing["mask_token"] = MASK
    if missing:
        tok.add_special_tokens(missing)
    return tok


def special_token_ids(tok: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of pad/bos/eos for the model config (mask has no config field)."""
    return {"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id}
