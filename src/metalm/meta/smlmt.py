"""SMLMT episodes (DESIGN 2.3), both variants, as pure functions of a seeded generator.

An episode draws N distinct classes from the occurrence index's candidates (in random order; the
label of a class is its index in that order — a fresh mapping per episode), then for each class
K support and Q query occurrences. Each occurrence becomes one row of `window_len` tokens cut from
the corpus around it (inside its document when the document is long enough):

- every occurrence of the class unit in the row is replaced by the mask token — a whole word (all
  its sub-word tokens, whatever its tokenization there: " arm", "arm", with casefold "Arm") by a
  *single* mask, so the mask does not reveal the word's length; the token variant masks every
  occurrence of the class token;
- the labelled occurrence lands at a random offset in the second half of the row (so its hidden
  state has at least window_len/2 tokens of left context) — a different position in every row;
- rows never overlap in the corpus: no two items of an episode (support or query, any class)
  share a corpus token, so no item is shared between support and query;
- a sampled index (`OccurrenceIndex.regions`, DESIGN 2.9) cuts each row inside the indexed span
  that holds its occurrence, so every occurrence of the class unit in the row is one the index
  knows — and is masked.

The `sentence` variant reads each row at its last position (pool=last) or at the labelled mask
(pool=mask); the `token` variant always reads the labelled mask, where the vocabulary-indexed head
predicts the token among the N candidates. Only the labelled occurrences carry labels; other
tokens are never labelled.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .episode import Episode
from .occurrences import OccurrenceIndex


def _interval_free(spans: list[tuple[int, int]], a: int, b: int) -> bool:
    return all(b <= s or a >= e for s, e in spans)


def cut_window(tokens: np.ndarray, occ: np.ndarray, occ_len: np.ndarray, target: int, window: int,
               bounds: tuple[int, int], mask_id: int, rng: np.random.Generator):
    """Row of `window` tokens around the occurrence at `target`, every occurrence in `occ` (sorted
    starts of the class unit, `occ_len` tokens each; they never overlap) collapsed to one mask token.

    Returns (row, target offset, corpus span [start, end)) or None when `bounds` hold too few tokens."""
    lo, hi = bounds
    ends = occ + occ_len
    length = int(occ_len[np.searchsorted(occ, target)])
    margin = 2 * window + length
    a, b = max(lo, target - margin), min(hi, target + length + margin)
    # Never cut an occurrence at either end: take it whole.
    i = np.searchsorted(ends, a, side="right")
    if i < occ.size and occ[i] < a:
        a = int(occ[i])
    j = np.searchsorted(occ, b, side="left") - 1
    if j >= 0 and ends[j] > b:
        b = int(ends[j])
    if b - a < window:
        return None
    sel = (occ >= a) & (ends <= b)
    inside, extra = occ[sel] - a, occ_len[sel] - 1
    span = np.asarray(tokens[a:b], dtype=np.int64)
    keep = np.ones(b - a, dtype=bool)
    if extra.any():  # drop every token of a multi-token occurrence but its first
        within = np.arange(int(extra.sum())) - np.repeat(np.cumsum(extra) - extra, extra)
        keep[np.repeat(inside, extra) + within + 1] = False
    span[inside] = mask_id
    orig_end = np.arange(a + 1, b + 1, dtype=np.int64)
    orig_end[inside] += extra
    kept = np.flatnonzero(keep)
    row, orig_start, orig_end = span[kept], kept + a, orig_end[kept]
    if row.size < window:
        return None
    t = int(np.searchsorted(orig_start, target))
    lo_off = max(window // 2, t - (row.size - window))
    hi_off = min(window - 1, t)
    if lo_off > hi_off:
        lo_off = max(0, t - (row.size - window))
    offset = int(rng.integers(lo_off, hi_off + 1))
    s = t - offset
    return row[s:s + window], offset, (int(orig_start[s]), int(orig_end[s + window - 1]))


def _class_items(index: OccurrenceIndex, c: int, tokens: np.ndarray, doc_offsets: np.ndarray, need: int, window: int,
                 mask_id: int, taken: list[tuple[int, int]], rng: np.random.Generator):
    """`need` non-overlapping rows of candidate c (None when its occurrences cannot provide them)."""
    occ = index.occurrences(c)
    occ_len = index.occurrence_lengths(c)
    tries = min(occ.size, 4 * need + 16)
    picks = rng.choice(occ.size, size=tries, replace=False)
    n = len(tokens)
    rows = []
    spans: list[tuple[int, int]] = []
    for p in occ[picks]:
        p = int(p)
        d = int(np.searchsorted(doc_offsets, p, side="right")) - 1
        lo, hi = int(doc_offsets[d]), int(doc_offsets[d + 1])
        outer = index.region(p) or (0, n)  # a sampled index: the indexed span holding p
        lo, hi = max(lo, outer[0]), min(hi, outer[1])
        got = cut_window(tokens, occ, occ_len, p, window, (lo, hi), mask_id, rng)
        if got is None:
            got = cut_window(tokens, occ, occ_len, p, window, outer, mask_id, rng)
        if got is None:
            continue
        row, offset, (s, e) = got
        if not _interval_free(taken, s, e) or not _interval_free(spans, s, e):
            continue
        rows.append((row, offset, p))
        spans.append((s, e))
        if len(rows) == need:
            return rows, spans
    return None


def smlmt_episode(index: OccurrenceIndex, tokens: np.ndarray, doc_offsets: np.ndarray, n_way: int, k_shot: int,
                  q_query: int, window: int, pool: str, mask_id: int, rng: np.random.Generator) -> Episode:
    """One N-way K-shot episode with Q queries per class (see the module docstring)."""
    if index.n_candidates < n_way:
        raise DataError(f"meta.n_way {n_way} exceeds the {index.n_candidates} SMLMT candidates in the band")
    need = k_shot + q_query
    taken: list[tuple[int, int]] = []
    classes, per_class = [], []
    order = rng.permutation(index.n_candidates)
    for tried, c in enumerate(order):
        if tried >= 20 * n_way + 100:
            break
        got = _class_items(index, int(c), tokens, doc_offsets, need, window, mask_id, taken, rng)
        if got is None:
            continue
        rows, spans = got
        taken += spans
        classes.append(int(c))
        per_class.append(list(zip(rows, spans)))
        if len(classes) == n_way:
            break
    if len(classes) < n_way:
        raise DataError(f"cannot draw {n_way} classes with {need} non-overlapping windows of {window} tokens each "
                        "from the corpus; lower meta.n_way, k_shot, q_query or window_len, or raise meta.band_min_count")

    def pack(part: slice):
        ids, target, labels, origin, source = [], [], [], [], []
        for label, items in enumerate(per_class):
            for (row, offset, p), span in items[part]:
                ids.append(row)
                target.append(offset)
                labels.append(label)
                origin.append(span)
                source.append(p)
        target_t = torch.tensor(target, dtype=torch.long)
        pos = target_t if pool == "mask" else torch.full_like(target_t, window - 1)
        return (torch.from_numpy(np.stack(ids)), pos, target_t, torch.tensor(labels, dtype=torch.long),
                torch.tensor(origin, dtype=torch.long), torch.tensor(source, dtype=torch.long))

    s_ids, s_pos, s_tgt, s_lab, s_org, s_src = pack(slice(0, k_shot))
    q_ids, q_pos, q_tgt, q_lab, q_org, q_src = pack(slice(k_shot, need))
    class_ids = index.keys[classes] if index.variant == "token" else np.asarray(classes)
    return Episode("smlmt", s_ids, q_ids, torch.as_tensor(np.asarray(class_ids, dtype=np.int64)), s_org, q_org,
                   support_pos=s_pos, query_pos=q_pos, support_target=s_tgt, query_target=q_tgt,
                   support_labels=s_lab, query_labels=q_lab, support_source=s_src, query_source=q_src)
