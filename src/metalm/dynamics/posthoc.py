"""Post-hoc dynamics: the same rows as during training, computed from every saved checkpoint.

A run trained with `dynamics.every: 0` is analysed entirely after the fact; a run that recorded
rows on the fly gets a separate post-hoc rows file (with its own phase read-out and
`plots/posthoc/`; see `RunDir`) so the two never mix. Reruns resume: steps already in the file are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checksums import checkpoint_problem
from ..device import enable_tf32, resolve_device
from ..errors import DataError, MetalmError
from ..run_dir import RunDir
from .config import ALL_GROUPS
from .plots import plot_overlay
from .probe import dynamics_rows
from .phases import phase_readout
from .readout import Readout, write_readout

_log = logging.getLogger(__name__)

__all__ = [
    "PosthocResult",
    "analyse_run",
    "compare_runs",
    "load_probe_batch",
    "preferred_rows",
]


@dataclass
class PosthocResult:
    rows_path: Path
    rows: list[dict]
    computed_steps: list[int] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    readout: Readout | None = None
    unsaved: str | None = None  # why nothing could be written into the run directory (read-only), if so


def load_probe_batch(run_dir: RunDir | str | Path, probe_input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The run's probe batch: `RunDir.probe_path` (key `input_ids`) if present, else the
    given tensor, else rebuilt from the run's config and data (a run with `dynamics.every: 0`
    saves none); the same batch the run recorded its on-the-fly rows with."""
    run = RunDir.of(run_dir)
    path = run.probe_path
    if path.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(path))["input_ids"].long()
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the probe batch (key 'input_ids'): {exc}") from None
    if probe_input_ids is None:
        return _rebuilt_probe_batch(run)
    return probe_input_ids.long()


def _rebuilt_probe_batch(run: RunDir) -> torch.Tensor:
    from ..config import from_dict
    from ..data import prepare_corpus
    from .probe import probe_batch

    saved = run.read_config()
    if saved is None or not run.has_tokenizer():
        raise DataError(f"{run.probe_path}: no probe batch saved with the run, and no config and tokenizer to rebuild it")
    from ..tokenizer import load_tokenizer

    cfg = from_dict(saved)
    corpus = prepare_corpus(cfg.data, cfg.run.cache_dir, load_tokenizer(run.tokenizer_dir), progress=False)
    return probe_batch(cfg.dynamics, cfg.train.seq_len, corpus.validation).long()


def recorded_on_the_fly(run: RunDir) -> bool:
    """Whether the trainer recorded dynamics rows (the run's `dynamics.every` > 0); without a
    config file, whether its dynamics rows file exists."""
    every = run.config_section("dynamics").get("every")
    if isinstance(every, int):
        return every > 0
    return run.dynamics_path().exists()


def _load_model(path: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as exc:  # a missing or damaged file: OS, safetensors and value errors alike
        raise MetalmError(f"{path}: cannot load the checkpoint: {type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]}") from None
    return model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) loses the self binding


def analyse_run(
    run_dir: RunDir | str | Path,
    probe_input_ids: torch.Tensor | None = None,
    groups: Iterable[str] = ALL_GROUPS,
    overwrite: bool = False,
    *,
    smoothing: int | None = None,
    device: str | torch.device = "cpu",
    readout: bool = True,
    log: Callable[[str], None] | None = None,
) -> PosthocResult:
    """Dynamics rows of every checkpoint of `run_dir` → the run's post-hoc rows file (or its
    ordinary dynamics file when the run recorded none), then the phase read-out and figures
    (post-hoc ones beside the run's own). Steps already in the file with every requested
    group are kept unless `overwrite`. `smoothing` defaults to the run's `dynamics.smoothing` (5)."""
    run = RunDir.of(run_dir)
    if not run.path.is_dir():
        raise MetalmError(f"{run.path}: not a run directory")
    groups = list(groups)
    checkpoints = run.saved_models()
    if not checkpoints:
        raise MetalmError(f"{run.path}: no saved checkpoints (checkpoints/step-XXXXXXXX/ or final/) to analyse")
    probe = load_probe_batch(run, probe_input_ids)
    posthoc = recorded_on_the_fly(run)
    rows_path = run.dynamics_path(posthoc)
    if smoothing is None:
        configured = run.config_section("dynamics").get("smoothing")
        smoothing = configured if isinstance(configured, int) and configured >= 1 else 5

    kept: list[dict] = [] if overwrite else run.read_dynamics(posthoc)
    present: dict[int, set[str]] = {}
    for row in kept:
        present.setdefault(row["step"], set()).add(row["group"])
    done = {step for step, found in present.items() if set(groups) <= found}
    kept = [row for row in kept if row["step"] in done]  # partial steps are recomputed
    result = PosthocResult(rows_path, kept)
    try:
        run.write_dynamics(kept, posthoc)
    except OSError as exc:  # a read-only run directory: computed and read out all the same, in memory
        result.unsaved = exc.strerror or str(exc)
    device = resolve_device(device)
    enable_tf32(device)  # the trainer's float32 matmul setting: the on-the-fly rows' numbers (probe.py)
    for step, path in checkpoints:
        if step in done:
            result.skipped_steps.append(step)
            continue
        if log:
            log(f"dynamics: step {step} ({path.relative_to(run.path)})")
        problem = checkpoint_problem(path)
        try:
            model = _load_model(path, device) if problem is None else None
        except MetalmError as exc:
            problem = str(exc).removeprefix(f"{path}: ")
        if model is None:
            _log.warning("checkpoint %s is damaged (%s); skipping it", path, problem)
            continue
        rows = dynamics_rows(model, probe, step, groups)
        del model
        if result.unsaved is None:
            run.append_dynamics(rows, posthoc)
        result.rows.extend(rows)
        result.computed_steps.append(step)
    result.rows.sort(key=lambda row: row["step"])
    if readout and result.unsaved is None:
        result.readout = write_readout(
            run,
            result.rows,
            smoothing,
            posthoc=posthoc,
            title=f"{run.path.name} (post hoc)" if posthoc else run.path.name,
        )
    elif readout:
        result.readout = Readout(phase_readout(result.rows, smoothing), None)
    return result


def preferred_rows(run_dir: RunDir | str | Path) -> tuple[list[dict], Path]:
    """The run's densest rows: those recorded on the fly if it has any, else the post-hoc ones."""
    run = RunDir.of(run_dir)
    for posthoc in (False, True):
        rows = run.read_dynamics(posthoc)
        if rows:
            return rows, run.dynamics_path(posthoc)
    raise MetalmError(f"{run.path}: no dynamics rows (run `metalm dynamics {run}` to compute them from checkpoints)")


def compare_runs(
    run_a: RunDir | str | Path,
    run_b: RunDir | str | Path,
    out_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Overlay figures of two runs (default into `RUN_A/plots/overlay-<RUN_B name>/`)."""
    a, b = RunDir.of(run_a), RunDir.of(run_b)
    rows_a, _ = preferred_rows(a)
    rows_b, _ = preferred_rows(b)
    labels = list(labels) if labels else [a.path.name, b.path.name]
    if labels[0] == labels[1]:
        labels = [str(a.path), str(b.path)]
    out = Path(out_dir) if out_dir else a.plots_dir() / f"overlay-{b.path.name}"
    return plot_overlay(rows_a, rows_b, labels, out)
