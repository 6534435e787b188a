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

The trainer-facing API is `MetaTask` (`task`; imported lazily, so `meta.config` loads without torch), the three pieces a run holds (sampler, learned head, meta step):

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

from typing import Any

from .config import MetaConfig

__all__ = ["MetaConfig", "MetaTask", "reduce_stats"]


def __getattr__(name: str) -> Any:
    """`MetaTask` and `reduce_stats` on first use: loading a config imports no torch."""
    if name == "MetaTask":
        from .task import MetaTask

        return MetaTask
    if name == "reduce_stats":
        from .meta_step import reduce_stats

        return reduce_stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
