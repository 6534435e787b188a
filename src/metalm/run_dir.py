"""The run directory: the one place that knows its layout.

    RUN/
      config.yaml              the resolved config (written once, atomically)
      data.json                the data sources, token counts, cache location
      status.json              running / finished / interrupted / diverged / failed, step, heartbeat
      metrics.jsonl            one row per logged step (append-only)
      dynamics.jsonl           learning-dynamics rows recorded during training
      dynamics-posthoc.jsonl   the same rows computed afterwards from checkpoints
      phases.json              phase read-out of dynamics.jsonl (phases-posthoc.json: of the post-hoc rows)
      probe_batch.safetensors  the fixed probe batch every dynamics row was measured on
      tokenizer/               the run's tokenizer (save_pretrained)
      checkpoints/step-XXXXXXXX/  save_pretrained weights + state.pt (+ extra.safetensors) + checksums.json
      final/                   Hugging Face export of the final model with its tokenizer
      eval/                    evaluation results (perplexity.json, fewshot.json, ner-*.json, requested.json)
      plots/                   figures (plots/posthoc/ for the post-hoc read-out)
      tensorboard/, wandb/     optional logger output

Every other module reads and writes these through `RunDir`, so a file name is spelled once and
every file a later process reads is published atomically (`metalm.atomic`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .atomic import publish_dir, write_bytes_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic
from .checksums import checkpoint_problem
from .dir_lock import LOCK
from .errors import ConfigError
from .step_ranges import show_ranges

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
DATA = "data.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
DYNAMICS = "dynamics.jsonl"
DYNAMICS_POSTHOC = "dynamics-posthoc.jsonl"
PHASES = "phases.json"
PHASES_POSTHOC = "phases-posthoc.json"
PROBE = "probe_batch.safetensors"
TOKENIZER = "tokenizer"
CHECKPOINTS = "checkpoints"
FINAL = "final"
EVAL = "eval"
PLOTS = "plots"
TENSORBOARD = "tensorboard"
STATE = "state.pt"  # inside a checkpoint: optimizer, counters, RNG
EXTRA = "extra.safetensors"  # inside a checkpoint: trained tensors outside the model (meta head)
HF_CONFIG = "config.json"  # inside a save_pretrained directory

_STEP_DIR = re.compile(r"^step-(\d{8})$")


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file ([] when missing); an undecodable line (the half-written last line
    of a killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows in one write (a reader sees whole steps); starts a fresh line if the file ends in a
    half-written one (a killed writer)."""
    path = Path(path)
    text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                text = "\n" + text
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()


def read_json(path: str | Path) -> Any:
    """The JSON document at `path`, or None when it is missing or unreadable (half-written)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_run_dir(path: str | Path) -> bool:
    """A metalm run directory: it holds the run's config (written before anything else) or rows."""
    path = Path(path)
    return (path / CONFIG).is_file() or (path / METRICS).is_file()


def is_model_dir(path: str | Path) -> bool:
    """A save_pretrained directory (a checkpoint or a final export)."""
    return (Path(path) / HF_CONFIG).is_file()


class RunDir:
    """Paths, readers and atomic writers of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:  # its path, as where a message names it
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @classmethod
    def of(cls, run: RunDir | str | Path) -> RunDir:
        """`run` itself when it is a RunDir, else the RunDir of that path (for public entry points that
        take either; code inside metalm passes the object)."""
        return run if isinstance(run, RunDir) else cls(run)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def data_path(self) -> Path:
        return self.path / DATA

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def probe_path(self) -> Path:
        return self.path / PROBE

    @property
    def tokenizer_dir(self) -> Path:
        return self.path / TOKENIZER

    @property
    def final_dir(self) -> Path:
        return self.path / FINAL

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    def dynamics_path(self, posthoc: bool = False) -> Path:
        return self.path / (DYNAMICS_POSTHOC if posthoc else DYNAMICS)

    def phases_path(self, posthoc: bool = False) -> Path:
        return self.path / (PHASES_POSTHOC if posthoc else PHASES)

    def plots_dir(self, posthoc: bool = False) -> Path:
        return self.path / PLOTS / "posthoc" if posthoc else self.path / PLOTS

    def eval_path(self, name: str) -> Path:
        """`eval/<name>.json` (name without the suffix, e.g. `perplexity`, `ner-en-probe`)."""
        return self.eval_dir / f"{name}.json"

    def checkpoint_dir(self, step: int) -> Path:
        return self.path / CHECKPOINTS / f"step-{step:08d}"

    # -- state of the directory -----------------------------------------------------------------
    def exists(self) -> bool:
        return is_run_dir(self.path)

    def has_tokenizer(self) -> bool:
        return (self.tokenizer_dir / "tokenizer.json").is_file()

    def has_final(self) -> bool:
        return is_model_dir(self.final_dir)

    def is_finished(self) -> bool:
        status = self.read_status()
        return bool(status and status.get("state") == "finished" and self.final_dir.is_dir())

    def check_writable(self) -> None:
        """ConfigError (one line, nothing written) unless the run directory exists as a writable
        directory or can be created: not an existing file, not under a file, not read-only."""
        where = f"run.dir {str(self.path)!r}"
        try:
            if self.path.exists() and not self.path.is_dir():
                raise ConfigError(f"{where} is an existing file, not a directory")
            existing = self.path
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
        except OSError as exc:
            raise ConfigError(f"{where}: {exc.strerror or exc}") from None
        if not existing.is_dir():
            raise ConfigError(f"{where}: {str(existing)!r} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{where}: {str(existing)!r} is not writable")

    # -- config -----------------------------------------------------------------------------------
    def read_config(self) -> dict | None:
        """The saved config as a mapping (None when absent or unreadable)."""
        try:
            loaded = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def config_section(self, name: str) -> dict:
        section = (self.read_config() or {}).get(name)
        return section if isinstance(section, dict) else {}

    def write_config(self, tree: dict) -> None:
        write_text_atomic(self.config_path, yaml.safe_dump(tree, sort_keys=False))

    # -- status -------------------------------------------------------------------------------------
    def read_status(self) -> dict | None:
        status = read_json(self.status_path)
        return status if isinstance(status, dict) else None

    def write_status(self, status: dict) -> None:
        write_json_atomic(self.status_path, status)

    # -- data description --------------------------------------------------------------------------
    def read_data_info(self) -> dict | None:
        info = read_json(self.data_path)
        return info if isinstance(info, dict) else None

    def write_data_info(self, info: dict) -> None:
        write_json_atomic(self.data_path, info)

    # -- fixed inputs --------------------------------------------------------------------------------
    def write_tokenizer(self, tokenizer) -> None:
        from .tokenizer import save_tokenizer

        with publish_dir(self.tokenizer_dir) as tmp:
            save_tokenizer(tokenizer, tmp)

    def write_probe(self, input_ids) -> None:
        from safetensors.torch import save

        write_bytes_atomic(self.probe_path, save({"input_ids": input_ids.contiguous()}))

    # -- rows ----------------------------------------------------------------------------------------
    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def read_dynamics(self, posthoc: bool = False) -> list[dict]:
        return read_jsonl(self.dynamics_path(posthoc))

    def append_dynamics(self, rows: Iterable[dict], posthoc: bool = False) -> None:
        append_jsonl(self.dynamics_path(posthoc), rows)

    def write_dynamics(self, rows: list[dict], posthoc: bool = False) -> None:
        write_jsonl_atomic(self.dynamics_path(posthoc), rows)

    def truncate_rows(self, step: int | None) -> None:
        """Keep only complete metrics and dynamics rows with `step` ≤ the restored checkpoint's step
        (None: no checkpoint, the run restarts from step 0 — drop every row), so a resumed run's files
        read as if it had never been interrupted (atomically)."""
        for path in (self.metrics_path, self.dynamics_path()):
            if path.is_file():
                keep = [] if step is None else [r for r in read_jsonl(path) if r.get("step", 0) <= step]
                write_jsonl_atomic(path, keep)

    def missing_rows(self, expected: Iterable[int]) -> list[int]:
        """The `expected` steps without a metrics row (lost: a damaged or truncated metrics file)."""
        have = {r.get("step") for r in self.read_metrics()}
        return sorted(set(expected) - have)

    def metrics_problems(self, rows: list[dict] | None = None) -> list[str]:
        """What a report should warn about the metrics file: rows found missing when the run resumed
        (`metrics_gaps` in status.json, as step ranges) or rows lost after it finished (fewer than
        the `rows` it recorded). `rows`: the metrics rows, when the caller has read them already."""
        status = self.read_status() or {}
        problems = []
        if status.get("metrics_gaps"):
            problems.append(f"{self.metrics_path} lacks the rows of steps {show_ranges(status['metrics_gaps'])} "
                            "(lost before the run resumed)")
        written = status.get("rows")
        if isinstance(written, int):
            have = len(self.read_metrics() if rows is None else rows)
            if have < written:
                problems.append(f"{self.metrics_path} holds {have} of the {written} rows the run wrote")
        return problems

    # -- phases --------------------------------------------------------------------------------------
    def read_phases(self, posthoc: bool = False) -> dict | None:
        phases = read_json(self.phases_path(posthoc))
        return phases if isinstance(phases, dict) else None

    def write_phases(self, phases: dict, posthoc: bool = False) -> Path:
        path = self.phases_path(posthoc)
        write_text_atomic(path, json.dumps(phases, indent=2) + "\n")
        return path

    # -- evaluations ---------------------------------------------------------------------------------
    def read_eval(self, name: str) -> Any:
        return read_json(self.eval_path(name))

    def write_eval(self, name: str, result: Any) -> Path:
        path = self.eval_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        from .model_card import write_model_card

        write_model_card(self)  # the final model's card lists every stored result
        return path

    def eval_names(self, prefix: str = "") -> list[str]:
        """Names of the stored evaluation results starting with `prefix`, sorted."""
        if not self.eval_dir.is_dir():
            return []
        return sorted(p.stem for p in self.eval_dir.glob(f"{prefix}*.json") if not p.name.startswith("."))

    # -- checkpoints ---------------------------------------------------------------------------------
    def _step_dirs(self, resumable: bool) -> list[tuple[int, Path]]:
        root = self.path / CHECKPOINTS
        if not root.is_dir():
            return []
        found = []
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and is_model_dir(p) and (not resumable or (p / STATE).is_file()):
                found.append((int(m.group(1)), p))
        return sorted(found)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete training checkpoints (weights and optimizer state), oldest first."""
        return self._step_dirs(resumable=True)

    def latest_checkpoint(self, verify: bool = True) -> tuple[int, Path] | None:
        """The newest checkpoint — with `verify`, the newest intact one (`checkpoint_problem`): a
        damaged newer one is skipped with a warning naming what is wrong."""
        for step, path in reversed(self.checkpoints()):
            problem = checkpoint_problem(path) if verify else None
            if problem is None:
                return step, path
            log.warning("checkpoint %s is damaged (%s); using the one before it", path, problem)
        return None

    def saved_models(self) -> list[tuple[int, Path]]:
        """(step, save_pretrained directory) of every saved model by step, for post-hoc analysis: the
        checkpoints' weights, plus `final/` at the step of status.json when no checkpoint has that step."""
        found = dict(self._step_dirs(resumable=False))
        step = (self.read_status() or {}).get("step")
        if self.has_final() and isinstance(step, int) and step not in found:
            found[step] = self.final_dir
        return sorted(found.items())


REQUESTED = "requested.json"  # in RUN/eval/: the settings each stored evaluation was computed with
EXPERIMENT_SPEC = "experiment.yaml"  # in an experiment directory: the experiment as it was run
REPORT_DIR = "report"  # beside run directories compared with `metalm report RUN...`
SUMMARY = "summary.json"  # every number of an experiment's report (`experiment.summary`)
# What an experiment directory holds beside its arms' directories (so no arm may be named so).
EXPERIMENT_FILES = frozenset({EXPERIMENT_SPEC, STATUS, SUMMARY, "report.md", "report.html", PLOTS, REPORT_DIR,
                              LOCK})


class ExperimentDir:
    """An experiment directory: `experiment.yaml`, `status.json`, the report files, and one run
    directory per arm and seed (their paths: `Experiment.run_dir`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def spec_path(self) -> Path:
        return self.path / EXPERIMENT_SPEC

    def is_experiment(self) -> bool:
        return self.spec_path.is_file()

    def write_spec(self, tree: dict) -> None:
        write_text_atomic(self.spec_path, yaml.safe_dump(tree, sort_keys=False))

    def write_status(self, status: dict) -> None:
        write_json_atomic(self.path / STATUS, status)


def read_requested(run: RunDir) -> dict:
    requested = read_json(run.eval_dir / REQUESTED)
    return requested if isinstance(requested, dict) else {}


def write_requested(run: RunDir, requested: dict) -> None:
    run.eval_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.eval_dir / REQUESTED, requested)
