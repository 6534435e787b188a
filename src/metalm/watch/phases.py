"""The phase read-out (`dynamics.phases.phase_readout`, saved by the run) as tables for the page:
one row per layer (activation effective rank, head entropy) and one row per component (weight and
gradient PER averaged over layers), with each metric's phases (collapse → diversify → compress),
the step of its first trough and the step of its post-trough peak (the phase boundary)."""

from __future__ import annotations

from typing import Any

from metalm.dynamics.phases import COMPONENT_SECTIONS, SECTIONS, phase_text, section_entries

_COLUMNS = (("phase", "phases"), ("trough_step", "trough at step"), ("peak_step", "peak at step"))


def _cell(entry: dict, field: str) -> Any:
    value = entry.get(field)
    return phase_text(value, short=True) if field == "phase" and value is not None else value


def _table(phases: Any, components: bool) -> dict[str, Any] | None:
    if not isinstance(phases, dict):
        return None
    keys = [key for key in SECTIONS if (key in COMPONENT_SECTIONS) == components]
    sections = [(key, SECTIONS[key], phases.get(key)) for key in keys]
    sections = [(key, title, s) for key, title, s in sections if isinstance(s, dict) and section_entries(s)]
    if not sections:
        return None
    ident = "component" if components else "layer"
    by_row: dict[Any, dict[str, Any]] = {}
    names: dict[Any, str] = {}
    for key, _, section in sections:
        for entry in section_entries(section):
            names[entry[ident]] = entry.get("name", str(entry[ident]))
            by_row.setdefault(entry[ident], {})[key] = entry
    order = list(by_row) if components else sorted(by_row)  # components: the read-out's display order
    columns = [ident] + [f"{title}: {label}" for _, title, _ in sections for _, label in _COLUMNS]
    rows = [[names[r]] + [_cell(by_row[r].get(key, {}), field) for key, _, _ in sections for field, _ in _COLUMNS]
            for r in order]
    return {"columns": columns, "rows": rows}


def phase_table(phases: Any) -> dict[str, Any] | None:
    """The per-layer table: {"columns": ["layer", ...], "rows": [[name, value-or-None, ...], ...]}, or
    None when the read-out has no layer (nothing recorded yet, or not a read-out)."""
    return _table(phases, components=False)


def component_phase_table(phases: Any) -> dict[str, Any] | None:
    """The per-component table of weight and gradient PER (averaged over layers), laid out as
    `phase_table` with a "component" column; None when the read-out has none."""
    return _table(phases, components=True)
