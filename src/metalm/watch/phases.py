"""The phase read-out (`dynamics.phases.phase_readout`, saved by the run) as a table for the page:
one row per layer, with each metric's phases (collapse → diversify → compress), the step of its
first trough and the step of its post-trough peak (the layer's phase boundary)."""

from __future__ import annotations

from typing import Any

from metalm.dynamics.phases import SECTIONS, phase_text

_COLUMNS = (("phase", "phases"), ("trough_step", "trough at step"), ("peak_step", "peak at step"))


def _cell(entry: dict, field: str) -> Any:
    value = entry.get(field)
    return phase_text(value, short=True) if field == "phase" and value is not None else value


def phase_table(phases: Any) -> dict[str, Any] | None:
    """{"columns": ["layer", ...], "rows": [[name, value-or-None, ...], ...]}, or None when the
    read-out has no layer (nothing recorded yet, or not a read-out)."""
    if not isinstance(phases, dict):
        return None
    sections = [(key, title, phases.get(key)) for key, title in SECTIONS.items()]
    sections = [(key, title, s) for key, title, s in sections if isinstance(s, dict) and s.get("layers")]
    if not sections:
        return None
    by_layer: dict[int, dict[str, Any]] = {}
    names: dict[int, str] = {}
    for key, _, section in sections:
        for entry in section["layers"]:
            names[entry["layer"]] = entry.get("name", str(entry["layer"]))
            by_layer.setdefault(entry["layer"], {})[key] = entry
    columns = ["layer"] + [f"{title}: {label}" for _, title, _ in sections for _, label in _COLUMNS]
    rows = [[names[layer]] + [_cell(by_layer[layer].get(key, {}), field) for key, _, _ in sections for field, _ in _COLUMNS]
            for layer in sorted(by_layer)]
    return {"columns": columns, "rows": rows}
