"""How the report prints numbers: losses with fixed decimals, signed differences, intervals,
amounts of each measure, seed lists."""

from __future__ import annotations

from typing import Protocol


class Interval(Protocol):
    """Anything with a 95% interval (`summary.MeanCI` and the results that carry one)."""

    @property
    def ci(self) -> list[float] | None: ...


def _loss(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.4f}"


def _ci(ci: list[float] | None, digits: int = 4, signed: bool = False) -> str:
    if not ci:
        return "–"
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]" if signed else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _amount(measure: str, v: float | None) -> str:
    """A cost or budget: steps and seconds with one decimal, tokens and FLOPs in scientific notation."""
    if v is None:
        return "–"
    return f"{v:.1f}" if measure in ("step", "time") else f"{v:.3e}"


def _seeds(seeds) -> str:
    seeds = list(seeds)
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def _interval(stat: Interval, signed: bool = True, digits: int = 4) -> str:
    if stat.ci:
        return f"95% CI {_ci(stat.ci, digits, signed)}"
    return "one seed: no interval"


def _dropped(dropped: dict) -> str:
    return "; ".join(f"seed {s} dropped: {why}" for s, why in dropped.items())
