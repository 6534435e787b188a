"""Few-shot episodic accuracy (DESIGN 2.8): held-out SMLMT episodes, before and after k steps of
head adaptation — the meta-objective's own metric, measured identically for vanilla and meta
checkpoints.

Episodes are cut from held-out text (the run's validation set, or `--data`) with a fixed seed, so
two checkpoints are evaluated on the same episodes. The backbone is frozen (head-only inner loop);
"before" is the same episode read by the initial head (for a zero head: exactly chance, 1/N).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from ..checkpoint import latest_checkpoint, load_extra, resolve_model_dir
from ..config import DataConfig
from ..data import cache_root
from ..data import token_store
from ..data.pipeline import read_documents
from ..data.sources import resolve_files
from ..errors import MetalmError
from ..meta import MetaConfig, MetaTask
from ..run_log import write_json_atomic
from ..tokenizer import load_tokenizer

KEYS = ("support_acc_before", "support_acc_after", "query_acc_before", "query_acc_after")


def _held_out_tokens(run_dir: Path | None, data: list[str] | None, tokenizer) -> token_store.TokenArray:
    if data:
        data_cfg = DataConfig.model_construct(text_field="text", txt_documents="blank_line")
        docs = read_documents([f for spec in data for f in resolve_files(spec)], data_cfg, "eval")
        return token_store.concat(token_store.tokenize_documents(docs, tokenizer), np.uint32)
    info_path = run_dir / "data.json" if run_dir else None
    if info_path is None or not info_path.is_file():
        raise MetalmError("few-shot evaluation needs held-out text: pass --data (or a run directory)")
    loaded = token_store.load(Path(json.loads(info_path.read_text())["cache"]))
    if loaded is None:
        raise MetalmError(f"{run_dir}: its token cache is gone; pass --data with the held-out text")
    return loaded[0]["validation"]


def evaluate_fewshot(checkpoint: str | Path, episodes: int = 100, data: list[str] | None = None,
                     variant: str = "sentence", n_way: int = 5, k_shot: int = 4, q_query: int = 4,
                     inner_steps: int = 10, inner_lr: float = 0.5, head_init: str = "zero", pool: str | None = "mask",
                     window_len: int = 64,
                     band_min_count: int = 8, band_skip_top: int = 100, seed: int = 0, device: str = "cpu",
                     cache_dir: str | None = None) -> dict:
    """Mean (± std over episodes) support and query accuracy before/after adaptation."""
    if episodes < 1:
        raise MetalmError(f"--episodes must be ≥ 1 (got {episodes})")
    model_dir, tok_dir, run_dir = resolve_model_dir(checkpoint)
    tokenizer = load_tokenizer(tok_dir)
    dev = torch.device(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(dev)
    model.train()  # no dropout in metalm models; train mode keeps autograd paths identical to training
    try:
        cfg = MetaConfig(enabled=True, task="smlmt", smlmt_variant=variant, algorithm="fomaml", inner_params="head",
                         inner_steps=inner_steps, inner_lr=inner_lr, n_way=n_way, k_shot=k_shot, q_query=q_query,
                         head_init=head_init, pool=pool if variant == "sentence" else None, window_len=window_len, band_min_count=band_min_count,
                         band_skip_top=band_skip_top)
    except ValueError as exc:
        raise MetalmError(f"few-shot settings: {exc}") from None
    held_out = _held_out_tokens(run_dir, data, tokenizer)
    task = MetaTask(cfg, held_out.tokens, held_out.doc_offsets, tokenizer, model, seed=seed,
                    cache_dir=cache_root(cache_dir) / "meta")
    if task.head is not None and run_dir is not None:  # a meta run's learned head, if it kept one
        latest = latest_checkpoint(run_dir)
        extra = load_extra(latest[1]) if latest else {}
        if set(extra) == set(task.state_dict()):
            task.load_state_dict(extra)
    frozen = cfg.model_copy(update={"inner_lr": 0.0})  # the initial head, read on the same episode
    samples = {k: [] for k in KEYS}
    for i in range(episodes):
        batch = task.episodes(i)
        after = task.meta_step(model, batch, outer_gradient=False)
        task.cfg = frozen
        before = task.meta_step(model, batch, outer_gradient=False)
        task.cfg = cfg
        samples["support_acc_before"].append(after["support_acc_before"])
        samples["support_acc_after"].append(after["support_acc_after"])
        samples["query_acc_before"].append(before["query_acc"])
        samples["query_acc_after"].append(after["query_acc"])
    summary = {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0} for k, v in samples.items()}
    return {"checkpoint": str(model_dir), "episodes": episodes, "chance": 1 / n_way,
            "settings": {"variant": variant, "n_way": n_way, "k_shot": k_shot, "q_query": q_query,
                         "inner_steps": inner_steps, "inner_lr": inner_lr, "head_init": cfg.resolved_head_init(), "pool": cfg.resolved_pool(),
                         "window_len": window_len, "seed": seed, "held_out": data or "the run's validation set"},
            "accuracy": summary}


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
    return "\n".join(lines)


def save_fewshot(result: dict, run_dir: Path) -> Path:
    out = run_dir / "eval" / "fewshot.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    return out
