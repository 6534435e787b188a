"""Phase read-out (DESIGN 2.7) on synthetic curves whose trough and peak are known by construction."""

import json

import pytest

from metalm.dynamics.phases import (
    curve_phases,
    effective_window,
    format_phase_readout,
    moving_average,
    phase_readout,
)

STEPS = list(range(0, 150, 10))


def act_rows(layer_values: dict[int, list[float]], steps=STEPS) -> list[dict]:
    return [
        {"step": s, "group": "activations", "layer": layer, "component": "output", "erank": v, "per": v / 64, "shape": [32, 64]}
        for layer, values in layer_values.items()
        for s, v in zip(steps, values)
    ]


def head_rows(layer_heads: dict[int, list[list[float]]], steps=STEPS) -> list[dict]:
    return [
        {"step": s, "group": "attention", "layer": layer, "head": h, "entropy": v, "entropy_norm": v / 3}
        for layer, heads in layer_heads.items()
        for h, values in enumerate(heads)
        for s, v in zip(steps, values)
    ]


def collapse_then_tent(peak_index: int, n: int = len(STEPS), init: float = 40.0) -> list[float]:
    """Initialisation high (init), a collapse to the trough at index 1, then a tent peaking at peak_index."""
    return [init] + [20.0 - abs(i - peak_index) for i in range(1, n)]


def test_moving_average_by_hand():
    assert moving_average([1, 2, 3, 4, 5], 3) == [1.5, 2, 3, 4, 4.5]
    assert moving_average([1, 2, 3, 4, 5], 1) == [1, 2, 3, 4, 5]
    assert moving_average([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5, 4]  # even window: one ahead
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_window_never_exceeds_a_third_of_the_points():
    assert [effective_window(n, 5) for n in (1, 3, 5, 6, 8, 9, 14, 15, 100)] == [1, 1, 1, 2, 2, 3, 4, 5, 5]
    assert effective_window(100, 1) == 1
    with pytest.raises(ValueError):
        effective_window(10, 0)


def test_collapse_diversify_compress():
    # 40 at initialisation, down to 13 at step 10 (the first trough), up to 20 at step 80, then down
    values = collapse_then_tent(8)
    r = curve_phases(STEPS, values, 1)
    assert r["phase"] == "collapse-diversify-compress"
    assert (r["trough_step"], r["trough_value"]) == (10, 13.0)
    assert (r["peak_step"], r["peak_value"], r["boundary_step"]) == (80, 20.0, 80)
    assert r["phases"] == [{"phase": "collapse", "from_step": 0, "to_step": 10},
                           {"phase": "diversify", "from_step": 10, "to_step": 80},
                           {"phase": "compress", "from_step": 80, "to_step": 140}]
    # smoothed over 5 points: the peak value is the mean of the five around it; the initial point is
    # kept as recorded, so the trough is still the first point after it
    s = curve_phases(STEPS, values, 5)
    assert s["window"] == 5 and s["first_value"] == 40.0
    assert (s["peak_step"], s["peak_value"]) == (80, pytest.approx((18 + 19 + 20 + 19 + 18) / 5))
    assert (s["trough_step"], s["trough_value"]) == (10, pytest.approx((13 + 14 + 15) / 3))


def test_initialisation_is_never_the_peak():
    r = curve_phases(STEPS[:6], [30.0, 5.0, 10.0, 20.0, 15.0, 12.0], 1)
    assert r["peak_step"] == 30 and r["trough_step"] == 10 and r["phase"] == "collapse-diversify-compress"


def test_monotone_rising_is_still_diversifying():
    r = curve_phases(STEPS, [float(i) for i in range(len(STEPS))], 5)
    assert r["phase"] == "diversify" and r["trough_step"] is None  # no initial collapse
    assert r["peak_step"] == STEPS[-1] and r["boundary_step"] is None  # boundary not reached yet
    assert r["phases"] == [{"phase": "diversify", "from_step": 0, "to_step": 140}]
    after_collapse = curve_phases(STEPS[:5], [9.0, 1.0, 2.0, 3.0, 4.0], 5)
    assert after_collapse["phase"] == "collapse-diversify" and after_collapse["peak_step"] == 40


def test_monotone_falling_is_still_collapsing():
    r = curve_phases(STEPS, [float(-i) for i in range(len(STEPS))], 5)
    assert r["phase"] == "collapse" and r["peak_step"] is None and r["peak_value"] is None
    assert r["trough_step"] == STEPS[-1] and r["boundary_step"] is None
    assert r["phases"] == [{"phase": "collapse", "from_step": 0, "to_step": 140}]


def test_flat_and_single_step():
    flat = curve_phases(STEPS, [3.0] * len(STEPS), 5)
    assert flat["phase"] == "flat" and flat["phases"] == [] and flat["peak_step"] is None
    # changes below FLAT (1e-4) of the magnitude are numerical noise, not phases
    assert curve_phases(STEPS[:3], [2.548, 2.5479, 2.54795], 5)["phase"] == "flat"
    assert curve_phases(STEPS[:3], [2.548, 2.540, 2.545], 5)["phase"] == "collapse-diversify"
    # a plateau at the top is not compression: the boundary is not reached
    plateau = curve_phases(STEPS[:4], [5.0, 6.0, 7.0, 7.0], 5)
    assert plateau["phase"] == "diversify" and plateau["peak_step"] == 20 and plateau["boundary_step"] is None
    one = curve_phases([40], [3.0], 5)
    assert one["phase"] == "single-step" and one["n_steps"] == 1 and one["first_value"] == one["last_value"] == 3.0


def test_three_points_are_read_without_smoothing():
    # window 5 asked for, but three points cannot be smoothed: first, trough, peak and last differ
    r = curve_phases([4, 8, 12], [10.0, 4.0, 6.0], 5)
    assert r["window"] == 1 and r["phase"] == "collapse-diversify"
    assert (r["first_value"], r["trough_value"], r["peak_value"], r["last_value"]) == (10.0, 4.0, 6.0, 6.0)
    assert (r["trough_step"], r["peak_step"]) == (8, 12)
    readout = phase_readout(act_rows({0: [10.0, 4.0, 6.0], 1: [5.0, 6.0, 4.0]}, steps=[4, 8, 12]), smoothing=5)
    text = format_phase_readout(readout)
    assert readout["window"] == 1 and "no smoothing" in text
    assert "collapse, then still diversifying" in text and "diversify, then compress" in text
    assert "specialisation timeline (step of the post-trough peak): layer 1 (8); not reached yet: layer 0" in text


def test_smoothing_ignores_a_one_step_spike():
    values = collapse_then_tent(10)
    values[4] += 9  # a single noisy point taller than the broad peak at index 10
    assert curve_phases(STEPS, values, 1)["peak_step"] == 40
    assert curve_phases(STEPS, values, 5)["peak_step"] == 100


def test_readout_timeline_and_entropy_means_over_heads():
    rows = act_rows({0: collapse_then_tent(3), 1: collapse_then_tent(11), 2: collapse_then_tent(7),
                     -1: [5.0] * len(STEPS)})
    rows += act_rows({3: [float(i) for i in range(len(STEPS))]})  # final norm: still rising
    rows += head_rows({0: [collapse_then_tent(9)] * 2, 1: [collapse_then_tent(4), [x + 1 for x in collapse_then_tent(4)]],
                       2: [[float(-i) for i in range(len(STEPS))]] * 2})
    readout = phase_readout(rows, smoothing=3)
    json.dumps(readout, allow_nan=False)
    rank = {e["layer"]: e for e in readout["effective_rank"]["layers"]}
    assert {layer: e["peak_step"] for layer, e in rank.items()} == {-1: None, 0: 30, 1: 110, 2: 70, 3: 140}
    assert rank[-1]["phase"] == "flat" and rank[3]["phase"] == "diversify"
    assert rank[-1]["name"] == "embed" and rank[3]["name"] == "final norm" and rank[1]["name"] == "layer 1"
    assert [e["layer"] for e in readout["effective_rank"]["timeline"]] == [0, 2, 1]
    assert readout["effective_rank"]["not_reached"] == [{"layer": 3, "name": "final norm", "phase": "diversify"}]
    entropy = {e["layer"]: e for e in readout["head_entropy"]["layers"]}
    assert {layer: e["peak_step"] for layer, e in entropy.items()} == {0: 90, 1: 40, 2: None}
    assert entropy[1]["peak_value"] == pytest.approx((19.5 + 20.5 + 19.5) / 3)  # mean of the heads, then smoothed
    assert entropy[2]["phase"] == "collapse"
    assert [e["layer"] for e in readout["head_entropy"]["timeline"]] == [1, 0]
    assert readout["steps"] == [0, 140] and readout["n_steps"] == len(STEPS) and readout["window"] == 3
    text = format_phase_readout(readout)
    for fragment in ("layer 2", "final norm", "still diversifying", "collapse, diversify, then compress",
                     "still collapsing", "centered moving average over 3 points",
                     "layer 0 (30) → layer 2 (70) → layer 1 (110); not reached yet: final norm (still diversifying)"):
        assert fragment in text


def test_readout_without_rows():
    readout = phase_readout([], 5)
    assert readout["effective_rank"]["layers"] == [] and readout["n_steps"] == 0
    assert "no rows recorded" in format_phase_readout(readout)
