"""No hidden host syncs in a meta step (issue 23): on CUDA each one stops the host until the GPU
catches up, so episode building and kernel launches can never run ahead.

Counted on the CPU under a dispatch mode: every read of a tensor value on the host
(`aten._local_scalar_dense`: `.item()`, `int()`, `float()`, `bool()`; `Tensor.tolist`, which the CPU
does not dispatch) and every tensor made from Python data (`aten.lift_fresh`, `aten.scalar_tensor`:
on CUDA a blocking copy from pageable memory). Episode building is host work by design (numpy →
pinned host tensors, copied asynchronously) and runs outside the counted region."""

from __future__ import annotations

import collections
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from helpers import tiny_overrides
from metalm.config import load_config
from metalm.meta import reduce_stats
from metalm.trainer import Trainer

COUNTED = ("aten._local_scalar_dense", "aten.lift_fresh", "aten.scalar_tensor")
META = {"meta.enabled": "true", "meta.smlmt_variant": "token", "meta.head_init": "learned", "meta.band_min_count": 5,
        "meta.band_skip_top": 10, "meta.window_len": 16, "meta.n_way": 3, "meta.k_shot": 2, "meta.q_query": 2,
        "meta.inner_steps": 2, "meta.inner_lr": 0.5, "meta.hybrid": 0.5}


class HostSyncs(TorchDispatchMode):
    """Counts the counted ops (see the module docstring) by name."""

    def __init__(self):
        super().__init__()
        self.seen: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).rsplit(".", 1)[0]
        if name in COUNTED:
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting(monkeypatch):
    mode = HostSyncs()
    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        mode.seen["Tensor.tolist"] += 1
        return tolist(self)

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        with mode:
            yield mode.seen


def meta_trainer(tmp_path, corpus, **extra) -> Trainer:
    """A prepared meta trainer whose episodes are built outside the counted region."""
    trainer = Trainer.build(load_config(None, tiny_overrides(corpus, tmp_path / "run", **{**META, **extra})))
    build = trainer.meta.episodes

    def episodes(*args, **kwargs):
        with _disable_current_modes():
            return build(*args, **kwargs)

    trainer.meta.episodes = episodes
    return trainer


def first_meta_step(trainer: Trainer) -> int:
    return next(s for s in range(100) if trainer.kind_of(s) == "meta")


@pytest.mark.parametrize("extra", [
    {"meta.schedule": "interleave", "meta.layout": "dense"},
    {"meta.schedule": "interleave", "meta.inner_params": "head+last_n_layers"},
    {"meta.schedule": "microbatch", "train.grad_accum": 2},  # every micro-batch of the step a meta one
], ids=["dense", "last-layers", "microbatch"])
def test_a_meta_step_makes_no_host_sync(tmp_path, corpus_dir, monkeypatch, extra):
    trainer = meta_trainer(tmp_path, corpus_dir, **extra)
    step = first_meta_step(trainer)
    with counting(monkeypatch) as seen:
        # the step's gradients only: the optimizer step's immediate non-finite check syncs on the CPU
        kind, fields, work = trainer.gradients(step)
    assert kind == "meta" and work.flops > 0 and fields["episodes"] > 0
    assert not seen, dict(seen)
    assert isinstance(fields["meta_loss"], torch.Tensor)  # read on the host only when a row is logged


def test_the_cross_process_reduction_reads_the_host_once(tmp_path, corpus_dir, monkeypatch):
    """Under DDP the documented boundary: the summed episode count and work, one int64 tensor made
    from the host's integers (pinned, copied without a sync on CUDA) and read back once; the realised
    episode's host floats go to the device the same way (a second tensor from host data, never read
    back). The reduction is faked: two ranks with identical statistics."""
    trainer = meta_trainer(tmp_path, corpus_dir, **{"meta.layout": "dense"})
    step = first_meta_step(trainer)
    batch = trainer.meta.episodes(step, rows=trainer.batches.batch(step))
    stats = trainer.meta.runner.run(trainer.model, batch, as_tensors=True)

    def all_reduce_sum(tensor):
        return tensor.mul_(2)

    with counting(monkeypatch) as seen:
        merged = reduce_stats(stats, all_reduce_sum, trainer.device)
    assert dict(seen) == {"aten.lift_fresh": 2, "Tensor.tolist": 1}
    assert merged["episodes"] == 2 * stats["episodes"] and merged["work"].flops == 2 * stats["work"].flops
    for key in ("meta_loss", "query_acc"):
        assert torch.equal(merged[key], stats[key].double())  # the mean of two equal ranks
    assert float(merged["episode_classes"]) == stats["episode_classes"]
