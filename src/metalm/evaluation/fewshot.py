"""Few-shot episodic accuracy (DESIGN 2.8): held-out SMLMT episodes, before and after k steps of
head adaptation — the meta-objective's own metric, measured identically for vanilla and meta
checkpoints.

Episodes are cut from held-out text (the run's validation set, or `--data`) with a fixed seed, so
two checkpoints are evaluated on the same episodes. The backbone is frozen (head-only inner loop);
"before" is the same episode read by the initial head (for a zero head: exactly chance, 1/N).
"""

from __future__ import annotations

import logging
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from ..checkpoint import load_extra, resolve_model_dir
from ..config import DataConfig
from ..data import cache_root
from ..data import token_store
from ..data.pipeline import read_documents
from ..data.sources import resolve_files
from ..device import resolve_device
from ..config_base import format_validation_error
from ..errors import ConfigError, MetalmError
from ..eval_results import FewshotResult, MeanStd
from ..log import progress
from ..meta import MetaConfig, MetaTask
from ..meta.config import validate_meta
from ..meta.sampler import EpisodeSampler
from ..meta.meta_step import MetaStep
from ..run_dir import RunDir
from ..tokenizer import load_tokenizer
from .settings import FewshotSettings

log = logging.getLogger(__name__)

KEYS = ("support_acc_before", "support_acc_after", "query_acc_before", "query_acc_after")


def _held_out_tokens(run: RunDir | None, data: list[str] | None, tokenizer) -> token_store.TokenArray:
    if data:
        return held_out_tokens(data, tokenizer)
    info = run.read_data_info() if run is not None else None
    if run is None or info is None:
        raise MetalmError("few-shot evaluation needs held-out text: pass --data (or a run directory)")
    loaded = token_store.load(Path(info["cache"]))
    if loaded is None:
        raise MetalmError(f"{run.path}: its token cache is gone or damaged; pass --data with the held-out text")
    return loaded[0]["validation"]


def episode_config(s: FewshotSettings, prefix: str = "fewshot.") -> MetaConfig:
    """The SMLMT episodes (a head-only FOMAML meta config) that settings `s` ask for; an incompatible
    combination is a ConfigError naming the setting."""
    try:
        return MetaConfig(enabled=True, task="smlmt", smlmt_variant=s.variant, algorithm="fomaml", inner_params="head",
                          inner_steps=s.inner_steps, inner_lr=s.inner_lr, n_way=s.n_way, k_shot=s.k_shot,
                          q_query=s.q_query, head_init=s.head_init, pool=s.pool if s.variant == "sentence" else None,
                          window_len=s.window_len, band_min_count=s.band_min_count, band_skip_top=s.band_skip_top)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, MetaConfig, prefix=prefix)) from None


def _renamed(exc: ConfigError, prefix: str) -> str:
    """A meta config's error message with its `meta.` keys named as the few-shot settings."""
    return re.sub(r"\bmeta\.(?=\w)", prefix, str(exc))


def check_fewshot(s: FewshotSettings, held_out: token_store.TokenArray, tokenizer, model_config,
                  cache_dir: str | None = None, prefix: str = "fewshot.") -> None:
    """Refuse settings that the held-out text (and a model of `model_config`) cannot serve, e.g. an
    `n_way` above the number of class candidates: what `evaluate_fewshot` would refuse, checked
    without a trained model (experiments check before training)."""
    cfg = episode_config(s, prefix)
    try:
        sampler = EpisodeSampler(cfg, held_out.tokens, held_out.doc_offsets, tokenizer, s.seed,
                                 cache_root(cache_dir) / "meta")
        validate_meta(cfg, model_config, sampler.vocab_stats)
    except ConfigError as exc:
        raise ConfigError(_renamed(exc, prefix)) from None


def held_out_tokens(data: list[str], tokenizer) -> token_store.TokenArray:
    """The few-shot `--data` held-out text, tokenized (in memory: held-out sets are small)."""
    data_cfg = DataConfig(text_field="text", txt_documents="blank_line")
    docs = read_documents([f for spec in data for f in resolve_files(spec)], data_cfg, "--data")
    return token_store.concat(token_store.tokenize_documents(docs, tokenizer), np.uint32)


def evaluate_fewshot(checkpoint: str | Path, settings: FewshotSettings | None = None, *,
                     cache_dir: str | None = None, **options: Any) -> dict:
    """Mean (± std over episodes) support and query accuracy before/after adaptation. `settings`
    (default: `FewshotSettings()`, whose SMLMT defaults are `MetaConfig`'s) with keyword `options`
    replacing some of its fields."""
    s = FewshotSettings.resolve(settings, **options)
    episodes, data, variant, seed = s.episodes, s.data, s.variant, s.seed
    n_way, k_shot, q_query, inner_steps, inner_lr = s.n_way, s.k_shot, s.q_query, s.inner_steps, s.inner_lr
    cfg = episode_config(s)  # bad settings fail before the model loads
    where = resolve_model_dir(checkpoint)
    model_dir, run = where.model_dir, where.run
    tokenizer = load_tokenizer(where.tokenizer_dir)
    dev = resolve_device(s.device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(dev)  # type: ignore[arg-type]  # typeshed: a wraps()-decorated method's self stays unbound
    model.train()  # no dropout in metalm models; train mode keeps autograd paths identical to training
    held_out = _held_out_tokens(run, data, tokenizer)
    try:
        task = MetaTask(cfg, held_out.tokens, held_out.doc_offsets, tokenizer, model, seed=seed,
                        cache_dir=cache_root(cache_dir) / "meta")
    except ConfigError as exc:
        raise ConfigError(_renamed(exc, "fewshot.")) from None
    learned_from = None  # where the learned head came from (head_init learned)
    if task.head is not None and run is not None:  # a meta run's learned head, if it kept one
        latest_dir: Path | None
        if Path(checkpoint) == run.path and model_dir != run.final_dir:
            latest_dir = model_dir  # resolve_model_dir chose (and verified) the latest checkpoint
        else:
            latest = run.latest_checkpoint()
            latest_dir = latest[1] if latest else None
        extra = load_extra(latest_dir) if latest_dir is not None else {}
        if set(extra) == set(task.state_dict()):
            task.load_state_dict(extra)
            learned_from = str(latest_dir)
    if task.head is not None and learned_from is None:
        log.warning("%s holds no learned head (not a meta run, or one that kept none): head_init learned evaluates "
                    "a freshly initialised head", checkpoint)
    # the initial head, read on the same episode: a meta step whose inner loop does not move
    unadapted = MetaStep(cfg.model_copy(update={"inner_lr": 0.0}), model, task.head)
    samples: dict[str, list[float]] = {k: [] for k in KEYS}
    for i in progress(range(episodes), episodes, "few-shot", "episodes"):
        batch = task.episodes(i)
        after = task.meta_step(model, batch, outer_gradient=False)
        before = unadapted.run(model, batch, outer_gradient=False)
        samples["support_acc_before"].append(after["support_acc_before"])
        samples["support_acc_after"].append(after["support_acc_after"])
        samples["query_acc_before"].append(before["query_acc"])
        samples["query_acc_after"].append(after["query_acc"])
    summary = {k: MeanStd(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for k, v in samples.items()}
    return FewshotResult(
        checkpoint=str(model_dir), episodes=episodes, chance=1 / n_way,
        settings={"variant": variant, "n_way": n_way, "k_shot": k_shot, "q_query": q_query,
                  "inner_steps": inner_steps, "inner_lr": inner_lr, "head_init": cfg.resolved_head_init(), "pool": cfg.resolved_pool(),
                  "window_len": s.window_len, "seed": seed, "held_out": data or "the run's validation set",
                  **({"learned_head": learned_from or "none in the checkpoint: a freshly initialised head"}
                     if task.head is not None else {})},
        accuracy=summary).to_json()


def format_fewshot(result: dict) -> str:
    s = result["settings"]
    lines = [f"few-shot SMLMT ({s['variant']}): {s['n_way']}-way {s['k_shot']}-shot, {s['q_query']} queries, "
             f"{result['episodes']} held-out episodes, {s['inner_steps']} head steps (lr {s['inner_lr']}, "
             f"head init {s['head_init']}); chance {result['chance']:.3f}",
             f"{'':<10} {'before':>16} {'after':>16}"]
    acc = result["accuracy"]
    for part in ("support", "query"):
        b, a = acc[f"{part}_acc_before"], acc[f"{part}_acc_after"]
        lines.append(f"{part:<10} {b['mean']:>8.3f} ± {b['std']:<5.3f} {a['mean']:>8.3f} ± {a['std']:<5.3f}")
    if str(s.get("learned_head", "")).startswith("none"):
        lines.append("note: the checkpoint holds no learned head; a freshly initialised head was evaluated")
    return "\n".join(lines)


def save_fewshot(result: dict, run: RunDir) -> Path:
    return run.write_eval(FewshotResult.NAME, result)
