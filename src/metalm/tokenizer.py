"""Byte-level BPE tokenizers: train one on a corpus, or load an existing one.

Every metalm tokenizer is a `transformers.PreTrainedTokenizerFast` with four special tokens:
padding, `<|bos|>`, end of document and the mask token that SMLMT episodes need. It is saved with
`save_tokenizer`, so `AutoTokenizer.from_pretrained(path)` loads it, and it behaves like GPT-2's:

- BOS is the end-of-document token. Training packs documents separated by EOS and never shows
  `<|bos|>`, so a client that starts a document with BOS (lm-evaluation-harness does) must get the
  token the model saw before every document. `<|bos|>` keeps its id (token ids, models and cached
  tokenizations stay valid); tokenizers saved before this rule are given it on loading.
- The saved `tokenizer_config.json` names `GPT2Tokenizer`, which honours
  `from_pretrained(path, add_prefix_space=True)`: `tok(words, is_split_into_words=True)` then gives
  each word the tokens it has inside running text (with its leading space), as the Hugging Face
  token-classification recipe expects. Without the flag, encoding is exactly training's.

metalm itself loads its own tokenizers with the generic class (`load_tokenizer`), so the backend
- and every cache key derived from it - is the one training used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .atomic import write_json_atomic
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
        bos_token=EOS,  # what precedes every document in training (see the module docstring)
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
    own = is_metalm_tokenizer(name_or_path)
    try:
        tok = (PreTrainedTokenizerFast if own else AutoTokenizer).from_pretrained(str(name_or_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data.tokenizer: cannot load tokenizer {str(name_or_path)!r}: {exc}") from None
    if own:
        tok.bos_token = EOS  # saved before BOS became the document separator
    missing: dict[str, str | AddedToken | Sequence[str | AddedToken]] = {}  # add_special_tokens' parameter
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


def is_metalm_tokenizer(path: str | Path) -> bool:
    """Whether `path` is a local tokenizer made by `train_tokenizer` (its first ids are metalm's
    special tokens)."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return False
    try:
        added = json.loads(file.read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, ValueError):
        return False
    return [(t.get("id"), t.get("content")) for t in added[:len(SPECIAL_TOKENS)]] == list(enumerate(SPECIAL_TOKENS))


def save_tokenizer(tok: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """`save_pretrained`, and for a metalm tokenizer a `tokenizer_config.json` that makes
    `AutoTokenizer` build a GPT-2 tokenizer (honours `add_prefix_space`) with BOS = EOS and no
    unknown token (GPT-2's default one would add a token)."""
    tok.save_pretrained(str(directory))
    if not is_metalm_tokenizer(directory):
        return
    path = Path(directory) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False, unk_token=None, bos_token=EOS)
    config.pop("add_bos_token", None)
    write_json_atomic(path, config, indent=2)


def special_token_ids(tok: PreTrainedTokenizerBase) -> dict[str, int]:
    """Ids of pad/bos/eos for the model config (mask has no config field)."""
    return {"pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id}
