"""The episode sampler: which episodes an optimizer step trains on, and which of them this rank runs.

Episodes are pure functions of (seed, step, micro-batch, episode index) — and, in the dense layout,
of their rows — independent of the rank and of the number of processes: rank r of W takes episode
indices r, r+W, … of the step's global `episodes_per_step` (`EpisodeBatch`); the meta step weights
each by W / episodes_per_step, so averaging the gradients over ranks gives the mean over the global
batch — the same as one process running all of them.

Dense layout (`meta.layout: dense`, `meta.dense`): the caller passes the global rows the meta work
consumes (the step's batch, or one micro-batch of it, [R, seq_len + 1] training windows); they are
split into `episodes_per_step` equal groups of consecutive rows, episode i taking group i.

The episodes themselves are built in `meta.smlmt` (SMLMT, from the occurrence index of
`meta.occurrences` — over a sample of `meta.index_tokens` tokens seeded by the run's seed when the
corpus is longer) and `meta.lm_tasks` (LM tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from .config import MetaConfig, VocabStats
from .dense import dense_episode
from .episode import Episode
from .lm_tasks import LMTaskSampler
from .occurrences import occurrence_index
from .smlmt import smlmt_episode

_EPISODE_TAG = 0x4D455441
_DENSE_TAG = 0x44454E53


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


class EpisodeSampler:
    """SMLMT or LM-task episodes of one corpus (`meta_cfg.task`), seeded by the run's seed."""

    def __init__(self, meta_cfg: MetaConfig, tokens: np.ndarray, doc_offsets: np.ndarray, tokenizer, seed: int,
                 cache_dir=None, doc_groups: np.ndarray | None = None):
        self.cfg = meta_cfg
        self.tokens = tokens
        self.doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        self.seed = int(seed)
        self.occurrences = self.lm_tasks = None
        if meta_cfg.task == "smlmt":
            self.mask_id = tokenizer.mask_token_id
            if self.mask_id is None:
                raise ConfigError("meta.task=smlmt needs a tokenizer with a mask token (metalm's tokenizers and "
                                  "load_tokenizer add one)")
            self.occurrences = occurrence_index(tokens, tokenizer, meta_cfg.smlmt_variant, meta_cfg.min_count(),
                                                meta_cfg.band_max_count, meta_cfg.band_skip_top, cache_dir,
                                                casefold=meta_cfg.casefold, index_tokens=meta_cfg.index_tokens,
                                                seed=self.seed)
            unit = "words" if meta_cfg.smlmt_variant == "sentence" else "tokens"
            self.vocab_stats = VocabStats(unit, self.occurrences.n_candidates)
            if meta_cfg.layout == "dense":
                self.candidates = np.zeros(len(tokenizer), dtype=bool)
                self.candidates[self.occurrences.keys] = True
        else:
            self.lm_tasks = LMTaskSampler(self.doc_offsets, meta_cfg.window_len, meta_cfg.k_shot, meta_cfg.q_query,
                                          doc_groups)
            self.vocab_stats = VocabStats(self.lm_tasks.unit_name, self.lm_tasks.n_units)

    def episode(self, step: int, index: int = 0, micro: int = 0, rows: np.ndarray | None = None) -> Episode:
        """Episode `index` of optimizer step `step` (micro-batch `micro`): a pure function of (seed, step,
        micro, index) — and of `rows`, the episode's own training rows, in the dense layout."""
        c = self.cfg
        if c.layout == "dense":
            if rows is None:
                raise ConfigError("meta.layout=dense: episodes are built from the training rows; pass rows")
            rng = np.random.default_rng([self.seed, int(step), int(micro), int(index), _DENSE_TAG])
            rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)
            return dense_episode(rows, rows.shape[1] - 1, self.candidates, c.n_way, c.k_shot, c.q_query, self.mask_id, rng)
        key = [self.seed, int(step), int(index), _EPISODE_TAG] + ([int(micro)] if micro else [])
        rng = np.random.default_rng(key)
        if self.lm_tasks is not None:
            return self.lm_tasks.episode(self.tokens, rng)
        pool = c.resolved_pool()
        assert self.occurrences is not None and pool is not None  # task smlmt
        return smlmt_episode(self.occurrences, self.tokens, self.doc_offsets, c.n_way, c.k_shot, c.q_query,
                             c.window_len, pool, self.mask_id, rng)

    def episodes(self, step: int, rank: int = 0, world_size: int = 1, rows: np.ndarray | None = None,
                 micro: int = 0) -> EpisodeBatch:
        """This rank's share (indices rank, rank + world_size, …) of the step's global episodes.

        Dense layout: `rows` are the global rows of this meta work ([R, seq_len + 1]), episode i
        taking the i-th of `episodes_per_step` equal groups; other layouts ignore them."""
        total = self.cfg.episodes_per_step
        if world_size > total:
            raise ConfigError(f"meta.episodes_per_step: {total} is fewer than the {world_size} processes; every "
                              "process needs at least one episode per meta step")
        indices = list(range(rank, total, world_size))
        if self.cfg.layout != "dense":
            return EpisodeBatch([self.episode(step, i, micro) for i in indices], indices, total, world_size)
        if rows is None:
            raise ConfigError("meta.layout=dense: episodes are built from the training rows; pass rows (the "
                              "step's or micro-batch's global batch)")
        n = len(rows)
        if n % total:  # refused at load (`metalm.launch`); a guard for direct callers
            raise ConfigError(f"meta.episodes_per_step: {total} does not divide the {n} rows of this meta work "
                              "(layout=dense splits them into equal episodes)")
        group = n // total
        episodes = [self.episode(step, i, micro, rows[i * group:(i + 1) * group]) for i in indices]
        return EpisodeBatch(episodes, indices, total, world_size)
