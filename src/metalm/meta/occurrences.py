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

Bounded sample (DESIGN 2.9): a training stream longer than `meta.index_tokens` tokens is indexed
over a seeded sample of it, never over all tokens (`sample_regions`): `index_tokens // L` regions of
`L` tokens (`region_length`: 2^16, smaller when index_tokens is small), chosen without replacement
among the stream's aligned L-token slots by `np.random.default_rng([seed, _SAMPLE_TAG])` — a pure
function of (seed, stream length, index_tokens). Adjacent chosen slots merge into one run. Only the
runs (each with `SAMPLE_CONTEXT` tokens of context on either side, for the word-boundary rules) are
ever read from the token array, which stays memory-mapped. Positions are global stream positions.
Region edges: a run is segmented with the context tokens around it, so a word that starts inside a
run starts where it does in the whole stream; the index keeps exactly the words that lie wholly
inside a run — a word crossing a run's edge (it may continue beyond it) is dropped, never glued to
a non-adjacent region. The index records, per run, the span episodes may cut their windows from
(`OccurrenceIndex.regions`: the run less any word crossing its edges), so every occurrence of a
class unit inside a window is one the index knows, and masked. Counts — and with them the
frequency band (band_min_count, band_max_count, band_skip_top) — are over the sample: a word needs
band_min_count occurrences *in the sample*. A stream of at most index_tokens tokens is indexed
whole, exactly as before (`build_index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import open_atomic
from ..errors import DataError

FORMAT_VERSION = 2
MAX_WORD_TOKENS = 8
MAX_REGION = 1 << 16  # tokens per sampled region (fewer when index_tokens is small, never below MIN_REGION)
MIN_REGION = 1 << 10
SAMPLE_CONTEXT = 2  # tokens read on either side of a sampled run: exact word boundaries at its edges
_SAMPLE_TAG = 0x534D504C  # "SMPL": the sample's generator stream, apart from the episodes'
log = logging.getLogger("metalm.meta")
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


def segment_words(tokens: np.ndarray, kind: np.ndarray, text: TokenText,
                  prev_token: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    counts: np.ndarray  # [C] occurrences in the corpus (in the sample, for a sampled index)
    offsets: np.ndarray  # [C + 1] CSR offsets into positions
    positions: np.ndarray  # [M] start positions, grouped by candidate, ascending within a candidate
    occ_lengths: np.ndarray  # [M] tokens of each occurrence (a word's tokenizations may differ)
    # [R, 2] int64 [start, end) stream spans a sampled index covers, ascending: windows around an
    # occurrence are cut inside its span. None: the whole stream is indexed.
    regions: np.ndarray | None = None

    @property
    def n_candidates(self) -> int:
        return int(self.keys.size)

    def occurrences(self, c: int) -> np.ndarray:
        return self.positions[self.offsets[c]:self.offsets[c + 1]].astype(np.int64)

    def occurrence_lengths(self, c: int) -> np.ndarray:
        return self.occ_lengths[self.offsets[c]:self.offsets[c + 1]].astype(np.int64)

    def region(self, position: int) -> tuple[int, int] | None:
        """The indexed span [start, end) holding stream position `position` (None: not sampled)."""
        if self.regions is None:
            return None
        r = int(np.searchsorted(self.regions[:, 0], position, side="right")) - 1
        return int(self.regions[r, 0]), int(self.regions[r, 1])

    def text(self, c: int, tokens: np.ndarray, tokenizer) -> str:
        """The unit's text (decoded from its first occurrence), for reports and tests."""
        p = int(self.positions[self.offsets[c]])
        return tokenizer.decode(np.asarray(tokens[p:p + int(self.lengths[c])], dtype=np.int64).tolist()).strip()

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"keys": self.keys, "lengths": self.lengths, "counts": self.counts,
               "offsets": self.offsets, "positions": self.positions, "occ_lengths": self.occ_lengths}
        if self.regions is not None:
            out["regions"] = self.regions
        return out


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


def _check_vocab(tokens: np.ndarray, kind: np.ndarray) -> None:
    if tokens.size and int(tokens.max()) >= kind.size:
        raise DataError(f"token id {int(tokens.max())} is outside the tokenizer's vocabulary ({kind.size})")


def _token_band(counts: np.ndarray, kind: np.ndarray, min_count: int, max_count: int | None, skip_top: int):
    """(band mask over token ids, candidate ids, token id → candidate number or -1)."""
    band = _band(counts, kind != OTHER, min_count, max_count, skip_top)
    cand = np.flatnonzero(band)
    local = np.full(kind.size, -1, dtype=np.int64)
    local[cand] = np.arange(cand.size)
    return band, cand, local


def _word_index(starts: np.ndarray, lengths: np.ndarray, hashes: np.ndarray, text: TokenText, min_count: int,
                max_count: int | None, skip_top: int) -> OccurrenceIndex:
    """The sentence-variant index from the word occurrences (`segment_words`' output, starts ascending)."""
    # One stable sort groups the occurrences by word, positions ascending within each word. (Arrays
    # are dropped once used: callers pass them as temporaries, so this bounds peak memory.)
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    del hashes
    first = np.flatnonzero(np.concatenate([[True], sorted_h[1:] != sorted_h[:-1]])) if sorted_h.size else np.zeros(0, np.int64)
    counts = np.diff(np.append(first, sorted_h.size)).astype(np.int64)
    sorted_len = lengths[order]
    del lengths
    unit_len = sorted_len[first]
    longest = np.maximum.reduceat(sorted_len, first) if first.size else np.zeros(0, np.int64)
    eligible = (longest <= MAX_WORD_TOKENS) & ~np.isin(sorted_h[first], text.embedded)
    band = _band(counts, eligible, min_count, max_count, skip_top)
    cand = np.flatnonzero(band)
    offsets = np.zeros(cand.size + 1, dtype=np.int64)
    np.cumsum(counts[cand], out=offsets[1:])
    in_band = np.repeat(band, counts)
    sel = order[in_band]
    del order
    pos = starts[sel]
    del sel, starts
    dtype = np.uint32 if pos.size == 0 or pos.max() < 2**32 else np.int64
    return OccurrenceIndex("sentence", sorted_h[first[cand]], unit_len[cand].astype(np.int64), counts[cand], offsets,
                           pos.astype(dtype), sorted_len[in_band].astype(np.uint8))


def build_index(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                skip_top: int, casefold: bool = False) -> OccurrenceIndex:
    """The index over every token of `tokens`."""
    kind, text = token_kinds(tokenizer, casefold)
    tokens = np.asarray(tokens)
    _check_vocab(tokens, kind)
    if variant == "token":
        counts = np.bincount(tokens, minlength=kind.size).astype(np.int64)
        band, cand, local = _token_band(counts, kind, min_count, max_count, skip_top)
        pos = np.flatnonzero(band[tokens])
        offsets, positions = _csr(local[tokens[pos]], pos, cand.size)
        return OccurrenceIndex("token", cand.astype(np.int64), np.ones(cand.size, np.int64), counts[cand],
                               offsets, positions, np.ones(positions.size, np.uint8))
    return _word_index(*segment_words(tokens, kind, text), text, min_count, max_count, skip_top)


# ---- the bounded, seeded sample (DESIGN 2.9) -----------------------------------------------------
def region_length(index_tokens: int) -> int:
    """Tokens per sampled region: index_tokens / 16 rounded down to a power of two, within
    [MIN_REGION, MAX_REGION] (and at most index_tokens)."""
    target = max(1, int(index_tokens) // 16)
    return int(min(MAX_REGION, max(MIN_REGION, 1 << (target.bit_length() - 1)), max(1, int(index_tokens))))


def sample_regions(n_tokens: int, index_tokens: int | None, seed: int) -> np.ndarray | None:
    """Sorted start positions of the sampled regions (`region_length(index_tokens)` tokens each,
    aligned to multiples of it): index_tokens // length of them, drawn without replacement by
    `default_rng([seed, _SAMPLE_TAG])` — a pure function of the arguments. None when the stream has at
    most index_tokens tokens (or index_tokens is None): it is indexed whole."""
    if index_tokens is None or n_tokens <= index_tokens:
        return None
    length = region_length(index_tokens)
    rng = np.random.default_rng([int(seed), _SAMPLE_TAG])
    slots = rng.choice(n_tokens // length, size=max(1, index_tokens // length), replace=False)
    return np.sort(slots).astype(np.int64) * length


def sample_runs(starts: np.ndarray, length: int) -> np.ndarray:
    """[R, 2] int64 [start, end) of the runs of adjacent regions (`length` tokens from each start)."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size == 0:
        return np.zeros((0, 2), np.int64)
    cut = np.flatnonzero(np.diff(starts) != length) + 1
    first = np.concatenate([[0], cut])
    last = np.concatenate([cut - 1, [starts.size - 1]])
    return np.stack([starts[first], starts[last] + length], axis=1)


def _run_chunks(tokens, runs: np.ndarray, context: int):
    """(start, end, a, tokens[a:b]) per run [start, end), read with `context` tokens either side from a:
    the only reads of `tokens` a sampled index makes."""
    n = len(tokens)
    for s, e in runs.tolist():
        a, b = max(0, s - context), min(n, e + context)
        yield s, e, a, np.asarray(tokens[a:b])


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """The parts concatenated, the list emptied (its parts freed) — bounds peak memory."""
    out = np.concatenate(parts)
    parts.clear()
    return out


def build_sampled_index(tokens, runs: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                        skip_top: int, casefold: bool = False) -> OccurrenceIndex:
    """The index over the runs [start, end) of `tokens` (`sample_runs`), positions global: only the
    runs (with `SAMPLE_CONTEXT` tokens of context, sentence variant) are read. See the module docstring
    for the edge rule; `regions` holds the spans windows may be cut from."""
    kind, text = token_kinds(tokenizer, casefold)
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    if variant == "token":
        counts = np.zeros(kind.size, dtype=np.int64)
        for _, _, _, chunk in _run_chunks(tokens, runs, 0):
            _check_vocab(chunk, kind)
            counts += np.bincount(chunk, minlength=kind.size)
        band, cand, local = _token_band(counts, kind, min_count, max_count, skip_top)
        total = int(counts[cand].sum())
        units = np.empty(total, dtype=np.int32 if cand.size < 2**31 else np.int64)
        pos = np.empty(total, dtype=np.uint32 if len(tokens) <= 2**32 else np.int64)
        i = 0
        for s, _, _, chunk in _run_chunks(tokens, runs, 0):
            p = np.flatnonzero(band[chunk])
            units[i:i + p.size] = local[chunk[p]]
            pos[i:i + p.size] = p + s
            i += p.size
        offsets, positions = _csr(units, pos, cand.size)
        return OccurrenceIndex("token", cand.astype(np.int64), np.ones(cand.size, np.int64), counts[cand],
                               offsets, positions, np.ones(positions.size, np.uint8), runs.copy())
    starts, lengths, hashes, regions = [np.zeros(0, np.int64)], [np.zeros(0, np.uint8)], [np.zeros(0, np.uint64)], []
    for s, e, a, chunk in _run_chunks(tokens, runs, SAMPLE_CONTEXT):
        _check_vocab(chunk, kind)
        st, ln, h = segment_words(chunk, kind, text)  # starts of words at or after s are exact (context)
        st += a
        end = st + ln
        keep = (st >= s) & (end <= e)  # wholly inside the run
        lo = int(end[(st < s) & (end > s)].max(initial=s))  # past a word running into the run …
        hi = int(st[(st < e) & (end > e)].min(initial=e))  # … and before one running out of it
        if hi > lo:
            regions.append((lo, hi))
        starts.append(st[keep])
        lengths.append(np.minimum(ln[keep], 255).astype(np.uint8))  # > MAX_WORD_TOKENS: never a candidate
        hashes.append(h[keep])
    index = _word_index(_join(starts), _join(lengths), _join(hashes), text, min_count, max_count, skip_top)
    index.regions = np.asarray(regions, dtype=np.int64).reshape(-1, 2)
    return index


# ---- cache -----------------------------------------------------------------------------------------
def _key_hash(fields: list, tokenizer):
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(fields).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    return h


def _content_key(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                 skip_top: int, casefold: bool) -> str:
    """Key of an index over all of `tokens`: hashes every token."""
    h = _key_hash([FORMAT_VERSION, variant, min_count, max_count, skip_top, MAX_WORD_TOKENS, casefold,
                   str(np.asarray(tokens).dtype), int(np.asarray(tokens).size)], tokenizer)
    h.update(np.ascontiguousarray(tokens).data.cast("B"))
    return h.hexdigest()


def _sample_key(tokens, runs: np.ndarray, starts: np.ndarray, index_tokens: int, tokenizer, variant: str,
                min_count: int, max_count: int | None, skip_top: int, casefold: bool) -> str:
    """Key of a sampled index: the settings, stream length, index_tokens, the region starts and the
    tokens read (the runs with their context) — never the rest of the stream."""
    context = SAMPLE_CONTEXT if variant == "sentence" else 0
    h = _key_hash([FORMAT_VERSION, "sample", variant, min_count, max_count, skip_top, MAX_WORD_TOKENS, casefold,
                   str(np.dtype(tokens.dtype)), len(tokens), int(index_tokens), region_length(index_tokens),
                   context], tokenizer)
    h.update(np.ascontiguousarray(starts, dtype=np.int64).tobytes())
    for _, _, _, chunk in _run_chunks(tokens, runs, context):
        h.update(np.ascontiguousarray(chunk).data.cast("B"))
    return h.hexdigest()


def _load(path: Path, variant: str) -> OccurrenceIndex | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return OccurrenceIndex(variant, **{k: z[k] for k in z.files})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable cache entry: rebuild it


def _save(path: Path, index: OccurrenceIndex) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path) as fh:
        np.savez(fh, **index.arrays())  # type: ignore[arg-type]  # mypy matches **arrays to allow_pickle: bool


def occurrence_index(tokens: np.ndarray, tokenizer, variant: str, min_count: int, max_count: int | None,
                     skip_top: int, cache_dir: str | Path | None = None, casefold: bool = False,
                     index_tokens: int | None = None, seed: int = 0) -> OccurrenceIndex:
    """The index, loaded from `cache_dir/occurrences-<hash>.npz` or built and saved there (atomically).

    A stream longer than `index_tokens` is indexed over the seeded sample `sample_regions(len(tokens),
    index_tokens, seed)` (only its regions are read); otherwise — or with index_tokens None — over
    all tokens (`build_index`)."""
    starts = sample_regions(len(tokens), index_tokens, seed)
    runs = None
    if starts is not None:
        assert index_tokens is not None  # sample_regions samples only given index_tokens
        length = region_length(index_tokens)
        runs = sample_runs(starts, length)
        log.info("occurrence index over %d of %d tokens (%d regions, seed %d)", starts.size * length, len(tokens),
                 starts.size, seed)
    path = None
    if cache_dir is not None:
        if runs is None:
            key = _content_key(tokens, tokenizer, variant, min_count, max_count, skip_top, casefold)
        else:
            assert starts is not None and index_tokens is not None  # runs are cut only from a sample
            key = _sample_key(tokens, runs, starts, index_tokens, tokenizer, variant, min_count, max_count,
                              skip_top, casefold)
        path = Path(cache_dir) / f"occurrences-{key}.npz"
        cached = _load(path, variant)
        if cached is not None:
            return cached
    if runs is None:
        index = build_index(tokens, tokenizer, variant, min_count, max_count, skip_top, casefold)
    else:
        index = build_sampled_index(tokens, runs, tokenizer, variant, min_count, max_count, skip_top, casefold)
    if path is not None:
        _save(path, index)
    return index
