"""Phase read-out (DESIGN 2.7): when does each layer stop diversifying and start compressing?

Per layer, the activation effective-rank curve and the mean head-entropy curve are smoothed with a
centered moving average; the step of the maximum splits "diversify" (before) from "compress"
(after). A peak at the last recorded step means the layer is still diversifying; at the first,
that it compressed from the start. Ordering layers by peak step gives the specialisation timeline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

PHASE_TEXT = {
    "diversify-compress": "diversify, then compress",
    "still-diversifying": "still diversifying (peak at the last step)",
    "compressing": "compressing from the start (peak at the first step)",
    "flat": "flat (no peak)",
    "single-step": "one step only",
}


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centered moving average over `window` points, the window shrinking at the ends (an even
    window reaches one point further ahead than behind)."""
    if window < 1:
        raise ValueError("smoothing window must be ≥ 1")
    behind, ahead = (window - 1) // 2, window // 2
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - behind) : i + ahead + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def curve_peak(steps: Sequence[int], values: Sequence[float], window: int) -> dict:
    """Peak of the smoothed curve (the first one on ties) and the phase it implies; also the trough
    (minimum), which shows an early collapse followed by renewed diversification."""
    smoothed = moving_average(values, window)
    peak = max(range(len(smoothed)), key=lambda i: (smoothed[i], -i))
    trough = min(range(len(smoothed)), key=lambda i: (smoothed[i], i))
    spread = max(smoothed) - min(smoothed)
    if len(smoothed) == 1:
        phase = "single-step"
    elif spread <= 1e-9 * max(1.0, abs(max(smoothed))):
        phase = "flat"
    elif peak == len(smoothed) - 1:
        phase = "still-diversifying"
    elif peak == 0:
        phase = "compressing"
    else:
        phase = "diversify-compress"
    return {
        "peak_step": steps[peak],
        "peak_value": smoothed[peak],
        "trough_step": steps[trough],
        "trough_value": smoothed[trough],
        "first_value": smoothed[0],
        "last_value": smoothed[-1],
        "n_steps": len(steps),
        "phase": phase,
    }


def _per_layer_curves(rows: Iterable[dict], group: str, value_key: str) -> dict[int, tuple[list[int], list[float]]]:
    """layer → (steps, mean of `value_key` over that layer's rows of `group` at each step)."""
    sums: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get(value_key)
        if row.get("group") == group and value is not None:
            sums[row["layer"]][row["step"]].append(value)
    curves = {}
    for layer, by_step in sorted(sums.items()):
        steps = sorted(by_step)
        curves[layer] = (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps])
    return curves


def _section(rows: list[dict], group: str, value_key: str, metric: str, smoothing: int, n_layers: int | None) -> dict:
    layers = []
    for layer, (steps, values) in _per_layer_curves(rows, group, value_key).items():
        layers.append({"layer": layer, "name": layer_name(layer, n_layers), **curve_peak(steps, values, smoothing)})
    ordered = sorted(
        (entry for entry in layers if entry["phase"] not in ("flat", "single-step")),
        key=lambda entry: (entry["peak_step"], entry["layer"]),
    )
    timeline = [{"layer": e["layer"], "name": e["name"], "peak_step": e["peak_step"]} for e in ordered]
    return {"metric": metric, "layers": layers, "timeline": timeline}


def _num_layers(rows: list[dict]) -> int | None:
    heads = [row["layer"] for row in rows if row.get("group") == "attention"]
    if heads:
        return max(heads) + 1
    lm_head = [row["layer"] for row in rows if row.get("component") == "lm_head"]
    if lm_head:
        return lm_head[0]
    return None


def layer_name(layer: int, n_layers: int | None) -> str:
    """'embed' for −1, 'final norm' for num_layers (the LM head's input), else 'layer ℓ'."""
    if layer == -1:
        return "embed"
    if n_layers is not None and layer == n_layers:
        return "final norm"
    return f"layer {layer}"


def phase_readout(rows: Iterable[dict], smoothing: int = 5) -> dict:
    """JSON-able read-out: per layer the smoothed activation effective-rank and mean head-entropy
    peaks with their phase, and the specialisation timeline (layers ordered by peak step)."""
    rows = list(rows)
    n_layers = _num_layers(rows)
    steps = sorted({row["step"] for row in rows})
    return {
        "smoothing": smoothing,
        "steps": [steps[0], steps[-1]] if steps else [],
        "n_steps": len(steps),
        "effective_rank": _section(
            rows, "activations", "erank", "effective rank of layer output activations (tokens × d)", smoothing, n_layers
        ),
        "head_entropy": _section(
            rows, "attention", "entropy", "attention entropy (nats), mean over heads", smoothing, n_layers
        ),
    }


# The read-out's per-metric sections and their titles (the live view lays its table out from these).
SECTIONS = {"effective_rank": "effective rank", "head_entropy": "head entropy"}


def _format_section(title: str, section: dict) -> list[str]:
    lines = [title + f" — {section['metric']}"]
    if not section["layers"]:
        return lines + ["  (no rows recorded)"]
    lines.append(f"  {'layer':<11}{'first':>9}{'peak':>9}{'at step':>9}{'min':>9}{'at step':>9}{'last':>9}  phase")
    for e in section["layers"]:
        lines.append(
            f"  {e['name']:<11}{e['first_value']:>9.3f}{e['peak_value']:>9.3f}{e['peak_step']:>9}"
            f"{e['trough_value']:>9.3f}{e['trough_step']:>9}{e['last_value']:>9.3f}  {PHASE_TEXT[e['phase']]}"
        )
    if section["timeline"]:
        order = " → ".join(f"{e['name']} ({e['peak_step']})" for e in section["timeline"])
        lines.append(f"  peak order: {order}")
    return lines


def format_phase_readout(readout: dict) -> str:
    """A human-readable table of `phase_readout`'s result."""
    span = readout["steps"]
    head = (
        f"Phase read-out: {readout['n_steps']} recorded steps"
        + (f" ({span[0]}–{span[1]})" if span else "")
        + f", centered moving average over {readout['smoothing']}"
    )
    lines = [head]
    lines += _format_section("Activation effective rank", readout["effective_rank"])
    lines += _format_section("Head entropy", readout["head_entropy"])
    return "\n".join(lines)
