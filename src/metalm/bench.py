"""`metalm bench`: an AR step and a meta step of the configured model, timed side by side.

Both steps run under the run's autocast (`run.precision`), process the same number of unique tokens
(the meta step's support + query rows; the AR batch has as many rows of the same length) and
include the AdamW update. Warm-up repeats are
discarded; medians of the rest are reported, with the meta/AR cost ratio. Ratios measured in one
run on one machine are what to compare; absolute times depend on the machine.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time

import numpy as np
import torch

from .config import Config
from .data import PackedSequences
from .trainer import Trainer
from .training.losses import next_token_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _time(fn, optimizer, device, warmup: int, repeats: int) -> tuple[list[float], float]:
    """Seconds of each measured repeat of (fn → optimizer step), and the peak memory."""
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + repeats):
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        start = time.perf_counter()
        fn(i)
        optimizer.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    optimizer.zero_grad(set_to_none=True)
    return times, _peak_memory_mb(device)


def bench(cfg: Config, warmup: int = 2, repeats: int = 5) -> dict:
    if not cfg.meta.enabled:
        cfg = cfg.model_copy(update={"meta": cfg.meta.model_copy(update={"enabled": True})})
    trainer = Trainer.build(cfg)
    model, meta, device = trainer.model, trainer.meta, trainer.device
    model.train()
    episodes = [meta.episodes(step) for step in range(warmup + repeats)]
    tokens = episodes[0].n_tokens
    width = cfg.meta.window_len  # an episode row's tokens (LM-task rows carry one more, the last target)
    rows = tokens // width
    seqs = PackedSequences(trainer.corpus.train, width, "data.train")
    ar_batches = [torch.from_numpy(seqs.gather(np.arange(i * rows, (i + 1) * rows) % len(seqs))).to(device)
                  for i in range(warmup + repeats)]

    def ar(i: int) -> None:  # both steps under the run's autocast, as the trainer runs them
        with trainer.autocast():
            loss = next_token_loss(model, ar_batches[i])
        loss.backward()

    def meta_step(i: int) -> None:
        with trainer.autocast():
            meta.meta_step(model, episodes[i])

    ar_times, ar_mem = _time(ar, trainer.optimizer, device, warmup, repeats)
    meta_times, meta_mem = _time(meta_step, trainer.optimizer, device, warmup, repeats)
    ar_s, meta_s = statistics.median(ar_times), statistics.median(meta_times)
    m = cfg.meta
    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "device": str(device),
        "model": cfg.model.preset if not cfg.model.hf_config else cfg.model.hf_config,
        "meta": {"task": m.task, "variant": m.smlmt_variant, "algorithm": m.algorithm, "inner_params": m.inner_params,
                 "inner_steps": m.inner_steps, "n_way": m.n_way, "k_shot": m.k_shot, "q_query": m.q_query,
                 "window_len": m.window_len},
        "tokens_per_step": tokens,
        "repeats": repeats,
        "ar": {"seconds_per_step": ar_s, "tokens_per_s": tokens / ar_s, "peak_memory_mb": ar_mem, "all": ar_times},
        "meta_step": {"seconds_per_step": meta_s, "tokens_per_s": tokens / meta_s, "peak_memory_mb": meta_mem,
                      "all": meta_times},
        "meta_over_ar_ratio": meta_s / ar_s,
    }


def format_bench(result: dict) -> str:
    ar, me = result["ar"], result["meta_step"]
    mem = "peak GPU MiB" if result["device"].startswith("cuda") else "process peak RSS MiB"
    meta = result["meta"]
    return "\n".join([
        f"machine: {result['machine']} ({result['device']}); model {result['model']}; "
        f"{result['tokens_per_step']} tokens per step; median of {result['repeats']}",
        f"meta step: {meta['algorithm']} {meta['task']}/{meta['variant']}, inner {meta['inner_params']} × "
        f"{meta['inner_steps']} steps, {meta['n_way']}-way {meta['k_shot']}-shot {meta['q_query']} queries",
        f"{'':<10} {'s/step':>10} {'tokens/s':>12} {mem:>22}",
        f"{'AR':<10} {ar['seconds_per_step']:>10.4f} {ar['tokens_per_s']:>12,.0f} {ar['peak_memory_mb']:>22,.0f}",
        f"{'meta':<10} {me['seconds_per_step']:>10.4f} {me['tokens_per_s']:>12,.0f} {me['peak_memory_mb']:>22,.0f}",
        f"meta / AR cost ratio: {result['meta_over_ar_ratio']:.3f}",
    ])
