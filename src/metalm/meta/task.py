"""`MetaTask`: the three pieces a meta run holds (sampler, learned head, meta step); see `metalm.meta`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError
from .backbone import outer_parameter_names
from .config import MetaConfig, validate_meta
from .episode import Episode
from .heads import LearnedHead
from .meta_step import MetaStep
from .sampler import EpisodeBatch, EpisodeSampler

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class MetaTask:
    """A run's meta-learning: the episode sampler, the learned head (if any) and the meta step."""

    def __init__(self, meta_cfg: MetaConfig, tokens: np.ndarray, doc_offsets: np.ndarray, tokenizer,
                 model: PreTrainedModel, seed: int, cache_dir=None, doc_groups: np.ndarray | None = None):
        self.cfg = meta_cfg
        self.seed = int(seed)
        self.sampler = EpisodeSampler(meta_cfg, tokens, doc_offsets, tokenizer, seed, cache_dir, doc_groups)
        validate_meta(meta_cfg, model.config, self.sampler.vocab_stats)
        self.head = (LearnedHead.from_model(model, meta_cfg.head_layers, meta_cfg.resolved_head_hidden(), self.seed)
                     if meta_cfg.task == "smlmt" and meta_cfg.resolved_head_init() == "learned" else None)
        self.runner = MetaStep(meta_cfg, model, self.head)

    # -- episodes ------------------------------------------------------------------
    def episode(self, step: int, index: int = 0, micro: int = 0, rows: np.ndarray | None = None) -> Episode:
        return self.sampler.episode(step, index, micro, rows)

    def episodes(self, step: int, rank: int = 0, world_size: int = 1, rows: np.ndarray | None = None,
                 micro: int = 0) -> EpisodeBatch:
        """This rank's episodes of optimizer step `step` (micro-batch `micro`: it enters the episode
        seed when > 0). `layout: dense`: `rows` are the global training rows the meta work consumes
        ([R, seq_len + 1]; R divisible by `episodes_per_step`); other layouts ignore them."""
        return self.sampler.episodes(step, rank, world_size, rows, micro)

    # -- the meta step --------------------------------------------------------------------------
    def meta_step(self, model: PreTrainedModel, batch: EpisodeBatch, loss_scale: float = 1.0,
                  outer_gradient: bool = True) -> dict:
        """See `MetaStep.run`: mean statistics, `episodes` and `work`; outer gradient in `.grad`."""
        return self.runner.run(model, batch, loss_scale, outer_gradient)

    # -- parameters and state -------------------------------------------------------------------
    def extra_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Outer parameters that are not in the model (the learned head), for the outer AdamW."""
        if self.head is None:
            return []
        return [(f"meta_head.{n}", p) for n, p in self.head.named_parameters()]

    def reached_parameters(self, model: PreTrainedModel) -> list[torch.nn.Parameter]:
        """Every parameter a meta step's outer gradient reaches: model parameters
        (`backbone.outer_parameter_names`) and the learned head."""
        named = dict(model.named_parameters())
        return [named[n] for n in outer_parameter_names(model, self.cfg)] + self.extra_parameters()

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.extra_named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.extra_named_parameters()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        mine = dict(self.extra_named_parameters())
        if set(state) != set(mine):
            raise ConfigError(f"meta: checkpoint holds meta state {sorted(state)} but this run expects {sorted(mine)}")
        with torch.no_grad():
            for n, p in mine.items():
                p.copy_(state[n].to(device=p.device, dtype=p.dtype))
