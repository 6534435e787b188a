"""Learning dynamics (DESIGN 2.7): effective rank, attention-head entropy, phase read-out, plots.

Recorded on a fixed probe batch every `dynamics.every` training steps (`dynamics_rows`, appended
by the trainer) or after the fact from saved checkpoints (`analyse_run`); both give the same rows.

Names are imported lazily so that `metalm.config` (which needs only `DynamicsConfig`) does not
pull in matplotlib and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "attention_entropy": ["attention_entropy_by_layer", "head_entropy"],
    "config": ["ALL_GROUPS", "DynamicsConfig", "check_dynamics", "probe_shape"],
    "effective_rank": ["effective_rank", "proportional_effective_rank"],
    "phases": ["format_phase_readout", "phase_readout"],
    "plots": ["plot_overlay", "plot_run"],
    "posthoc": ["analyse_run", "compare_runs", "load_probe_batch", "preferred_rows"],
    "probe": ["dynamics_rows"],
    "recorder": ["DynamicsRecorder"],
    "readout": ["Readout", "write_readout"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
