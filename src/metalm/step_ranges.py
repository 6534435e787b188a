"""Steps as ranges: the rows a metrics file lacks, said as `2–4, 7` rather than one step each."""

from __future__ import annotations

from collections.abc import Iterable


def step_ranges(steps: Iterable[int]) -> list[list[int]]:
    """[[first, last], ...] of the runs of consecutive integers in `steps`."""
    ranges: list[list[int]] = []
    for step in sorted(set(steps)):
        if ranges and step == ranges[-1][1] + 1:
            ranges[-1][1] = step
        else:
            ranges.append([step, step])
    return ranges


def show_ranges(ranges: list[list[int]]) -> str:
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in ranges)
