"""Where each SMLMT class candidate occurs in the training corpus: built once, cached by content.

Units are whole words (sentence variant) or token ids (token variant).

Words come from the byte-level BPE tokens: a token is *word-like* when its text, after an optional
leading space, is non-empty and all letters/digits (bytes of a split multi-byte character count as
letters) — except where the character a fragment belongs to, assembled with the neighbouring
token, is not a letter or digit (a curly apostrophe split into two byte tokens is punctuation, so
"John’s" is the word "John", a boundary and the word "s", as a reader sees it); anything else —
punctuation, whitespace, special tokens — is a boundary. A word starts at
a word-like token with a leading space, or at a word-like token after a boundary, and continues
over the following word-like tokens without a leading space. A word's identity is its *text* —
the bytes of its tokens with the leading space removed — whatever its tokenization: " arm" (one
token) and "arm" at a line start (perhaps "ar" + "m" where the vocabulary has no bare "arm") are
one word. With `casefold` the text is lower-cased first, so "Arm" and "arm" are one word too. The
identity is a 64-bit polynomial hash of that text, composed token by token from per-token tables
(so it is vectorised). A word is never a candidate when any of its occurrences is longer than
`MAX_WORD_TOKENS` tokens, nor when its text also stands as a word inside a token that is not
word-like (GPT-2's contraction tokens "'s", "'ll", …: the "s" in "it's" could not be masked). Scripts written without spaces (Chinese) make whole runs of characters one
"word": use the token variant there.

Candidates are units within the frequency band of `MetaConfig`: count ≥ max(band_min_count,
k_shot + q_query), ≤ band_max_count, not among the band_skip_top most frequent units. The index
stores, per candidate, the sorted start positions of all its occurrences and their lengths in
tokens (CSR layout; one word's occurrences may differ in length).
Everything is vectorised numpy: ~15M tokens index in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

FORMAT_VERSION = 2
MAX_WORD_TOKENS = 8
OTHER, SPACE_WORD, WORDPIECE = 0, 1, 2
_FNV_PRIME = np.uint64(0x100000001B3)
_BASE = 0x9E3779B97F4A7C15  # odd multiplier of the polynomial text hash (mod 2^64)
_MASK64 = (1 << 64) - 1


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def _token_bytes(piece: str) -> bytes:
    if all(ch in _BYTE_DECODER for ch in piece):
        return bytes(_BYTE_DECODER[ch] for ch in piece)
    return piece.replace("▁", " ").encode("utf-8")  # SentencePiece-style vocabularies


def _word_like(body: bytes) -> bool:
    """Letters/digits only; bytes of a multi-byte character cut at either end count as letters."""
    if not body:
        return False
    start, end = 0, len(body)
    while start < end and 0x80 <= body[start] <= 0xBF:  # continuation bytes of a character begun before
        start += 1
    # drop an incomplete character at the end
    tail = end - 1
    while tail >= start and 0x80 <= body[tail] <= 0xBF:
        tail -= 1
    if tail >= start and body[tail] >= 0xC0:
        need = 2 if body[tail] < 0xE0 else 3 if body[tail] < 0xF0 else 4
        if end - tail < need:
            end = tail
    try:
        text = body[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isalnum() for ch in text) and (bool(text) or start > 0 or end < len(body))


def _poly_hash(data: bytes) -> tuple[int, int]:
    """(Σ (b_i + 1)·B^(n−1−i) mod 2^64, B^n mod 2^64) of `data`: hash(xy) = hash(x)·B^|y| + hash(y)."""
    h = 0
    for b in data:
        h = (h * _BASE + b + 1) & _MASK64
    return h, pow(_BASE, len(data), 1 << 64)


def _word_identity(data: bytes) -> int:
    """A word's identity from its text, as `segment_words` computes it token by token."""
    h, _ = _poly_hash(data)
    return ((h ^ len(data)) * int(_FNV_PRIME)) & _MASK64


def _fold(raw: bytes, casefold: bool) -> bytes:
    if not casefold:
        return raw
    try:
        return raw.decode("utf-8").lower().encode("utf-8")
    except UnicodeDecodeError:  # part of a multi-byte character: no case to fold
        return raw


def _fragments(raw: bytes) -> tuple[bytes, bytes]:
    """(leading continuation bytes, trailing incomplete character) of a token's bytes."""
    head = len(raw) - len(raw.lstrip(bytes(range(0x80, 0xC0))))
    tail = len(raw) - 1
    while tail >= head and 0x80 <= raw[tail] <= 0xBF:
        tail -= 1
    if tail >= head and raw[tail] >= 0xC0:
        need = 2 if raw[tail] < 0xE0 else 3 if raw[tail] < 0xF0 else 4
        if len(raw) - tail < need:
            return raw[:head], raw[tail:]
    return raw[:head], b""


@dataclass
class TokenText:
    """Per token id, the text-hash pieces of a word's first token (leading space removed) and of a
    continuation token: hash, B^length and length in bytes (see `_poly_hash`); and the fragments of
    multi-byte characters split between tokens (`_fragments`)."""

    first_hash: np.ndarray  # uint64 [V]
    first_len: np.ndarray  # int64 [V]
    hash: np.ndarray  # uint64 [V]
    power: np.ndarray  # uint64 [V]
    length: np.ndarray  # int64 [V]
    head: dict[int, bytes]  # token id → leading continuation bytes (word-like tokens that have them)
    tail: dict[int, bytes]  # token id → trailing incomplete character
    embedded: np.ndarray  # uint64: identities of the words that stand inside non-word-like tokens

    def joined_alnum(self, a: int, b: int) -> bool:
        """Whether the character split between token a and the next token b is a letter or digit
        (True when it is still incomplete: a character split over three tokens)."""
        try:
            text = (self.tail[a] + self.head[b]).decode("utf-8")
        except UnicodeDecodeError:
            return True
        return all(ch.isalnum() for ch in text)


def token_kinds(tokenizer, casefold: bool = False) -> tuple[np.ndarray, TokenText]:
    """Per token id: kind (OTHER / SPACE_WORD / WORDPIECE) and its text-hash pieces (`TokenText`;
    lower-cased text with `casefold`)."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    kind = np.zeros(size, dtype=np.int8)
    text = TokenText(np.zeros(size, np.uint64), np.zeros(size, np.int64), np.zeros(size, np.uint64),
                     np.ones(size, np.uint64), np.zeros(size, np.int64), {}, {}, np.zeros(0, np.uint64))
    embedded = set()
    special = set(tokenizer.all_special_ids) | {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    for piece, idx in vocab.items():
        if idx in special:
            continue
        raw = _token_bytes(piece)
        if raw.startswith(b" ") and _word_like(raw[1:]):
            kind[idx] = SPACE_WORD
        elif _word_like(raw):
            kind[idx] = WORDPIECE
        else:
            for word in re.findall(r"[^\W_]+", raw.decode("utf-8", errors="ignore")):
                embedded.add(_word_identity(_fold(word.encode("utf-8"), casefold)))
            continue
        head, tail = _fragments(raw)
        if head:
            text.head[idx] = head
        if tail:
            text.tail[idx] = tail
        full = _fold(raw, casefold)
        first = _fold(raw[1:], casefold) if kind[idx] == SPACE_WORD else full
        text.hash[idx], text.power[idx] = _poly_hash(full)
        text.length[idx] = len(full)
        text.first_hash[idx], _ = _poly_hash(first)
        text.first_len[idx] = len(first)
    text.embedded = np.array(sorted(embedded), dtype=np.uint64)
    return kind, text


def _resolve_fragments(t: np.ndarray, kind: np.ndarray, text: TokenText) -> np.ndarray:
    """Kinds of the tokens at `t`, where a character split between two word-like tokens that is not
    a letter or digit makes both boundaries (OTHER)."""
    k = kind[t]
    if not text.tail or not text.head or t.size < 2:
        return k
    has_tail = np.zeros(kind.size, dtype=bool)
    has_tail[list(text.tail)] = True
    has_head = np.zeros(kind.size, dtype=bool)
    has_head[list(text.head)] = True
    i = np.flatnonzero(has_tail[t[:-1]] & has_head[t[1:]])
    if i.size == 0:
        return k
    pairs, inverse = np.unique(t[i] * kind.size + t[i + 1], return_inverse=True)
    ok = np.array([text.joined_alnum(int(p // kind.size), int(p % kind.size)) for p in pairs.tolist()])
    bad = i[~ok[inverse]]
    k = k.copy()
    k[bad] = OTHER
    k[bad + 1] = OTHER
    return k


def segment_words(tokens: np.ndarray, kind: np.ndarray, text: TokenText, prev_token: int | None = None):
    """Word occurrences in `tokens`: (starts, lengths, identity hashes), starts ascending.

    `prev_token` is the token just before `tokens[0]` (None: a boundary)."""
    t = np.asarray(tokens, dtype=np.int64)
    n = t.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64)
    ext = t if prev_token is None else np.concatenate([[prev_token], t])
    kx = _resolve_fragments(ext, kind, text)
    k = kx if prev_token is None else kx[1:]
    prev = np.empty_like(k)
    prev[0] = OTHER if prev_token is None else kx[0]
    prev[1:] = k[:-1]
    start = (k == SPACE_WORD) | ((k == WORDPIECE) & (prev == OTHER))
    boundary = np.flatnonzero(start | (k == OTHER))
    nxt = np.append(boundary[1:], n)
    is_start = start[boundary]
    starts, lengths = boundary[is_start], (nxt - boundary)[is_start]
    first = t[starts]
    h = text.first_hash[first].copy()
    n_bytes = text.first_len[first].copy()
    longer = np.flatnonzero(lengths > 1)  # most words are one token: hash the rest on a shrinking subset
    j = 1
    with np.errstate(over="ignore"):
        while longer.size:
            tok = t[starts[longer] + j]
            h[longer] = h[longer] * text.power[tok] + text.hash[tok]
            n_bytes[longer] += text.length[tok]
            j += 1
            longer = longer[lengths[longer] > j]
        h = (h ^ n_bytes.astype(np.uint64)) * _FNV_PRIME
    return starts, lengths, h


@dataclass
class OccurrenceIndex:
    """Class candidates and the sorted start positions of all their occurrences."""

    variant: str  # "sentence" (words) or "token"
    keys: np.ndarray  # [C] word identity hash (uint64) or token id (int64)
    lengths: np.ndarray  # [C] tokens of the unit's first occurrence
    counts: np.ndarray  # [C] occurrences in the corpus
    offsets: np.ndarray  # [C + 1] CSR offsets into positions
    positions: np.ndarray  # [M] start positions, grouped by candidate, ascending within a candidate
    occ_lengths: np.ndarray  # [M] tokens of each occurrence (a word's tokenizations may differ)

    @property
    def n_candidates(self) -> int:
        return int(self.keys.size)

    def occurrences(self, c: int) -> np.ndarray:
        return self.positions[self.offsets[c]:self.offsets[c + 1]].astype(np.int64)

    def occurrence_lengths(self, c: int) -> np.ndarray:
        return self.occ_lengths[self.offsets[c]:self.offsets[c + 1]].astype(np.int64)

    def text(self, c: int, tokens: np.ndarray, tokenizer) -> str:
        """The unit's text (decoded from its first occurrence), for reports and tests."""
        p = int(self.positions[self.offsets[c]])
        return tokenizer.decode(np.asarray(tokens[p:p + int(self.lengths[c])], dtype=np.int64).tolist()).strip()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "lengths": self.lengths, "counts": self.counts,
                "offsets": self.offsets, "positions": self.positions, "occ_lengths": self.occ_lengths}


def _band(counts: np.ndarray, eligible: np.ndarray, min_count: int, max_count: int | None, skip_top: int) -> np.ndarray:
    """Boolean mask of units within the frequency band (skip_top ranks among all counted units)."""
    ok = eligible & (counts >= min_count)
    if max_count is not None:
        ok &= counts <= max_count
    if skip_top:
        order = np.argsort(-counts, kind="stable")
        ok[order[:skip_top]] = False
    return ok


def _csr(unit_of_occ: np.ndarray, pos: np.ndarray, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(unit_of_occ, kind="stable")  # positions stay ascending within a unit
    offsets = np.zeros(n_units + 1, dtype=np.int64)
    np.cumsum(np.bincount(unit_of_occ, minlength=n_units), out=offsets[1:])
    dtype = np.uint32 if pos.size == 0 or pos.max() < 2**32 else np.int64
    return offsets, pos[order].astype(dtype)


def build_index(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                skip_top: int, casefold: bool = False) -> OccurrenceIndex:
    kind, text = token_kinds(tokenizer, casefold)
    tokens = np.asarray(tokens)
    if tokens.size and int(tokens.max()) >= kind.size:
        raise DataError(f"token id {int(tokens.max())} is outside the tokenizer's vocabulary ({kind.size})")
    if variant == "token":
        counts = np.bincount(tokens, minlength=kind.size).astype(np.int64)
        band = _band(counts, kind != OTHER, min_count, max_count, skip_top)
        cand = np.flatnonzero(band)
        local = np.full(kind.size, -1, dtype=np.int64)
        local[cand] = np.arange(cand.size)
        pos = np.flatnonzero(band[tokens])
        offsets, positions = _csr(local[tokens[pos]], pos, cand.size)
        return OccurrenceIndex("token", cand.astype(np.int64), np.ones(cand.size, np.int64), counts[cand],
                               offsets, positions, np.ones(positions.size, np.uint8))
    starts, lengths, hashes = segment_words(tokens, kind, text)
    # One stable sort groups the occurrences by word, positions ascending within each word.
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    first = np.flatnonzero(np.concatenate([[True], sorted_h[1:] != sorted_h[:-1]])) if sorted_h.size else np.zeros(0, np.int64)
    counts = np.diff(np.append(first, sorted_h.size)).astype(np.int64)
    sorted_len = lengths[order]
    unit_len = sorted_len[first]
    longest = np.maximum.reduceat(sorted_len, first) if first.size else np.zeros(0, np.int64)
    eligible = (longest <= MAX_WORD_TOKENS) & ~np.isin(sorted_h[first], text.embedded)
    band = _band(counts, eligible, min_count, max_count, skip_top)
    cand = np.flatnonzero(band)
    offsets = np.zeros(cand.size + 1, dtype=np.int64)
    np.cumsum(counts[cand], out=offsets[1:])
    in_band = np.repeat(band, counts)
    pos = starts[order[in_band]]
    dtype = np.uint32 if pos.size == 0 or pos.max() < 2**32 else np.int64
    return OccurrenceIndex("sentence", sorted_h[first[cand]], unit_len[cand], counts[cand], offsets, pos.astype(dtype),
                           sorted_len[in_band].astype(np.uint8))


def _content_key(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                 skip_top: int, casefold: bool) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT_VERSION, variant, min_count, max_count, skip_top, MAX_WORD_TOKENS, casefold,
                         str(np.asarray(tokens).dtype), int(np.asarray(tokens).size)]).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(memoryview(np.ascontiguousarray(tokens)).cast("B"))
    return h.hexdigest()


def occurrence_index(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                     skip_top: int, cache_dir: str | Path | None = None, casefold: bool = False) -> OccurrenceIndex:
    """The index, loaded from `cache_dir/occurrences-<hash>.npz` or built and saved there (atomically)."""
    path = None
    if cache_dir is not None:
        key = _content_key(tokens, tokenizer, variant, min_count, max_count, skip_top, casefold)
        path = Path(cache_dir) / f"occurrences-{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return OccurrenceIndex(variant, **{k: z[k] for k in z.files})
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: rebuild it
    index = build_index(tokens, tokenizer, variant, min_count, max_count, skip_top, casefold)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".occurrences-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **index.arrays())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return index
