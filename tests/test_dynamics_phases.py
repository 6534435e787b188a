"""Phase read-out on synthetic curves whose peaks are known by construction."""

import json

import pytest

from metalm.dynamics.phases import curve_peak, format_phase_readout, moving_average, phase_readout

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


def tent(peak_index: int, n: int = len(STEPS)) -> list[float]:
    return [20.0 - abs(i - peak_index) for i in range(n)]


def test_moving_average_by_hand():
    assert moving_average([1, 2, 3, 4, 5], 3) == [1.5, 2, 3, 4, 4.5]
    assert moving_average([1, 2, 3, 4, 5], 1) == [1, 2, 3, 4, 5]
    assert moving_average([1, 2, 3, 4], 2) == [1.5, 2.5, 3.5, 4]  # even window: one ahead
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_peak_in_the_middle_splits_diversify_and_compress():
    peak = curve_peak(STEPS, tent(6), 5)
    assert peak["peak_step"] == 60 and peak["phase"] == "diversify-compress"
    assert peak["peak_value"] == pytest.approx((18 + 19 + 20 + 19 + 18) / 5)


def test_monotone_curves_and_flat_and_single():
    rising = curve_peak(STEPS, [float(i) for i in range(len(STEPS))], 5)
    assert rising["peak_step"] == STEPS[-1] and rising["phase"] == "still-diversifying"
    falling = curve_peak(STEPS, [float(-i) for i in range(len(STEPS))], 5)
    assert falling["peak_step"] == 0 and falling["phase"] == "compressing"
    assert curve_peak(STEPS, [3.0] * len(STEPS), 5)["phase"] == "flat"
    assert curve_peak([40], [3.0], 5) == {
        "peak_step": 40, "peak_value": 3.0, "trough_step": 40, "trough_value": 3.0, "first_value": 3.0,
        "last_value": 3.0, "n_steps": 1, "phase": "single-step",
    }


def test_early_collapse_shows_as_trough():
    values = [30.0, 10.0, 5.0, 8.0, 12.0, 16.0, 20.0]
    peak = curve_peak(STEPS[:7], values, 1)
    assert (peak["peak_step"], peak["phase"]) == (0, "compressing")
    assert (peak["trough_step"], peak["trough_value"]) == (20, 5.0)


def test_smoothing_ignores_a_one_step_spike():
    values = [10.0 - abs(i - 8) for i in range(len(STEPS))]
    values[2] += 7  # a single noisy point taller than the broad peak at index 8
    assert curve_peak(STEPS, values, 1)["peak_step"] == 20
    assert curve_peak(STEPS, values, 5)["peak_step"] == 80


def test_readout_timeline_and_entropy_means_over_heads():
    rows = act_rows({0: tent(3), 1: tent(11), 2: tent(7), -1: [5.0] * len(STEPS)})
    rows += act_rows({3: [float(i) for i in range(len(STEPS))]})  # final norm: still rising
    rows += head_rows({0: [tent(9), tent(9)], 1: [tent(2), [x + 1 for x in tent(2)]], 2: [tent(12), tent(12)]})
    readout = phase_readout(rows, smoothing=3)
    json.dumps(readout, allow_nan=False)
    rank = {e["layer"]: e for e in readout["effective_rank"]["layers"]}
    assert {layer: e["peak_step"] for layer, e in rank.items()} == {-1: 0, 0: 30, 1: 110, 2: 70, 3: 140}
    assert rank[-1]["phase"] == "flat" and rank[3]["phase"] == "still-diversifying"
    assert rank[-1]["name"] == "embed" and rank[3]["name"] == "final norm" and rank[1]["name"] == "layer 1"
    assert [e["layer"] for e in readout["effective_rank"]["timeline"]] == [0, 2, 1, 3]
    entropy = {e["layer"]: e for e in readout["head_entropy"]["layers"]}
    assert {layer: e["peak_step"] for layer, e in entropy.items()} == {0: 90, 1: 20, 2: 120}
    assert entropy[1]["peak_value"] == pytest.approx((19.5 + 20.5 + 19.5) / 3)  # mean of the heads, then smoothed
    assert [e["layer"] for e in readout["head_entropy"]["timeline"]] == [1, 0, 2]
    assert readout["steps"] == [0, 140] and readout["n_steps"] == len(STEPS)
    text = format_phase_readout(readout)
    for fragment in ("layer 2", "final norm", "still diversifying", "diversify, then compress",
                     "peak order: layer 0 (30) → layer 2 (70) → layer 1 (110) → final norm (140)"):
        assert fragment in text


def test_readout_without_rows():
    readout = phase_readout([], 5)
    assert readout["effective_rank"]["layers"] == [] and readout["n_steps"] == 0
    assert "no rows recorded" in format_phase_readout(readout)
