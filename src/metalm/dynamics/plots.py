"""PNG figures of the dynamics rows (matplotlib's Agg canvas; no display, no global backend switch)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .layers import COMPONENTS
from .phases import _num_layers, layer_name

_RANK_GROUPS = ("activations", "weights", "gradients")


def _series(rows: Iterable[dict], keep, key_of, value_key: str) -> dict:
    """key → (steps, mean value per step) over the rows passing `keep`."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if keep(row) and row.get(value_key) is not None:
            acc[key_of(row)][row["step"]].append(row[value_key])
    return {
        key: (sorted(by_step), [float(np.mean(by_step[s])) for s in sorted(by_step)])
        for key, by_step in sorted(acc.items())
    }


def _layer_curves(rows, group: str, value_key: str) -> dict:
    return _series(rows, lambda r: r.get("group") == group, lambda r: r["layer"], value_key)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


def _edges(values: Sequence[float]) -> np.ndarray:
    """Cell edges around sorted centres (for a heatmap with uneven step spacing)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _heatmap(ax, curves: dict, n_layers: int | None, label: str) -> None:
    steps = sorted({s for steps, _ in curves.values() for s in steps})
    layers = sorted(curves)
    grid = np.full((len(layers), len(steps)), np.nan)
    column = {s: i for i, s in enumerate(steps)}
    for row, layer in enumerate(layers):
        for s, v in zip(*curves[layer]):
            grid[row, column[s]] = v
    mesh = ax.pcolormesh(_edges(steps), np.arange(len(layers) + 1) - 0.5, grid, shading="flat", cmap="magma")
    ax.set_yticks(range(len(layers)), [layer_name(layer, n_layers) for layer in layers])
    ax.set_xlabel("step")
    ax.figure.colorbar(mesh, ax=ax, label=label)


def _plot_layer_lines(ax, curves: dict, n_layers: int | None, ylabel: str, title: str) -> None:
    for color, (layer, (steps, values)) in zip(_colors(len(curves)), curves.items()):
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, color=color, label=layer_name(layer, n_layers))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=2 if len(curves) > 8 else 1)


def plot_run(rows: Iterable[dict], out_dir: str | Path, title: str = "", entropy_layer: int | None = None) -> list[Path]:
    """Write the figures of one run into `out_dir` and return their paths: effective rank vs step
    per layer (activations; mean PER for weights and gradients), PER per component, layer × step
    heatmaps of activation effective rank and of head entropy, and per-head entropy of
    `entropy_layer` (default: the last layer). Figures whose rows are absent are skipped."""
    rows = list(rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = _num_layers(rows)
    prefix = f"{title}: " if title else ""
    written: list[Path] = []

    panels = [
        (group, _layer_curves(rows, group, "erank" if group == "activations" else "per")) for group in _RANK_GROUPS
    ]
    panels = [(group, curves) for group, curves in panels if curves]
    if panels:
        fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
        for ax, (group, curves) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
            if group == "activations":
                _plot_layer_lines(ax, curves, n_layers, "effective rank", f"{prefix}activations (tokens × d)")
            else:
                _plot_layer_lines(ax, curves, n_layers, "mean PER over the layer's matrices", f"{prefix}{group}")
        written.append(_save(fig, out / "erank_vs_step.png"))

    by_component = [
        (group, _series(rows, lambda r, g=group: r.get("group") == g, lambda r: r["component"], "per"))
        for group in ("weights", "gradients")
    ]
    by_component = [(group, curves) for group, curves in by_component if curves]
    if by_component:
        order = {label: i for i, label in enumerate(["embed", *COMPONENTS.values(), "lm_head"])}
        fig = Figure(figsize=(6 * len(by_component), 4.5), layout="constrained")
        for ax, (group, curves) in zip(fig.subplots(1, len(by_component), squeeze=False)[0], by_component):
            names = sorted(curves, key=lambda c: order.get(c, len(order)))
            for color, name in zip(_colors(len(names)), names):
                ax.plot(*curves[name], color=color, label=name)
            ax.set(xlabel="step", ylabel="PER, mean over layers", title=f"{prefix}{group} by component")
            ax.legend(fontsize="small")
        written.append(_save(fig, out / "per_by_component.png"))

    activations = _layer_curves(rows, "activations", "erank")
    if activations:
        fig = Figure(figsize=(8, 1.5 + 0.4 * len(activations)), layout="constrained")
        ax = fig.subplots()
        _heatmap(ax, activations, n_layers, "effective rank")
        ax.set_title(f"{prefix}activation effective rank")
        written.append(_save(fig, out / "erank_heatmap.png"))

    entropy = _layer_curves(rows, "attention", "entropy")
    if entropy:
        normalised = _layer_curves(rows, "attention", "entropy_norm")
        fig = Figure(figsize=(14, 1.5 + 0.4 * len(entropy)), layout="constrained")
        left, right = fig.subplots(1, 2)
        _heatmap(left, entropy, n_layers, "nats")
        left.set_title(f"{prefix}head entropy (mean over heads)")
        _heatmap(right, normalised, n_layers, "entropy / log(t+1)")
        right.set_title(f"{prefix}normalised head entropy")
        written.append(_save(fig, out / "entropy_heatmap.png"))

        layer = max(entropy) if entropy_layer is None else entropy_layer
        heads = _series(rows, lambda r: r.get("group") == "attention" and r["layer"] == layer, lambda r: r["head"], "entropy")
        heads_norm = _series(
            rows, lambda r: r.get("group") == "attention" and r["layer"] == layer, lambda r: r["head"], "entropy_norm"
        )
        if heads:
            fig = Figure(figsize=(12, 4.5), layout="constrained")
            for ax, curves, ylabel, what in zip(
                fig.subplots(1, 2), (heads, heads_norm), ("nats", "entropy / log(t+1)"), ("", "normalised ")
            ):
                for color, (head, (steps, values)) in zip(_colors(len(curves)), curves.items()):
                    ax.plot(steps, values, color=color, label=f"head {head}")
                ax.set(xlabel="step", ylabel=ylabel, title=f"{prefix}layer {layer} {what}head entropy")
                ax.legend(fontsize="small", ncol=2 if len(curves) > 8 else 1)
            written.append(_save(fig, out / f"head_entropy_layer{layer}.png"))
    return written


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _overlay_per_layer(curves_a: dict, curves_b: dict, labels, n_layers, ylabel: str, title: str) -> Figure:
    layers = sorted(set(curves_a) | set(curves_b))
    nrows, ncols = _grid(len(layers))
    fig = Figure(figsize=(4 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, layer in zip(axes, layers):
        for curves, label, style in ((curves_a, labels[0], "-"), (curves_b, labels[1], "--")):
            if layer in curves:
                ax.plot(*curves[layer], style, label=label)
        ax.set(title=layer_name(layer, n_layers), xlabel="step", ylabel=ylabel)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return fig


def plot_overlay(
    rows_a: Iterable[dict], rows_b: Iterable[dict], labels: Sequence[str], out_dir: str | Path
) -> list[Path]:
    """Two runs (e.g. vanilla vs meta) on shared axes: activation effective rank and mean head
    entropy per layer, and the mean PER of all weights and of all gradients."""
    rows_a, rows_b = list(rows_a), list(rows_b)
    if len(labels) != 2:
        raise ValueError("plot_overlay needs two labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = _num_layers(rows_a) or _num_layers(rows_b)
    written: list[Path] = []
    versus = f"{labels[0]} vs {labels[1]}"
    for group, key, ylabel, name in (
        ("activations", "erank", "effective rank", "overlay_activation_erank.png"),
        ("attention", "entropy", "head entropy (nats)", "overlay_head_entropy.png"),
    ):
        a, b = _layer_curves(rows_a, group, key), _layer_curves(rows_b, group, key)
        if a or b:
            what = "activation effective rank" if group == "activations" else "mean head entropy"
            written.append(_save(_overlay_per_layer(a, b, labels, n_layers, ylabel, f"{what}: {versus}"), out / name))
    totals = [
        (group, [_series(rs, lambda r, g=group: r.get("group") == g, lambda r: 0, "per").get(0) for rs in (rows_a, rows_b)])
        for group in ("weights", "gradients")
    ]
    totals = [(group, pair) for group, pair in totals if any(pair)]
    if totals:
        fig = Figure(figsize=(6 * len(totals), 4.5), layout="constrained")
        for ax, (group, pair) in zip(fig.subplots(1, len(totals), squeeze=False)[0], totals):
            for curve, label, style in zip(pair, labels, ("-", "--")):
                if curve:
                    ax.plot(*curve, style, label=label)
            ax.set(xlabel="step", ylabel="PER, mean over all matrices", title=f"{group}: {versus}")
            ax.legend(fontsize="small")
        written.append(_save(fig, out / "overlay_per.png"))
    return written
