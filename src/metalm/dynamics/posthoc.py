"""Post-hoc dynamics: the same rows as during training, computed from every saved checkpoint.

A run trained with `dynamics.every: 0` is analysed entirely after the fact; a run that recorded
rows on the fly gets a separate `dynamics-posthoc.jsonl` (its own `phases-posthoc.json` and
`plots/posthoc/`) so the two never mix. Reruns resume: steps already in the file are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..errors import DataError, MetalmError
from .config import ALL_GROUPS
from .plots import plot_overlay
from .probe import dynamics_rows
from .readout import Readout, write_readout
from .rows import DYNAMICS_FILE, PROBE_FILE, append_rows, load_rows, write_rows

__all__ = [
    "PosthocResult",
    "analyse_run",
    "compare_runs",
    "list_checkpoints",
    "load_probe_batch",
    "load_rows",
    "preferred_rows",
]

_CHECKPOINT = re.compile(r"^step-(\d+)$")


@dataclass
class PosthocResult:
    rows_path: Path
    rows: list[dict]
    computed_steps: list[int] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    readout: Readout | None = None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _dynamics_cfg(run: Path) -> dict:
    section = _read_yaml(run / "config.yaml").get("dynamics")
    return section if isinstance(section, dict) else {}


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every saved model, by step: `RUN/checkpoints/step-XXXXXXXX/`, plus
    `RUN/final/` at the step of `RUN/status.json` when no checkpoint has that step."""
    run = Path(run_dir)
    found: dict[int, Path] = {}
    directory = run / "checkpoints"
    if directory.is_dir():
        for child in directory.iterdir():
            match = _CHECKPOINT.match(child.name)
            if match and (child / "config.json").exists():
                found[int(match.group(1))] = child
    final = run / "final"
    step = _read_yaml(run / "status.json").get("step")  # JSON is YAML
    if (final / "config.json").exists() and isinstance(step, int) and step not in found:
        found[step] = final
    return sorted(found.items())


def load_probe_batch(run_dir: str | Path, probe_input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The run's probe batch: `RUN/probe_batch.safetensors` (key `input_ids`) if present, else the
    given tensor; the same batch the run recorded its on-the-fly rows with."""
    path = Path(run_dir) / PROBE_FILE
    if path.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["input_ids"].long()
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the probe batch (key 'input_ids'): {exc}") from None
    if probe_input_ids is None:
        raise DataError(f"{path}: no probe batch saved with the run, and none given")
    return probe_input_ids.long()


def recorded_on_the_fly(run_dir: str | Path) -> bool:
    """Whether the trainer recorded dynamics rows (the run's `dynamics.every` > 0); without a
    config file, whether `RUN/dynamics.jsonl` exists."""
    run = Path(run_dir)
    every = _dynamics_cfg(run).get("every")
    if isinstance(every, int):
        return every > 0
    return (run / DYNAMICS_FILE).exists()


def _load_model(path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise MetalmError(f"{path}: cannot load the checkpoint: {exc}") from None
    return model.to(device)


def analyse_run(
    run_dir: str | Path,
    probe_input_ids: torch.Tensor | None = None,
    groups: Iterable[str] = ALL_GROUPS,
    overwrite: bool = False,
    *,
    smoothing: int | None = None,
    device: str | torch.device = "cpu",
    readout: bool = True,
    log: Callable[[str], None] | None = None,
) -> PosthocResult:
    """Dynamics rows of every checkpoint of `run_dir` → `RUN/dynamics-posthoc.jsonl` (or
    `RUN/dynamics.jsonl` when the run recorded none), then the phase read-out and figures
    (`phases[-posthoc].json`, `plots[/posthoc]/`). Steps already in the file with every requested
    group are kept unless `overwrite`. `smoothing` defaults to the run's `dynamics.smoothing` (5)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise MetalmError(f"{run}: not a run directory")
    groups = list(groups)
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise MetalmError(f"{run}: no saved checkpoints (checkpoints/step-XXXXXXXX/ or final/) to analyse")
    probe = load_probe_batch(run, probe_input_ids)
    posthoc = recorded_on_the_fly(run)
    rows_path = run / ("dynamics-posthoc.jsonl" if posthoc else DYNAMICS_FILE)
    if smoothing is None:
        configured = _dynamics_cfg(run).get("smoothing")
        smoothing = configured if isinstance(configured, int) and configured >= 1 else 5

    kept: list[dict] = [] if overwrite else load_rows(rows_path)
    present: dict[int, set[str]] = {}
    for row in kept:
        present.setdefault(row["step"], set()).add(row["group"])
    done = {step for step, found in present.items() if set(groups) <= found}
    kept = [row for row in kept if row["step"] in done]  # partial steps are recomputed
    write_rows(rows_path, kept)

    result = PosthocResult(rows_path, kept)
    device = torch.device(device)
    for step, path in checkpoints:
        if step in done:
            result.skipped_steps.append(step)
            continue
        if log:
            log(f"dynamics: step {step} ({path.relative_to(run)})")
        model = _load_model(path, device)
        rows = dynamics_rows(model, probe, step, groups)
        del model
        append_rows(rows_path, rows)
        result.rows.extend(rows)
        result.computed_steps.append(step)
    result.rows.sort(key=lambda row: row["step"])
    if readout:
        suffix = "-posthoc" if posthoc else ""
        result.readout = write_readout(
            run,
            result.rows,
            smoothing,
            phases_name=f"phases{suffix}.json",
            plots_dir="plots/posthoc" if posthoc else "plots",
            title=f"{run.name} (post hoc)" if posthoc else run.name,
        )
    return result


def preferred_rows(run_dir: str | Path) -> tuple[list[dict], Path]:
    """The run's densest rows: on-the-fly `dynamics.jsonl` if it has any, else the post-hoc file."""
    run = Path(run_dir)
    for name in (DYNAMICS_FILE, "dynamics-posthoc.jsonl"):
        rows = load_rows(run / name)
        if rows:
            return rows, run / name
    raise MetalmError(f"{run}: no dynamics rows (run `metalm dynamics {run}` to compute them from checkpoints)")


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Overlay figures of two runs (default into `RUN_A/plots/overlay-<RUN_B name>/`)."""
    run_a, run_b = Path(run_a), Path(run_b)
    rows_a, _ = preferred_rows(run_a)
    rows_b, _ = preferred_rows(run_b)
    labels = list(labels) if labels else [run_a.name, run_b.name]
    if labels[0] == labels[1]:
        labels = [str(run_a), str(run_b)]
    out = Path(out_dir) if out_dir else run_a / "plots" / f"overlay-{run_b.name}"
    return plot_overlay(rows_a, rows_b, labels, out)
