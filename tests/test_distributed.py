"""The process group as the trainer sets it up: an explicit, configurable timeout (`run.dist_timeout_s`)."""

from __future__ import annotations

import datetime

import torch.distributed as dist

from helpers import tiny_overrides
from metalm.config import load_config
from metalm.trainer import Trainer


def test_dist_timeout_reaches_the_process_group(tmp_path, corpus_dir, monkeypatch):
    """torchrun's environment for rank 0 of 2; the group is created for real (gloo, one process, an
    in-memory store) with the timeout the trainer passed."""
    seen = {}
    init = dist.init_process_group

    def recording_init(backend, timeout=None, **kwargs):
        seen.update(backend=backend, timeout=timeout)
        init(backend, timeout=timeout, store=dist.HashStore(), rank=0, world_size=1)

    monkeypatch.setattr(dist, "init_process_group", recording_init)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(load_config(None, tiny_overrides(corpus_dir, tmp_path / "run", **{"run.dist_timeout_s": 5400})))
    try:
        assert trainer.world_size == 2 and dist.is_initialized()
        assert seen == {"backend": "gloo", "timeout": datetime.timedelta(seconds=5400)}
    finally:
        trainer.close()
    assert load_config(None, []).run.dist_timeout_s == 7200  # long enough for rank 0 to tokenize ~20 GB


def test_ddp_wraps_the_compiled_loss_over_the_bare_model():
    """The next-token loss under DDP compiles to one graph (over the DDP wrapper it broke into three),
    gives the bare model's loss and gradients, and broadcasts no buffers before each forward."""
    import torch
    from torch._dynamo.testing import CompileCounter

    from metalm.distributed import data_parallel_loss
    from metalm.model import build_model
    from metalm.training.losses import next_token_loss

    torch.manual_seed(0)
    model = build_model("nano", vocab_size=300)
    ids = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(1))
    want = next_token_loss(model, ids)
    want.backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    torch._dynamo.reset()
    graphs = CompileCounter()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = data_parallel_loss(model, torch.compile(next_token_loss, backend=graphs), torch.device("cpu"))
        loss = ddp(ids)
        loss.backward()
        assert graphs.frame_count == 1
        assert (ddp.forward_sync_buffers if hasattr(ddp, "forward_sync_buffers") else ddp.broadcast_buffers) is False
        assert torch.allclose(loss, want, rtol=1e-6, atol=1e-6)
        for n, p in model.named_parameters():
            assert torch.allclose(p.grad, want_grads[n], rtol=1e-5, atol=1e-7), n
        del ddp
    finally:
        dist.destroy_process_group()
        torch._dynamo.reset()


def test_model_buffers_need_no_broadcast():
    """broadcast_buffers=False is safe: every buffer (the rotary frequencies) is a function of the
    config, the same whatever the seed (so the same on every rank)."""
    import torch

    from metalm.model import build_model

    torch.manual_seed(0)
    a = dict(build_model("nano", vocab_size=300).named_buffers())
    torch.manual_seed(1)
    b = dict(build_model("nano", vocab_size=300).named_buffers())
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
