"""Where each SMLMT class candidate occurs in the training corpus: built once, cached by content.

Units are whole words (sentence variant) or token ids (token variant).

Words come from the byte-level BPE tokens: a token is *word-like* when its text, after an optional
leading space, is non-empty and all letters/digits (bytes of a split multi-byte character count as
letters); anything else — punctuation, whitespace, special tokens — is a boundary. A word starts at
a word-like token with a leading space, or at a word-like token after a boundary, and continues
over the following word-like tokens without a leading space. A word's identity is its token
sequence with the leading space of the first token removed when the vocabulary has the bare form
(so "Ġriver" and "river" at a line start are one word). Words longer than `MAX_WORD_TOKENS` tokens
are never candidates. Scripts written without spaces (Chinese) make whole runs of characters one
"word": use the token variant there.

Candidates are units within the frequency band of `MetaConfig`: count ≥ max(band_min_count,
k_shot + q_query), ≤ band_max_count, not among the band_skip_top most frequent units. The index
stores, per candidate, the sorted start positions of all its occurrences (CSR layout).
Everything is vectorised numpy: ~15M tokens index in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

FORMAT_VERSION = 1
MAX_WORD_TOKENS = 8
OTHER, SPACE_WORD, WORDPIECE = 0, 1, 2
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


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


def token_kinds(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: kind (OTHER / SPACE_WORD / WORDPIECE) and canonical id as a word's first token."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    kind = np.zeros(size, dtype=np.int8)
    canon = np.arange(size, dtype=np.int64)
    special = set(tokenizer.all_special_ids) | {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    for piece, idx in vocab.items():
        if idx in special:
            continue
        raw = _token_bytes(piece)
        if raw.startswith(b" ") and _word_like(raw[1:]):
            kind[idx] = SPACE_WORD
            bare = vocab.get(piece[1:]) if len(piece) > 1 else None
            canon[idx] = bare if bare is not None and bare not in special else idx + size
        elif _word_like(raw):
            kind[idx] = WORDPIECE
    return kind, canon


def segment_words(tokens: np.ndarray, kind: np.ndarray, canon: np.ndarray, prev_token: int | None = None):
    """Word occurrences in `tokens`: (starts, lengths, identity hashes), starts ascending.

    `prev_token` is the token just before `tokens[0]` (None: a boundary)."""
    t = np.asarray(tokens, dtype=np.int64)
    n = t.size
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64)
    k = kind[t]
    prev = np.empty_like(k)
    prev[0] = OTHER if prev_token is None else kind[prev_token]
    prev[1:] = k[:-1]
    start = (k == SPACE_WORD) | ((k == WORDPIECE) & (prev == OTHER))
    boundary = np.flatnonzero(start | (k == OTHER))
    nxt = np.append(boundary[1:], n)
    is_start = start[boundary]
    starts, lengths = boundary[is_start], (nxt - boundary)[is_start]
    h = (_FNV_OFFSET ^ (canon[t[starts]].astype(np.uint64) + np.uint64(1))) * _FNV_PRIME
    longer = np.flatnonzero(lengths > 1)  # most words are one token: hash the rest on a shrinking subset
    for j in range(1, MAX_WORD_TOKENS):
        if longer.size == 0:
            break
        tok = t[starts[longer] + j].astype(np.uint64)
        h[longer] = (h[longer] ^ (tok + np.uint64(1))) * _FNV_PRIME
        longer = longer[lengths[longer] > j + 1]
    h = (h ^ lengths.astype(np.uint64)) * _FNV_PRIME
    return starts, lengths, h


@dataclass
class OccurrenceIndex:
    """Class candidates and the sorted start positions of all their occurrences."""

    variant: str  # "sentence" (words) or "token"
    keys: np.ndarray  # [C] word identity hash (uint64) or token id (int64)
    lengths: np.ndarray  # [C] tokens per occurrence
    counts: np.ndarray  # [C] occurrences in the corpus
    offsets: np.ndarray  # [C + 1] CSR offsets into positions
    positions: np.ndarray  # [M] start positions, grouped by candidate, ascending within a candidate

    @property
    def n_candidates(self) -> int:
        return int(self.keys.size)

    def occurrences(self, c: int) -> np.ndarray:
        return self.positions[self.offsets[c]:self.offsets[c + 1]].astype(np.int64)

    def text(self, c: int, tokens: np.ndarray, tokenizer) -> str:
        """The unit's text (decoded from its first occurrence), for reports and tests."""
        p = int(self.positions[self.offsets[c]])
        return tokenizer.decode(np.asarray(tokens[p:p + int(self.lengths[c])], dtype=np.int64).tolist()).strip()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "lengths": self.lengths, "counts": self.counts,
                "offsets": self.offsets, "positions": self.positions}


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
                skip_top: int) -> OccurrenceIndex:
    kind, canon = token_kinds(tokenizer)
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
                               offsets, positions)
    starts, lengths, hashes = segment_words(tokens, kind, canon)
    # One stable sort groups the occurrences by word, positions ascending within each word.
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    first = np.flatnonzero(np.concatenate([[True], sorted_h[1:] != sorted_h[:-1]])) if sorted_h.size else np.zeros(0, np.int64)
    counts = np.diff(np.append(first, sorted_h.size)).astype(np.int64)
    unit_len = lengths[order[first]]
    band = _band(counts, unit_len <= MAX_WORD_TOKENS, min_count, max_count, skip_top)
    cand = np.flatnonzero(band)
    offsets = np.zeros(cand.size + 1, dtype=np.int64)
    np.cumsum(counts[cand], out=offsets[1:])
    pos = starts[order[np.repeat(band, counts)]]
    dtype = np.uint32 if pos.size == 0 or pos.max() < 2**32 else np.int64
    return OccurrenceIndex("sentence", sorted_h[first[cand]], unit_len[cand], counts[cand], offsets, pos.astype(dtype))


def _content_key(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                 skip_top: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([FORMAT_VERSION, variant, min_count, max_count, skip_top, MAX_WORD_TOKENS,
                         str(np.asarray(tokens).dtype), int(np.asarray(tokens).size)]).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(memoryview(np.ascontiguousarray(tokens)).cast("B"))
    return h.hexdigest()


def occurrence_index(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                     skip_top: int, cache_dir: str | Path | None = None) -> OccurrenceIndex:
    """The index, loaded from `cache_dir/occurrences-<hash>.npz` or built and saved there (atomically)."""
    path = None
    if cache_dir is not None:
        key = _content_key(tokens, tokenizer, variant, min_count, max_count, skip_top)
        path = Path(cache_dir) / f"occurrences-{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as z:
                    return OccurrenceIndex(variant, **{k: z[k] for k in z.files})
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: rebuild it
    index = build_index(tokens, tokenizer, variant, min_count, max_count, skip_top)
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
