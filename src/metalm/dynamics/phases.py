"""Phase read-out (DESIGN 2.7): collapse, diversify, compress — and when each layer turns.

Per layer, the activation effective-rank curve and the mean head-entropy curve are smoothed with a
centered moving average whose window never exceeds a third of the curve's points (no smoothing
below six points, so a few checkpoints still give a read-out); the first point is kept as recorded
(initialisation is a jump, and averaging it into later points would move the trough). The smoothed
curve is read in three phases:

- **collapse**: from initialisation down to the first trough (the bottom of the curve's initial
  descent); absent when the curve rises from the first point;
- **diversify**: from that trough up to the highest point after it (the post-trough peak);
- **compress**: after that peak.

Initialisation is never the peak. The post-trough peak's step is the layer's phase boundary; the
order in which layers reach it is the specialisation timeline. A layer whose peak is the last
point has not reached its boundary yet ("still diversifying"), and neither has one whose curve
only falls ("still collapsing": no trough yet, so no diversify phase and no peak) — both are
listed after the timeline as not reached. A curve that changes by less than `FLAT` of its magnitude
is "flat".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

# phase key → (the read-out's sentence, the short label of tables and the live view)
PHASE_TEXT = {
    "collapse-diversify-compress": ("collapse, diversify, then compress", "collapse → diversify → compress"),
    "collapse-diversify": ("collapse, then still diversifying (no decline after the peak)", "collapse → still diversifying"),
    "diversify-compress": ("diversify, then compress (no initial collapse)", "diversify → compress"),
    "diversify": ("still diversifying (rising from initialisation, no decline after the peak)", "still diversifying"),
    "collapse": ("still collapsing (falling throughout; trough = lowest so far)", "still collapsing"),
    "flat": ("flat (no change)", "flat"),
    "single-step": ("one step only", "one step only"),
}

# Changes smaller than this share of the curve's magnitude are no change (numerical noise of a
# curve that has not moved): no collapse, no diversify, or a flat curve.
FLAT = 1e-4

# The read-out's per-metric sections and their titles (the live view lays its table out from these).
SECTIONS = {"effective_rank": "effective rank", "head_entropy": "head entropy"}


def phase_text(phase: str, short: bool = False) -> str:
    """The sentence (or short label) of a phase key; an unknown key (an older read-out) as it is."""
    return PHASE_TEXT[phase][short] if phase in PHASE_TEXT else str(phase)


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


def effective_window(n_points: int, requested: int) -> int:
    """The smoothing window used on a curve of `n_points`: the requested one, but never more than a
    third of the points; 1 (no smoothing) below six points."""
    if requested < 1:
        raise ValueError("smoothing window must be ≥ 1")
    return 1 if n_points < 6 else max(1, min(requested, n_points // 3))


def smooth_curve(values: Sequence[float], window: int) -> list[float]:
    """The curve the phases are read on: the first point as recorded (initialisation is a jump, not
    noise around a trend: averaging it into its neighbours would move the trough later), the rest
    smoothed among themselves with a centered moving average over `window` points."""
    values = [float(v) for v in values]
    return values[:1] + moving_average(values[1:], window)


def curve_phases(steps: Sequence[int], values: Sequence[float], window: int) -> dict:
    """The phases of one curve (module docstring), read on the curve smoothed with
    `effective_window(len(values), window)` points."""
    n = len(values)
    used = effective_window(n, window)
    smoothed = smooth_curve(values, used)
    # the initial descent (non-increasing), and its lowest point: the first trough
    end = 0
    while end + 1 < n and smoothed[end + 1] <= smoothed[end]:
        end += 1
    trough = min(range(end + 1), key=lambda i: (smoothed[i], i))
    after = range(trough + 1, n)
    peak = max(after, key=lambda i: (smoothed[i], -i)) if after else None
    tol = FLAT * max(abs(v) for v in smoothed)
    collapse = trough > 0 and smoothed[0] - smoothed[trough] > tol
    diversify = peak is not None and smoothed[peak] - smoothed[trough] > tol
    if not diversify:
        peak = None
    compress = diversify and smoothed[peak] - min(smoothed[peak:]) > tol  # a plateau at the top is no compression
    if n == 1:
        phase = "single-step"
    elif max(smoothed) - min(smoothed) <= tol:
        phase = "flat"
    else:
        phase = "-".join(name for name, seen in (("collapse", collapse), ("diversify", diversify),
                                                 ("compress", compress)) if seen)
    segments = []
    if phase not in ("flat", "single-step"):
        bounds = [(name, start, stop) for name, seen, start, stop in (
            ("collapse", collapse, 0, trough), ("diversify", diversify, trough, peak),
            ("compress", compress, peak, n - 1)) if seen]
        segments = [{"phase": name, "from_step": steps[start], "to_step": steps[stop]} for name, start, stop in bounds]
    return {
        "phase": phase,
        "phases": segments,
        "trough_step": steps[trough] if collapse else None,
        "trough_value": smoothed[trough],
        "peak_step": steps[peak] if peak is not None else None,
        "peak_value": smoothed[peak] if peak is not None else None,
        # the phase boundary: the post-trough peak, once the curve has come down from it
        "boundary_step": steps[peak] if compress else None,
        "first_value": smoothed[0],
        "last_value": smoothed[-1],
        "n_steps": n,
        "window": used,
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
        layers.append({"layer": layer, "name": layer_name(layer, n_layers), **curve_phases(steps, values, smoothing)})
    reached = sorted((e for e in layers if e["boundary_step"] is not None), key=lambda e: (e["boundary_step"], e["layer"]))
    timeline = [{"layer": e["layer"], "name": e["name"], "boundary_step": e["boundary_step"]} for e in reached]
    not_reached = [{"layer": e["layer"], "name": e["name"], "phase": e["phase"]} for e in layers
                   if e["boundary_step"] is None and e["phase"] not in ("flat", "single-step")]
    return {"metric": metric, "layers": layers, "timeline": timeline, "not_reached": not_reached}


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
    """JSON-able read-out: per layer the phases of the smoothed activation effective-rank and mean
    head-entropy curves (`curve_phases`), and the specialisation timeline (layers ordered by the step
    of their post-trough peak, the ones that have not reached it listed apart)."""
    rows = list(rows)
    n_layers = _num_layers(rows)
    steps = sorted({row["step"] for row in rows})
    return {
        "smoothing": smoothing,
        "window": effective_window(len(steps), smoothing),
        "steps": [steps[0], steps[-1]] if steps else [],
        "n_steps": len(steps),
        "effective_rank": _section(
            rows, "activations", "erank", "effective rank of layer output activations (tokens × d)", smoothing, n_layers
        ),
        "head_entropy": _section(
            rows, "attention", "entropy", "attention entropy (nats), mean over heads", smoothing, n_layers
        ),
    }


def _step(value) -> str:
    return "–" if value is None else str(value)


def timeline_text(section: dict) -> str:
    """'layer 0 (30) → layer 2 (70); not reached yet: final norm (still diversifying)', or ''."""
    order = " → ".join(f"{e['name']} ({e['boundary_step']})" for e in section.get("timeline", []))
    pending = ", ".join(f"{e['name']} ({phase_text(e['phase'], short=True)})" for e in section.get("not_reached", []))
    return "; ".join(part for part in (order, f"not reached yet: {pending}" if pending else "") if part)


def _format_section(title: str, section: dict) -> list[str]:
    lines = [title + f" — {section['metric']}"]
    if not section["layers"]:
        return lines + ["  (no rows recorded)"]
    lines.append(f"  {'layer':<11}{'start':>9}{'trough':>9}{'at step':>9}{'peak':>9}{'at step':>9}{'last':>9}  phases")
    for e in section["layers"]:
        peak = "–" if e["peak_value"] is None else f"{e['peak_value']:.3f}"
        lines.append(
            f"  {e['name']:<11}{e['first_value']:>9.3f}{e['trough_value']:>9.3f}{_step(e['trough_step']):>9}"
            f"{peak:>9}{_step(e['peak_step']):>9}{e['last_value']:>9.3f}  {phase_text(e['phase'])}"
        )
    text = timeline_text(section)
    if text:
        lines.append(f"  specialisation timeline (step of the post-trough peak): {text}")
    return lines


def format_phase_readout(readout: dict) -> str:
    """A human-readable table of `phase_readout`'s result."""
    span = readout["steps"]
    window = readout.get("window", readout["smoothing"])
    smoothing = (f"centered moving average over {window} points" if window > 1 else "no smoothing")
    head = (
        f"Phase read-out: {readout['n_steps']} recorded steps"
        + (f" ({span[0]}–{span[1]})" if span else "")
        + f", {smoothing} (requested {readout['smoothing']}; at most a third of the points, none below six)"
    )
    lines = [head]
    lines += _format_section("Activation effective rank", readout["effective_rank"])
    lines += _format_section("Head entropy", readout["head_entropy"])
    return "\n".join(lines)
