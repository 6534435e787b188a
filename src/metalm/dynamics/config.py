"""The `dynamics` configuration section: when and what to record about the learning dynamics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config_base import Section
from ..errors import ConfigError

Group = Literal["activations", "weights", "gradients", "attention"]
ALL_GROUPS: tuple[Group, ...] = ("activations", "weights", "gradients", "attention")


class DynamicsConfig(Section):
    """Probe-batch statistics (DESIGN 2.7) recorded every `every` optimizer steps.

    `every: 0` records nothing during training; `metalm dynamics RUN_DIR` can still compute the
    same rows afterwards from the saved checkpoints.
    """

    every: int = Field(50, ge=0, description="record every N optimizer steps (0: none during training; "
                                             "50: ~2.5% of training time on the micro preset, see benchmarks/)")
    probe_sequences: int = Field(8, gt=0, description="sequences in the fixed probe batch")
    probe_seq_len: int | None = Field(None, ge=2, description="tokens per probe sequence (null: train.seq_len)")
    groups: list[Group] = Field(default_factory=lambda: list(ALL_GROUPS), min_length=1,
                                description=f"statistics recorded: {', '.join(ALL_GROUPS)}")
    smoothing: int = Field(5, ge=1, description="centered moving-average window of the phase read-out")

    @field_validator("groups")
    @classmethod
    def _no_duplicates(cls, groups: list[str]) -> list[str]:
        duplicated = sorted({g for g in groups if groups.count(g) > 1})
        if duplicated:
            raise ValueError(f"groups: {', '.join(duplicated)} listed more than once")
        return groups


def probe_shape(cfg: DynamicsConfig, train_seq_len: int) -> tuple[int, int]:
    """(sequences, tokens per sequence) of the probe batch."""
    return cfg.probe_sequences, cfg.probe_seq_len or train_seq_len


def check_dynamics(cfg: DynamicsConfig, train_seq_len: int, max_position_embeddings: int | None) -> None:
    """Cross-section check: the probe sequences must fit the model's context."""
    seq_len = cfg.probe_seq_len or train_seq_len
    if max_position_embeddings is not None and seq_len > max_position_embeddings:
        key = "dynamics.probe_seq_len" if cfg.probe_seq_len else "train.seq_len (used as dynamics.probe_seq_len)"
        raise ConfigError(
            f"{key} {seq_len} exceeds the model's context (max_position_embeddings {max_position_embeddings})"
        )
