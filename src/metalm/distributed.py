"""Process-group setup for `torchrun` (DDP): gloo on CPU, nccl on CUDA; a single process needs none.

Only rank 0 writes files. The global batch and data order never depend on the number of
processes: each rank takes its slice of every micro-batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def main_first(self, build):
        """`build()` on rank 0 first (it fills the shared cache), then on the other ranks (they read it)."""
        out = build() if self.is_main else None
        self.barrier()
        return out if self.is_main else build()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) the gradients of `params` in one flat bucket — used for meta steps,
        whose inner loops are local to each rank and whose outer gradient alone is shared. Every
        rank must pass the same parameters, each with a gradient."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if len(grads) != len(params):
            raise ValueError("average_gradients: every parameter needs a gradient (zeros where unused)")
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


class _LossModule(torch.nn.Module):
    """`loss_fn(model, *inputs)` as a module, so that DDP can wrap the loss rather than the model."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *inputs):
        return self.loss_fn(self.model, *inputs)


def data_parallel_loss(model: torch.nn.Module, loss_fn, device: torch.device):
    """DDP over `loss_fn(model, batch)`: calling it returns the loss, and its backward all-reduces the
    gradients of `model`'s parameters (`no_sync()` as usual). DDP's own Python runs eagerly around
    the loss, so a compiled `loss_fn` traces the bare model — one graph, where compiling a loss
    called with the DDP wrapper breaks it into three. No buffer broadcast before each forward: the
    model's buffers (rotary frequencies) are computed from its config, the same on every rank."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch ≥ 2.13 names it forward_sync_buffers (broadcast_buffers deprecated); both sync at start-up
    key = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    options: dict = {key: False}
    return DistributedDataParallel(_LossModule(model, loss_fn), device_ids=[device.index] if device.type == "cuda"
                                   else None, **options)


def init_distributed(device_type: str, timeout_s: float = 7200) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1). `timeout_s` (`run.dist_timeout_s`)
    bounds every collective, the barrier of `Dist.main_first` among them, where ranks 1+ wait while
    rank 0 tokenizes a new corpus: torch's defaults (NCCL 10 min, gloo 30) are too short for a large one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return Dist(rank, world, local_rank)


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
