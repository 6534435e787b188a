"""Meta-learned pretraining (DESIGN 2.3–2.5), as a small API: episodes, `adapt`, one outer rule per algorithm.

Where things are:
- `sampler`: which episodes a step trains on, and this rank's share — built by `smlmt` (SMLMT
  episodes in windows cut from the corpus, from the occurrence index of `occurrences`), `dense`
  (SMLMT token episodes inside the training rows, `layout: dense`) or `lm_tasks` (LM-task
  episodes); `episode` holds the `Episode` record;
- `inner`: the inner loop `adapt`; `backbone`: the frozen lower / adapted upper part of the
  backbone; `heads`: the episode heads (zero, ProtoMAML, the persistent `LearnedHead`, linear or MLP);
- `outer`: the outer-gradient rule of each algorithm (FOMAML, MAML, Reptile);
- `meta_step`: one episode end to end (`run_episode`), a rank's meta step (`MetaStep`), `reduce_stats`;
- `flops`: the work of an episode, from its shape;
- `config`: the `meta` config section (which optimizer steps are meta steps: `metalm.training.step_plan`).

The trainer-facing API is `MetaTask`, the three pieces a run holds (sampler, learned head, meta step):

    task = MetaTask(cfg.meta, corpus.train.tokens, corpus.train.doc_offsets, tokenizer, model,
                    seed=cfg.run.seed, cache_dir=cache)
    optimizer params += task.extra_named_parameters()        # the learned head, if any
    meta_w, ar_w = plan.meta_weight, plan.ar_weight          # per optimizer step (training.step_plan)
    if plan.meta_work:
        batch = task.episodes(step, rank, world_size)        # this rank's share of the global batch
        # layout: dense — episodes from the training rows the meta work consumes (global, [R, seq_len+1]):
        #   task.episodes(step, rank, world_size, rows=global_rows, micro=m)
        stats = task.meta_step(model, batch, loss_scale=meta_w)   # outer gradient → .grad
        stats = reduce_stats(stats, all_reduce_sum, device)  # global metrics and work
    if ar_w: (ar_w · next-token loss).backward()
    average gradients across ranks; clip; AdamW step; zero_grad
    checkpoint: task.state_dict() next to the model weights
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .backbone import outer_parameter_names
from .config import MetaConfig, validate_meta
from .episode import Episode
from .heads import LearnedHead
from .meta_step import MetaStep, reduce_stats
from .sampler import EpisodeBatch, EpisodeSampler

__all__ = ["MetaConfig", "MetaTask", "reduce_stats"]


class MetaTask:
    """A run's meta-learning: the episode sampler, the learned head (if any) and the meta step."""

    def __init__(self, meta_cfg: MetaConfig, tokens: np.ndarray, doc_offsets: np.ndarray, tokenizer,
                 model: torch.nn.Module, seed: int, cache_dir=None, doc_groups: np.ndarray | None = None):
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
    def meta_step(self, model: torch.nn.Module, batch: EpisodeBatch, loss_scale: float = 1.0,
                  outer_gradient: bool = True) -> dict:
        """See `MetaStep.run`: mean statistics, `episodes` and `work`; outer gradient in `.grad`."""
        return self.runner.run(model, batch, loss_scale, outer_gradient)

    # -- parameters and state -------------------------------------------------------------------
    def extra_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Outer parameters that are not in the model (the learned head), for the outer AdamW."""
        if self.head is None:
            return []
        return [(f"meta_head.{n}", p) for n, p in self.head.named_parameters()]

    def reached_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
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
