"""Downsampling for the live view keeps first/last points and extrema within a point budget."""

from __future__ import annotations

import time

import numpy as np
import pytest

from metalm.watch.downsample import even_columns, minmax_downsample
from metalm.watch.store import MetricsStore


def test_keeps_first_last_and_every_bucket_extremum_within_budget():
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=200_000))
    y[123_457] = 1e6  # a loss spike
    y[77_777] = -1e6
    for budget in (4, 5, 100, 2000):
        keep = minmax_downsample(y, budget)
        assert len(keep) <= budget
        assert keep[0] == 0 and keep[-1] == len(y) - 1
        assert np.all(np.diff(keep) > 0)
        assert 123_457 in keep and 77_777 in keep
    keep = minmax_downsample(y, 2000)
    bounds = np.linspace(0, len(y), 2000 // 4 + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):  # each bucket's min and max survive
        assert lo + int(np.argmin(y[lo:hi])) in keep and lo + int(np.argmax(y[lo:hi])) in keep
    drawn = y[keep]
    assert drawn.min() == y.min() and drawn.max() == y.max()


def test_short_input_is_returned_whole_and_nans_are_never_extrema():
    assert minmax_downsample([3.0, 1.0, 2.0], 10).tolist() == [0, 1, 2]
    assert minmax_downsample([], 10).tolist() == []
    y = np.full(1000, np.nan)
    y[500] = 7.0
    keep = minmax_downsample(y, 8)
    assert 500 in keep and keep[0] == 0 and keep[-1] == 999 and len(keep) <= 8
    with pytest.raises(ValueError):
        minmax_downsample([1.0] * 10, 3)


def test_even_columns_bounds_and_ends():
    assert even_columns(5, 10).tolist() == [0, 1, 2, 3, 4]
    cols = even_columns(1001, 300)
    assert len(cols) <= 300 and cols[0] == 0 and cols[-1] == 1000


def test_store_series_of_a_long_run_is_bounded_and_fast():
    store = MetricsStore()
    n = 300_000
    rows = [{"step": s, "loss": 3.0 + (50.0 if s == 123_456 else 0.0), "tokens": s * 10, "flops": s * 1e6,
             "time": s * 0.01, "step_kind": "ar", **({"val_loss": 3.5} if s % 1000 == 0 else {})} for s in range(1, n + 1)]
    store.add(rows)
    start = time.perf_counter()
    series = store.series(0, 2000)
    elapsed = time.perf_counter() - start
    loss = series["loss"]
    assert len(loss["y"]) <= 2000 and max(loss["y"]) == 53.0
    assert loss["step"][0] == 1 and loss["step"][-1] == n and 123_456 in loss["step"]
    assert len(series["val_loss"]["y"]) == 300  # sparse column: only the rows that have it
    assert set(series["loss"]) == {"step", "tokens", "flops", "time", "y"}
    assert elapsed < 2.0, f"downsampling 300k rows took {elapsed:.2f}s"
