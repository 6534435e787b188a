"""Checkpoints: written atomically, loaded without unpickling code.

`RUN/checkpoints/step-XXXXXXXX/` is a `save_pretrained` directory (safetensors weights +
config.json, so `AutoModelForCausalLM.from_pretrained` and post-hoc analysis can open it) plus
`state.pt` (optimizer state, counters, RNG) loaded with `torch.load(weights_only=True)` and
`extra.safetensors` for any additional trained tensors (e.g. a meta-learned head). Each checkpoint
is assembled in a temporary directory and renamed into place, so a kill at any moment leaves
either the complete checkpoint or none.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # no "Writing model shards" bar inside our own progress bar

_STEP_DIR = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written directory into place (replacing an older copy)."""
    if final.exists():
        trash = final.with_name(f".old-{final.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, state: dict[str, Any],
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if extra_tensors:
        save_file({k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}, str(tmp / "extra.safetensors"))
    torch.save(state, tmp / "state.pt")
    replace_dir(tmp, final)
    return final


def load_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load `model.safetensors` from a save_pretrained directory into an existing model, exactly."""
    weights = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint {directory} does not match the model: missing {missing}, unexpected {unexpected}")


def load_state(directory: Path) -> dict[str, Any]:
    return torch.load(directory / "state.pt", map_location="cpu", weights_only=True)


def load_extra(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / "extra.safetensors"
    return load_file(str(path)) if path.is_file() else {}


def prune(run_dir: Path, keep: int) -> None:
    """Keep the `keep` newest checkpoints (0 keeps all)."""
    if keep > 0:
        for _, path in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


def resolve_model_dir(path: str | Path) -> tuple[Path, Path, Path | None]:
    """(model dir, tokenizer dir, run dir or None) for a run directory (its `final/` export, or
    its latest checkpoint while it trains) or a save_pretrained checkpoint directory."""
    from .errors import MetalmError

    path = Path(path)
    if not path.exists():
        raise MetalmError(f"no such run or checkpoint: {path}")
    if (path / "config.yaml").is_file():  # a run directory
        if (path / "final" / "config.json").is_file():
            return path / "final", path / "final", path
        latest = latest_checkpoint(path)
        if latest is None:
            raise MetalmError(f"run {path} has no final model and no checkpoint yet")
        return latest[1], path / "tokenizer", path
    if (path / "config.json").is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else (path.parent if path.name == "final" else None)
        tok_dir = path if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() else None
        if tok_dir is None and run_dir is not None and (run_dir / "tokenizer").is_dir():
            tok_dir = run_dir / "tokenizer"
        if tok_dir is None:
            raise MetalmError(f"{path}: no tokenizer next to the checkpoint (nor in its run directory)")
        return path, tok_dir, run_dir
    raise MetalmError(f"{path} is neither a metalm run directory nor a save_pretrained checkpoint")
