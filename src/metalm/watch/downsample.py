"""Downsampling long curves for display without hiding what matters in them.

A browser chart stays responsive with a few thousand points per curve, while a long run logs
hundreds of thousands. Plain striding would drop loss spikes, so this keeps, per bucket of
consecutive points, the first, last, minimum and maximum (the M4 scheme of Jugel et al., 2014):
the drawn envelope is the same as with every point, and the first and last points of the whole
curve are always kept. Buckets are by position rather than by x value so a curve whose x goes
back (a resumed run that re-logged some steps) is still handled.
"""

from __future__ import annotations

import numpy as np


def minmax_downsample(y, max_points: int) -> np.ndarray:
    """Indices (sorted, unique) of at most `max_points` points of `y` to draw.

    Keeps index 0, the last index, and each bucket's first, last, argmin and argmax. NaNs are
    never chosen as extrema (a bucket of only NaNs contributes its first and last index).
    """
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    values = np.asarray(y, dtype=float)
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    n_buckets = max_points // 4
    bounds = np.linspace(0, n, n_buckets + 1).astype(np.int64)
    chosen = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        chosen.append(lo)
        chosen.append(hi - 1)
        segment = values[lo:hi]
        finite = np.isfinite(segment)
        if finite.any():
            masked_low = np.where(finite, segment, np.inf)
            masked_high = np.where(finite, segment, -np.inf)
            chosen.append(lo + int(np.argmin(masked_low)))
            chosen.append(lo + int(np.argmax(masked_high)))
    return np.unique(np.asarray(chosen, dtype=np.int64))


def even_columns(n: int, max_columns: int) -> np.ndarray:
    """Indices of at most `max_columns` evenly spaced columns out of `n`, first and last included
    (for heatmaps, whose columns are already averages and need no extremum preservation)."""
    if n <= max_columns:
        return np.arange(n)
    if max_columns < 2:
        raise ValueError(f"max_columns must be at least 2, got {max_columns}")
    return np.unique(np.round(np.linspace(0, n - 1, max_columns)).astype(np.int64))
