"""Device names of the command line and config (`auto`, `cpu`, `cuda`, `cuda:N`) → torch devices.

torch is imported inside the functions: the command line imports this module to build its help."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device, key: str = "device") -> torch.device:
    """`auto` is CUDA when available, else the CPU; asking for CUDA without one is a ConfigError naming `key`."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{key}: unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name} requested but no CUDA device is available")
    return device


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast for `precision` bf16, or auto on CUDA; full precision otherwise."""
    import contextlib

    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel on `device`: on CUDA, yes — one kernel for every parameter
    instead of a handful per parameter group, and it takes `found_inf`, so a non-finite step is
    dropped on the device without a host sync (`training/guard.py`). On the CPU, no: the default
    (foreach / for-loop) implementation is kept, so CPU numerics — and checkpoints written by earlier
    versions, resumed bit for bit — stay exactly as they were (the fused CPU kernel rounds
    differently in the last bits)."""
    return device.type == "cuda"


def defers_host_syncs(device: torch.device) -> bool:
    """Whether the training loop keeps per-step decisions on the device and reads them on the host
    only at its sync points (logged rows, evaluations, checkpoints, dynamics): on CUDA, where a host
    sync stalls the launch queue; on the CPU a sync is free and the check stays immediate."""
    return device.type == "cuda"


def compile_enabled(setting: str | bool, device: torch.device) -> bool:
    """`run.compile`: true / false, or auto — on for CUDA, off for the CPU (where compiling costs
    tens of seconds of start-up for little gain at the sizes a CPU trains)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def enable_tf32(device: torch.device) -> None:
    """TF32 tensor-core matmuls and convolutions for the float32 work of a CUDA run (what autocast
    leaves in float32, or everything without bf16); nothing changes for a CPU run. The trainer and
    post-hoc dynamics both call it, so probes of a checkpoint give the on-the-fly numbers."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
