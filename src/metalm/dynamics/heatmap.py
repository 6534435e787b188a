"""Layer x step matrices from learning-dynamics rows (`RunDir.read_dynamics`), for the live view and the loggers.

One pure function shared by the live page's API and any other consumer (e.g. a TensorBoard logger
that writes the same heatmaps as images), so both show exactly the same numbers.

Row formats (DESIGN.md 2.7):
    {"step", "group": "activations"|"weights"|"gradients", "layer", "component", "erank", "per", "shape"}
    {"step", "group": "attention", "layer", "head", "entropy", "entropy_norm"}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

ATTENTION_GROUP = "attention"


def _member_key(group: str) -> str:
    """The field that tells apart the several rows of one layer and step."""
    return "head" if group == ATTENTION_GROUP else "component"


def _is_label(value: Any) -> bool:
    """Layers, components and heads must be plain JSON scalars to be used as keys."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _layer_order(layer: Any) -> tuple[int, float, str]:
    """Numeric layers in numeric order, then any named ones (e.g. "embed") alphabetically."""
    if isinstance(layer, (int, float)) and not isinstance(layer, bool):
        return (0, float(layer), "")
    try:
        return (0, float(layer), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(layer))


def heatmap_matrix(
    rows: Iterable[Mapping[str, Any]],
    group: str,
    value_key: str,
    component: Any = None,
) -> tuple[list[Any], list[int], np.ndarray]:
    """(layers, steps, matrix) with matrix[i, j] = `value_key` of layer i at step j.

    Rows of `group` only. Several rows of one (layer, step) - the components of a layer, or the
    heads for the attention group - are averaged; pass `component` (a component name, or a head
    index for "attention") to keep only that one instead. When the same (layer, step, component)
    appears twice (a resumed run that re-logged a step) the later row wins. Cells with no row are
    NaN; steps and layers are sorted ascending.
    """
    member_key = _member_key(group)
    cells: dict[tuple[Any, int], dict[Any, float]] = {}
    for row in rows:
        if row.get("group") != group:
            continue
        member, layer = row.get(member_key), row.get("layer")
        if not _is_label(layer) or (member is not None and not _is_label(member)):
            continue
        if component is not None and member != component:
            continue
        value = row.get(value_key)
        step = row.get("step")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        cells.setdefault((layer, int(step)), {})[member] = float(value)
    layers = sorted({layer for layer, _ in cells}, key=_layer_order)
    steps = sorted({step for _, step in cells})
    layer_index = {layer: i for i, layer in enumerate(layers)}
    step_index = {step: j for j, step in enumerate(steps)}
    matrix = np.full((len(layers), len(steps)), np.nan)
    for (layer, step), members in cells.items():
        matrix[layer_index[layer], step_index[step]] = sum(members.values()) / len(members)
    return layers, steps, matrix


def members(rows: Iterable[Mapping[str, Any]], group: str) -> list[Any]:
    """The components (or, for "attention", the heads) that occur in `group`, sorted."""
    key = _member_key(group)
    found = {row.get(key) for row in rows if row.get("group") == group and _is_label(row.get(key))}
    return sorted(found, key=_layer_order)
