"""Checkpoints: written atomically, loaded without unpickling code.

`RUN/checkpoints/step-XXXXXXXX/` is a `save_pretrained` directory (safetensors weights +
config.json, so `AutoModelForCausalLM.from_pretrained` and post-hoc analysis can open it) plus
`state.pt` (optimizer state, counters, RNG) loaded with `torch.load(weights_only=True)` and
`extra.safetensors` for any additional trained tensors (e.g. a meta-learned head), and
`checksums.json` (size and sha256 of every other file), so a damaged checkpoint is recognised and
an older one used instead. Each checkpoint is assembled in a temporary directory and renamed into
place, so a kill at any moment leaves either the complete checkpoint or none. Where checkpoints live
is `RunDir`'s business.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import publish_dir, write_json_atomic
from .checksums import CHECKSUMS, checkpoint_problem, file_digests
from .errors import CheckpointError, MetalmError, StorageError
from .run_dir import EXTRA, STATE, TOKENIZER, RunDir, is_model_dir, is_run_dir
from .tokenizer import save_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@contextlib.contextmanager
def quiet_hf_progress():
    """No "Writing model shards" bar inside our own progress display (restored afterwards, so
    importing metalm changes nothing for the rest of the process)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_pretrained_atomic(final: Path, model: PreTrainedModel, tokenizer=None,
                           extra_tensors: dict[str, torch.Tensor] | None = None,
                           state: dict[str, Any] | None = None, checksums: bool = False) -> Path:
    """A save_pretrained directory (plus tokenizer, extra tensors and training state when given, and
    `checksums.json` of its files with `checksums`), published atomically at `final`. A write the
    file system refuses (full, over quota or a file-size limit) is a StorageError naming the path
    and the cause — torch and safetensors report it as their own errors, not as OSError."""
    try:
        with publish_dir(final) as tmp, quiet_hf_progress():
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                save_tokenizer(tokenizer, tmp)
            if extra_tensors:
                save_file({k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}, str(tmp / EXTRA))
            if state is not None:
                torch.save(state, tmp / STATE)
            if checksums:
                write_json_atomic(tmp / CHECKSUMS, file_digests(tmp))
    except (OSError, RuntimeError, SafetensorError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            " ".join(str(exc).split())[:200] or type(exc).__name__
        if "unexpected pos" in cause or "write failed" in cause:  # torch's words for a short write
            cause = "a write was cut short (the disk is full or a file-size limit was reached)"
        raise StorageError(f"cannot write {final}: {cause}; free some space (or lift the limit) and re-run the same "
                           "command (a run resumes from its last checkpoint)") from exc
    return final


def save_checkpoint(run: RunDir, step: int, model: PreTrainedModel, state: dict[str, Any],
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    return save_pretrained_atomic(run.checkpoint_dir(step), model, extra_tensors=extra_tensors, state=state,
                                  checksums=True)


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load `model.safetensors` from a save_pretrained directory into an existing model, exactly."""
    weights = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {directory} does not match the model: missing {missing}, unexpected {unexpected}")


def load_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / STATE, map_location="cpu", weights_only=True)


def load_extra(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / EXTRA
    return load_file(str(path)) if path.is_file() else {}


def prune(run: RunDir, keep: int) -> None:
    """Keep the `keep` newest checkpoints (0 keeps all)."""
    if keep > 0:
        for _, path in run.checkpoints()[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class ModelLocation:
    """Where a model to evaluate lies: its save_pretrained directory, its tokenizer, and the run it
    belongs to (None for a checkpoint outside a run directory)."""

    model_dir: Path
    tokenizer_dir: Path
    run: RunDir | None


def resolve_model_dir(path: str | Path, verify: bool = True) -> ModelLocation:
    """The model of a run directory (its `final/` export, or its latest intact checkpoint while it
    trains) or of a save_pretrained checkpoint directory. `verify=False` skips the checksums, for a
    caller that only needs the run directory."""
    path = Path(path)
    if not path.exists():
        raise MetalmError(f"no such run or checkpoint: {path}")
    if is_run_dir(path):
        run = RunDir(path)
        if run.has_final():
            return ModelLocation(run.final_dir, run.final_dir, run)
        latest = run.latest_checkpoint(verify=verify)
        if latest is None:
            if run.checkpoints():
                raise CheckpointError(f"run {path} has no final model and every checkpoint is damaged")
            raise MetalmError(f"run {path} has no final model and no checkpoint yet")
        return ModelLocation(latest[1], run.tokenizer_dir, run)
    if is_model_dir(path):
        problem = checkpoint_problem(path) if verify else None
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
        parent = path.parent.parent if path.parent.name == "checkpoints" else (path.parent if path.name == "final" else None)
        run_dir = parent if parent is not None and is_run_dir(parent) else None
        tok_dir = path if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() else None
        if tok_dir is None and parent is not None and (parent / TOKENIZER).is_dir():
            tok_dir = parent / TOKENIZER
        if tok_dir is None:
            raise MetalmError(f"{path}: no tokenizer next to the checkpoint (nor in its run directory)")
        return ModelLocation(path, tok_dir, RunDir(run_dir) if run_dir is not None else None)
    raise MetalmError(f"{path} is neither a metalm run directory nor a save_pretrained checkpoint")
