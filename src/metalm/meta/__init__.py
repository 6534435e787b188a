"""Meta-learned pretraining (DESIGN 2.3–2.4): episodes, inner/outer algorithms, hybrid schedule.

The trainer-facing API is `MetaTask`:

    task = MetaTask(cfg.meta, corpus.train.tokens, corpus.train.doc_offsets, tokenizer, model,
                    seed=cfg.run.seed, cache_dir=cache)
    optimizer params += task.extra_named_parameters()        # the learned head, if any
    meta_w, ar_w = task.step_weights(step)                   # per optimizer step
    if meta_w:
        batch = task.episodes(step, rank, world_size)        # this rank's share of the global batch
        stats = task.meta_step(model, batch, loss_scale=meta_w)   # outer gradient → .grad
    if ar_w: (ar_w · next-token loss).backward()
    average gradients across ranks; clip; AdamW step; zero_grad
    checkpoint: task.state_dict() next to the model weights

Episodes are pure functions of (seed, step, episode index), independent of the rank and of the
number of processes: rank r of W takes episode indices r, r+W, … of the step's global
`episodes_per_step`, and weights each by W / episodes_per_step, so averaging the gradients over
ranks gives the mean over the global batch — the same as one process running all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..accounting import Work
from ..errors import ConfigError
from .algorithms import fomaml, maml, reptile, run_episode
from .backbone import inner_parameter_names, make_split
from .config import MetaConfig, VocabStats, validate_meta
from .episode import Episode
from .heads import LearnedHead, proto_head, zero_head
from .lm_tasks import LMTaskSampler
from .occurrences import OccurrenceIndex, occurrence_index
from .schedule import is_meta_step, step_weights
from .smlmt import smlmt_episode

__all__ = [
    "Episode", "EpisodeBatch", "LearnedHead", "MetaConfig", "MetaTask", "OccurrenceIndex", "VocabStats",
    "fomaml", "inner_parameter_names", "is_meta_step", "maml", "occurrence_index", "proto_head", "reduce_stats",
    "reptile", "run_episode", "step_weights", "validate_meta", "zero_head", "METRIC_KEYS",
]

_EPISODE_TAG = 0x4D455441
METRIC_KEYS = ("meta_loss", "support_loss_before", "support_acc_before", "support_loss_after",
               "support_acc_after", "query_acc", "inner_grad_norm")


@dataclass
class EpisodeBatch:
    """One rank's episodes of an optimizer step, with what is needed to weight them globally."""

    episodes: list[Episode]
    indices: list[int]  # episode indices within the step's global batch
    global_count: int  # episodes_per_step (all ranks)
    world_size: int

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def n_tokens(self) -> int:
        return sum(ep.n_tokens for ep in self.episodes)


class MetaTask:
    """Episode source + learned head + meta step, for one run."""

    def __init__(self, meta_cfg: MetaConfig, tokens: np.ndarray, doc_offsets: np.ndarray, tokenizer,
                 model: torch.nn.Module, seed: int, cache_dir=None, doc_groups: np.ndarray | None = None):
        self.cfg = meta_cfg
        self.tokens = tokens
        self.doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        self.seed = int(seed)
        if meta_cfg.task == "smlmt":
            self.mask_id = tokenizer.mask_token_id
            if self.mask_id is None:
                raise ConfigError("meta.task=smlmt needs a tokenizer with a mask token (metalm's tokenizers and "
                                  "load_tokenizer add one)")
            self.index = occurrence_index(tokens, tokenizer, meta_cfg.smlmt_variant, meta_cfg.min_count(),
                                          meta_cfg.band_max_count, meta_cfg.band_skip_top, cache_dir)
            unit = "words" if meta_cfg.smlmt_variant == "sentence" else "tokens"
            self.vocab_stats = VocabStats(unit, self.index.n_candidates)
            self.sampler = None
        else:
            self.index = None
            self.sampler = LMTaskSampler(self.doc_offsets, meta_cfg.window_len, meta_cfg.k_shot, meta_cfg.q_query,
                                         doc_groups)
            self.vocab_stats = VocabStats(self.sampler.unit_name, self.sampler.n_units)
        validate_meta(meta_cfg, model.config, self.vocab_stats)
        self.head = (LearnedHead.from_model(model)
                     if meta_cfg.task == "smlmt" and meta_cfg.resolved_head_init() == "learned" else None)
        self._split = make_split(model, meta_cfg)

    # -- episodes -------------------------------------------------------------------------------
    def episode(self, step: int, index: int = 0) -> Episode:
        """Episode `index` of optimizer step `step`: a pure function of (seed, step, index)."""
        rng = np.random.default_rng([self.seed, int(step), int(index), _EPISODE_TAG])
        c = self.cfg
        if self.sampler is not None:
            return self.sampler.episode(self.tokens, rng)
        return smlmt_episode(self.index, self.tokens, self.doc_offsets, c.n_way, c.k_shot, c.q_query, c.window_len,
                             c.resolved_pool(), self.mask_id, rng)

    def episodes(self, step: int, rank: int = 0, world_size: int = 1) -> EpisodeBatch:
        """This rank's share (indices rank, rank + world_size, …) of the step's global episodes."""
        total = self.cfg.episodes_per_step
        if world_size > total:
            raise ConfigError(f"meta.episodes_per_step: {total} is fewer than the {world_size} processes; every "
                              "process needs at least one episode per meta step")
        indices = list(range(rank, total, world_size))
        return EpisodeBatch([self.episode(step, i) for i in indices], indices, total, world_size)

    # -- schedule -------------------------------------------------------------------------------
    def step_weights(self, step: int) -> tuple[float, float]:
        return step_weights(step, self.seed, self.cfg)

    # -- parameters and state -------------------------------------------------------------------
    def extra_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Outer parameters that are not in the model (the learned head), for the outer AdamW."""
        if self.head is None:
            return []
        return [(f"meta_head.{n}", p) for n, p in self.head.named_parameters()]

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

    # -- the meta step --------------------------------------------------------------------------
    def meta_step(self, model: torch.nn.Module, batch: EpisodeBatch, loss_scale: float = 1.0,
                  outer_gradient: bool = True) -> dict:
        """Run this rank's episodes; accumulate loss_scale × (mean outer gradient) in `.grad`
        (`outer_gradient=False`: adapt and measure only, e.g. for few-shot evaluation).

        Pass the plain model (not a DDP wrapper): inner loops are local, and the caller averages
        the outer gradients of `model.parameters()` and `extra_parameters()` across ranks.
        Returns the mean statistics over this rank's episodes, `episodes`, and the summed `work`."""
        if self._split.model is not model:
            self._split = make_split(model, self.cfg)
        split = self._split
        device = next(model.parameters()).device
        weight = loss_scale * batch.world_size / batch.global_count
        sums = dict.fromkeys(METRIC_KEYS, 0.0)
        work = Work()
        for ep in batch.episodes:
            stats = run_episode(model, ep.to(device), self.cfg, self.head, weight, split, outer_gradient)
            for k in METRIC_KEYS:
                sums[k] += stats[k]
            work += stats["work"]
        n = max(1, len(batch))
        return {**{k: v / n for k, v in sums.items()}, "episodes": len(batch), "work": work}


def reduce_stats(stats: dict, all_reduce_sum, device: torch.device | str = "cpu") -> dict:
    """Global statistics of a meta step from every rank's `meta_step` result: metrics averaged over
    all episodes, work summed. `all_reduce_sum(tensor)` sums a tensor in place across ranks."""
    n = stats["episodes"]
    metrics = torch.tensor([stats[k] * n for k in METRIC_KEYS] + [n], dtype=torch.float64, device=device)
    w = stats["work"]
    work = torch.tensor([w.tokens, w.fwd_tokens, w.bwd_tokens, w.flops], dtype=torch.int64, device=device)
    all_reduce_sum(metrics)
    all_reduce_sum(work)
    total = float(metrics[-1])
    out = {k: float(metrics[i]) / max(total, 1.0) for i, k in enumerate(METRIC_KEYS)}
    out["episodes"] = int(total)
    out["work"] = Work(*(int(v) for v in work.tolist()))
    return out
