"""Dense SMLMT episodes (DESIGN 2.3, token variant, `layout: dense` — the paper's layout).

The episode's rows are ordinary training sequences (the first `seq_len` tokens of each training
window the trainer passes in); support and query items are labelled masks inside them, so one
backbone pass over the rows yields every item. An episode is a pure function of its rows and a
seeded generator (seeded by run seed, step, micro-batch and episode index):

1. classes: N distinct candidate tokens of the occurrence index's band, counted at labellable
   positions (1…seq_len−1: position 0 has no left context) of the episode's rows. Those occurring
   at least K + Q times are preferred (drawn at random); when fewer than N do, the rest are filled
   with the most frequent candidates occurring at least twice (one support and one query item
   possible; ties at random) — a 32-way episode in 2048 tokens of text outside the most frequent
   tokens rarely finds 32 tokens occurring 5 times. When fewer than N candidates occur twice, the
   episode uses those (`Episode.n_way` < N); fewer than 2 is an error naming `meta.n_way`. The
   labels are a random order of the chosen classes (a fresh mapping per episode).
2. masking: *every* occurrence of every class token in the rows becomes the mask token, so no row
   shows a class token anywhere (labelled or not); other tokens are untouched.
3. labels, query first then support: each row labels at most Q query and K support occurrences
   (K = `k_shot`, Q = `q_query`: per row in this layout). Assignment runs in rounds: in each round
   every class still holding an unassigned occurrence in a row with room proposes one (drawn at
   random); within a row, proposals win up to the row's room in the order: fewest items so far,
   fewest rows left to go to, random. A first pass caps each class at its fair share ⌈R·cap/N⌉, a
   second fills the rows' remaining room. So the classes stay balanced over the episode as far as
   the rows allow (greedily, not by an optimal matching), each occurrence gets at most one role
   (support and query never share a position), and the labelled positions are wherever the class
   tokens happen to be in each row — never the same positions in every row. No position outside
   the N classes is ever labelled.

Everything is vectorised numpy over the occurrences; the rounds number about (items per class).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .episode import Episode

NONE, SUPPORT, QUERY = 0, 1, 2


def _assign(rows: np.ndarray, cls: np.ndarray, key: np.ndarray, role: np.ndarray, which: int, cap: int,
            n_rows: int, n_classes: int) -> None:
    """Give role `which` to up to `cap` unassigned occurrences per row, balanced over classes (in place).

    `rows`, `cls`: row and class of each occurrence; `key`: its random priority. First pass: no class
    beyond its fair share ⌈R·cap / N⌉; second pass: the rows' remaining room, to any class."""
    used = np.zeros(n_rows, dtype=np.int64)
    count = np.zeros(n_classes, dtype=np.int64)
    for quota in (-(-n_rows * cap // n_classes), None):
        while True:
            free = np.flatnonzero((role == NONE) & (used[rows] < cap)
                                  & (True if quota is None else count[cls] < quota))
            if free.size == 0:
                break
            # rows in which each class can still be placed: the scarcest classes choose first
            pairs = np.unique(cls[free] * n_rows + rows[free])
            reach = np.bincount(pairs // n_rows, minlength=n_classes)
            # each class proposes its free occurrence of lowest key
            order = free[np.lexsort((key[free], cls[free]))]
            first = np.concatenate([[True], cls[order][1:] != cls[order][:-1]])
            prop = order[first]
            # within a row: fewest items so far first, then fewest rows to go to, then at random
            prop = prop[np.lexsort((key[prop], reach[cls[prop]], count[cls[prop]], rows[prop]))]
            start = np.concatenate([[True], rows[prop][1:] != rows[prop][:-1]])
            rank = np.arange(prop.size) - np.maximum.accumulate(np.where(start, np.arange(prop.size), 0))
            take = prop[rank < cap - used[rows[prop]]]
            role[take] = which
            np.add.at(used, rows[take], 1)
            np.add.at(count, cls[take], 1)


def dense_episode(rows: np.ndarray, seq_len: int, candidates: np.ndarray, n_way: int, k_shot: int, q_query: int,
                  mask_id: int, rng: np.random.Generator) -> Episode:
    """One dense episode from `rows` (int array [R, ≥ seq_len]; the first `seq_len` tokens are used).

    `candidates`: boolean mask over the vocabulary of the band's token ids (see the module docstring)."""
    ids = np.asarray(rows)[:, :seq_len].astype(np.int64)
    n_rows = ids.shape[0]
    if ids.shape[1] != seq_len or n_rows == 0:
        raise DataError(f"meta.layout=dense: episode rows must hold {seq_len} tokens each (got shape {ids.shape})")
    if ids.max(initial=0) >= candidates.size:
        candidates = np.concatenate([candidates, np.zeros(int(ids.max()) + 1 - candidates.size, dtype=bool)])
    body = ids[:, 1:]  # labellable positions
    counts = np.bincount(body[candidates[body]], minlength=candidates.size)
    present = np.flatnonzero(counts >= 2)
    if present.size < 2:
        raise DataError(
            f"meta.n_way: a dense episode of {n_rows} rows × {seq_len} tokens holds {present.size} candidate "
            f"token(s) occurring at least twice; it needs 2 (ideally meta.n_way = {n_way}, each occurring "
            f"k_shot + q_query = {k_shot + q_query} times): give episodes more rows (fewer "
            "meta.episodes_per_step), or lower meta.band_skip_top / band_min_count")
    # preferred: ≥ K + Q occurrences, at random; then by occurrences, most first, ties at random
    preferred = counts[present] >= k_shot + q_query
    order = np.lexsort((rng.random(present.size), np.where(preferred, 0, -counts[present]), ~preferred))
    class_ids = rng.permutation(present[order[:n_way]])
    label_of = np.full(candidates.size, -1, dtype=np.int64)
    label_of[class_ids] = np.arange(class_ids.size)

    is_class = label_of[ids] >= 0
    masked = np.where(is_class, mask_id, ids)
    r, p = np.nonzero(is_class[:, 1:])
    p = p + 1
    cls = label_of[ids[r, p]]
    key = rng.random(r.size)
    role = np.zeros(r.size, dtype=np.int8)
    _assign(r, cls, key, role, QUERY, q_query, n_rows, class_ids.size)
    _assign(r, cls, key, role, SUPPORT, k_shot, n_rows, class_ids.size)

    def items(which: int):
        sel = np.flatnonzero(role == which)
        sel = sel[np.lexsort((p[sel], r[sel], cls[sel]))]  # grouped by class, then row and position
        return (torch.from_numpy(r[sel]), torch.from_numpy(p[sel]), torch.from_numpy(cls[sel]))

    s_row, s_pos, s_lab = items(SUPPORT)
    q_row, q_pos, q_lab = items(QUERY)
    x = torch.from_numpy(masked)
    origin = torch.full((n_rows, 2), -1, dtype=torch.long)
    return Episode("smlmt", x, x, torch.from_numpy(class_ids.astype(np.int64)), origin, origin,
                   support_pos=s_pos, query_pos=q_pos, support_target=s_pos, query_target=q_pos,
                   support_labels=s_lab, query_labels=q_lab, layout="dense", support_row=s_row, query_row=q_row)
