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
listed after the timeline as not reached.

Noise: a trough or a peak counts only when its depth or height exceeds the curve's threshold,
`NOISE_FACTOR` × its noise (`noise_scale`: a robust scale — 1.4826 × the median absolute value —
of the recorded points' residuals around the locally smoothed curve, here the line through each
point's two neighbours, which follows the curve's slope so a trend is not mistaken for noise; a
moving average's residuals would count every bend of a short curve as noise), and at least
`ABS_FLOOR` (and `REL_FLOOR` of the curve's magnitude). A rise smaller than that does not end the
initial descent, and a part of the curve that changes by less is **flat**; a curve with no phase at
all reads "flat" — never an empty label. Below six points (unsmoothed) there is no noise estimate,
so only the floors apply.

Besides the per-layer curves (activation effective rank, head entropy), the read-out covers the
paper's curves: PER of every weight matrix and of every weight's gradient, averaged over layers,
per component (attention q/k/v/o, MLP gate/up/down; the embedding and the LM head on their own).
"""

from __future__ import annotations

import math
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

# The noise threshold (module docstring). On pure-noise curves a factor of 6 reads about 97% of
# 9-point curves as flat (91% of 6-point, 99% of 15-point ones); real phases of the recorded curves
# are tens of noise scales deep.
NOISE_FACTOR = 6.0
ABS_FLOOR = 1e-3  # smaller changes are no phase whatever the noise (nats, PER, effective-rank units)
REL_FLOOR = 1e-4  # numerical noise of a curve that has not moved, as a share of its magnitude

# The read-out's sections and their titles (the live view and the report lay their tables out from
# these): per-layer sections list "layers", per-component ones "components".
SECTIONS = {"effective_rank": "effective rank", "head_entropy": "head entropy",
            "weight_per": "weight PER", "grad_per": "gradient PER"}
COMPONENT_SECTIONS = {"weight_per": "weights", "grad_per": "gradients"}  # section → dynamics row group
_COMPONENT_NAMES = {"embed": "embedding", "q": "attention q", "k": "attention k", "v": "attention v",
                    "o": "attention o", "gate": "MLP gate", "up": "MLP up", "down": "MLP down", "lm_head": "LM head"}


def section_entries(section: dict | None) -> list[dict]:
    """The curves of a read-out section: its layers or its components."""
    section = section or {}
    return section.get("layers") or section.get("components") or []


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


def noise_scale(values: Sequence[float]) -> float:
    """One recorded point's noise: 1.4826 × the median absolute residual of each point around the
    straight line through its two neighbours (a normal sd, rescaled by √(2/3): a residual holds its
    neighbours' noise too), over the points after the first (initialisation is a jump). That local
    line follows the curve's slope, so a trend is not counted as noise, and the median ignores the
    few large residuals at the curve's bends; 0 below six points (too few residuals to read a scale
    from, as too few points to smooth)."""
    if len(values) < 6:
        return 0.0
    rest = [float(v) for v in values[1:]]
    residuals = sorted(abs(rest[i] - (rest[i - 1] + rest[i + 1]) / 2) for i in range(1, len(rest) - 1))
    mid = len(residuals) // 2
    median = residuals[mid] if len(residuals) % 2 else (residuals[mid - 1] + residuals[mid]) / 2
    return 1.4826 * median * math.sqrt(2 / 3)


def curve_phases(steps: Sequence[int], values: Sequence[float], window: int) -> dict:
    """The phases of one curve (module docstring), read on the curve smoothed with
    `effective_window(len(values), window)` points."""
    n = len(values)
    used = effective_window(n, window)
    smoothed = smooth_curve(values, used)
    noise = noise_scale(values)
    threshold = max(NOISE_FACTOR * noise, ABS_FLOOR, REL_FLOOR * max(abs(v) for v in smoothed))
    # the initial descent: it ends at the first rise of more than the threshold above its lowest point
    trough = 0
    for i in range(1, n):
        if smoothed[i] - smoothed[trough] > threshold:
            break
        if smoothed[i] < smoothed[trough]:
            trough = i
    after = range(trough + 1, n)
    peak = max(after, key=lambda i: (smoothed[i], -i)) if after else None
    collapse = smoothed[0] - smoothed[trough] > threshold
    diversify = peak is not None and smoothed[peak] - smoothed[trough] > threshold
    if not diversify:
        peak = None
    compress = peak is not None and smoothed[peak] - min(smoothed[peak:]) > threshold  # a plateau at the top is none
    seen = [name for name, on in (("collapse", collapse), ("diversify", diversify), ("compress", compress)) if on]
    phase = "single-step" if n == 1 else ("-".join(seen) or "flat")
    bounds = {"collapse": (0, trough)}
    if peak is not None:  # diversify and compress need a peak
        bounds.update(diversify=(trough, peak), compress=(peak, n - 1))
    segments = [{"phase": name, "from_step": steps[bounds[name][0]], "to_step": steps[bounds[name][1]]}
                for name in seen]
    return {
        "phase": phase,
        "phases": segments,
        "trough_step": steps[trough] if collapse else None,
        "trough_value": smoothed[trough],
        "peak_step": steps[peak] if peak is not None else None,
        "peak_value": smoothed[peak] if peak is not None else None,
        # the phase boundary: the post-trough peak, once the curve has come down from it
        "boundary_step": steps[peak] if compress and peak is not None else None,
        "first_value": smoothed[0],
        "last_value": smoothed[-1],
        "n_steps": n,
        "window": used,
        "noise": noise,
        "threshold": threshold,
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


def _per_component_curves(rows: Iterable[dict], group: str) -> dict[str, tuple[list[int], list[float]]]:
    """component → (steps, PER of that component's `group` rows averaged over layers at each step),
    in display order (embedding, attention q/k/v/o, MLP gate/up/down, LM head)."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        value = row.get("per")
        if row.get("group") == group and value is not None:
            sums[row["component"]][row["step"]].append(value)
    order = list(_COMPONENT_NAMES)
    curves = {}
    for component in sorted(sums, key=lambda c: (order.index(c) if c in order else len(order), c)):
        by_step = sums[component]
        steps = sorted(by_step)
        curves[component] = (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps])
    return curves


def _timeline(entries: list[dict], key: str) -> dict:
    """The order in which curves reach their phase boundary, and the ones that have not."""
    reached = sorted((e for e in entries if e["boundary_step"] is not None), key=lambda e: e["boundary_step"])
    return {"timeline": [{key: e[key], "name": e["name"], "boundary_step": e["boundary_step"]} for e in reached],
            "not_reached": [{key: e[key], "name": e["name"], "phase": e["phase"]} for e in entries
                            if e["boundary_step"] is None and e["phase"] not in ("flat", "single-step")]}


def _section(rows: list[dict], group: str, value_key: str, metric: str, smoothing: int, n_layers: int | None) -> dict:
    layers = [{"layer": layer, "name": layer_name(layer, n_layers), **curve_phases(steps, values, smoothing)}
              for layer, (steps, values) in _per_layer_curves(rows, group, value_key).items()]
    return {"metric": metric, "layers": layers, **_timeline(layers, "layer")}


def _component_section(rows: list[dict], group: str, metric: str, smoothing: int) -> dict:
    components = [{"component": c, "name": _COMPONENT_NAMES.get(c, c), **curve_phases(steps, values, smoothing)}
                  for c, (steps, values) in _per_component_curves(rows, group).items()]
    return {"metric": metric, "components": components, **_timeline(components, "component")}


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
    of their post-trough peak, the ones that have not reached it listed apart); per component the
    same for weight and gradient PER averaged over layers."""
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
        "weight_per": _component_section(rows, "weights", "PER of the weight matrices, mean over layers", smoothing),
        "grad_per": _component_section(rows, "gradients", "PER of the weights' gradients on the probe batch, mean "
                                       "over layers", smoothing),
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
    entries = section_entries(section)
    if not entries:
        return lines + ["  (no rows recorded)"]
    what = "layer" if "layers" in section else "component"
    lines.append(f"  {what:<13}{'start':>9}{'trough':>9}{'at step':>9}{'peak':>9}{'at step':>9}{'last':>9}"
                 f"{'threshold':>11}  phases")
    for e in entries:
        peak = "–" if e["peak_value"] is None else f"{e['peak_value']:.3f}"
        noise = f"{e['threshold']:.2g}" if "threshold" in e else "–"
        lines.append(
            f"  {e['name']:<13}{e['first_value']:>9.3f}{e['trough_value']:>9.3f}{_step(e['trough_step']):>9}"
            f"{peak:>9}{_step(e['peak_step']):>9}{e['last_value']:>9.3f}{noise:>11}  {phase_text(e['phase'])}"
        )
    text = timeline_text(section)
    if text:
        lines.append(f"  specialisation timeline (step of the post-trough peak): {text}")
    return lines


def readout_header(readout: dict) -> str:
    """What the read-out was computed from and how it decides, in sentences."""
    n, span, requested = readout["n_steps"], readout["steps"], readout["smoothing"]
    window = readout.get("window", requested)
    where = f" (steps {span[0]} to {span[1]})" if span and n > 1 else (f" (step {span[0]})" if span else "")
    head = f"Phase read-out of {n} recorded step{'s' * (n != 1)}{where}."
    if window > 1:
        smoothing = (f" Each curve is smoothed with a centered moving average over {window} points"
                     + (f" ({requested} requested; the window never exceeds a third of the points)"
                        if window != requested else "") + ".")
    else:
        smoothing = (" The curves are read unsmoothed" + (
            f": smoothing ({requested} points requested) needs at least six recorded steps, and its window "
            "never exceeds a third of them" if requested > 1 else "") + ".")
    noise = (f" A trough or peak counts only when it is deeper or higher than the curve's threshold (column "
             f"'threshold'): {NOISE_FACTOR:g} × the curve's noise (1.4826 × the median distance of its recorded "
             f"points from the line through their neighbours), and at least {ABS_FLOOR:g}; a part of a curve that "
             "moves less is flat." if n >= 6 else
             f" A trough or peak counts only when it is deeper or higher than {ABS_FLOOR:g} (column 'threshold'; "
             "with fewer than six recorded steps the curves' noise cannot be estimated); a part of a curve that "
             "moves less is flat.")
    return head + smoothing + noise


def format_phase_readout(readout: dict) -> str:
    """A human-readable table of `phase_readout`'s result."""
    lines = [readout_header(readout)]
    lines += _format_section("Activation effective rank", readout["effective_rank"])
    lines += _format_section("Head entropy", readout["head_entropy"])
    for key, title in (("weight_per", "Weight PER"), ("grad_per", "Gradient PER")):
        if key in readout:
            lines += _format_section(title, readout[key])
    return "\n".join(lines)
