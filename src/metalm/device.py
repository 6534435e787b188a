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
