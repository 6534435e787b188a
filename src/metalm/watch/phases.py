"""A table view of `RUN/phases.json` that does not depend on its exact layout.

The phase read-out (DESIGN.md 2.7) gives, per layer, the step where the smoothed effective-rank
curve and the head-entropy curve peak. Rather than hard-wire one JSON layout, this finds every
number that sits under a key mentioning "erank" or "entropy" and belongs to a layer (a layer-like
dict key, a `"layer"` field beside it, or a position in a list under a "peak" key) and lays them
out as one row per layer and one column per such key path. Anything it cannot place is still
shown by the page as the raw JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Path segments that say "the value" rather than "which value"; left out of column names.
_GENERIC = {"peak_step", "peak_steps", "peak", "peaks", "step", "steps", "per_layer", "layers", "by_layer"}
_TOPICS = ("erank", "entropy")
_MAX_DEPTH = 6


def _layer_key(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str):
        text = key.removeprefix("layer").removeprefix("_").removeprefix("-").strip()
        if text.isdigit():
            return int(text)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaves(node: Any, path: tuple[str, ...], layer: int | None, depth: int) -> Iterator[tuple[tuple[str, ...], int | None, float]]:
    """(path without layer keys, layer, number) for every numeric leaf."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, dict):
        own_layer = _layer_key(node.get("layer")) if "layer" in node else None
        for key, value in node.items():
            if key == "layer":
                continue
            as_layer = _layer_key(key)
            if as_layer is not None:
                if _is_number(value):
                    yield path, as_layer, value
                else:
                    yield from _leaves(value, path, as_layer, depth + 1)
            elif _is_number(value):
                yield path + (str(key),), own_layer if own_layer is not None else layer, value
            else:
                yield from _leaves(value, path + (str(key),), own_layer if own_layer is not None else layer, depth + 1)
    elif isinstance(node, list):
        by_position = bool(path) and "peak" in path[-1].lower()
        for index, value in enumerate(node):
            if _is_number(value):
                if by_position:
                    yield path, index, value
            else:
                yield from _leaves(value, path, layer, depth + 1)


def phase_table(phases: Any) -> dict[str, Any] | None:
    """{"columns": ["layer", ...], "rows": [[layer, value-or-None, ...], ...]} or None when no
    per-layer erank/entropy number is found."""
    cells: dict[str, dict[int, float]] = {}
    for path, layer, value in _leaves(phases, (), None, 0):
        if layer is None or not any(topic in "/".join(path).lower() for topic in _TOPICS):
            continue
        column = "/".join(segment for segment in path if segment.lower() not in _GENERIC) or "/".join(path)
        cells.setdefault(column, {}).setdefault(layer, value)
    if not cells:
        return None
    columns = sorted(cells, key=lambda c: (0 if "erank" in c.lower() else 1, c))
    layers = sorted({layer for column in cells.values() for layer in column})
    rows = [[layer] + [cells[column].get(layer) for column in columns] for layer in layers]
    return {"columns": ["layer"] + columns, "rows": rows}
