"""Learning dynamics (DESIGN 2.7): effective rank, attention-head entropy, phase read-out, plots.

Recorded on a fixed probe batch every `dynamics.every` training steps (`DynamicsRecorder`) or
after the fact from saved checkpoints (`analyse_run`); both produce the same rows.
"""

from .attention_entropy import attention_entropy_by_layer, head_entropy
from .config import ALL_GROUPS, DynamicsConfig, check_dynamics, probe_shape
from .effective_rank import effective_rank, proportional_effective_rank
from .phases import format_phase_readout, phase_readout
from .plots import plot_overlay, plot_run
from .posthoc import analyse_run, compare_runs, list_checkpoints, load_probe_batch, preferred_rows
from .probe import dynamics_rows
from .readout import Readout, write_readout
from .recorder import DynamicsRecorder
from .rows import append_rows, drop_rows_after, load_rows, write_rows

__all__ = [
    "ALL_GROUPS",
    "DynamicsConfig",
    "DynamicsRecorder",
    "Readout",
    "analyse_run",
    "append_rows",
    "attention_entropy_by_layer",
    "check_dynamics",
    "compare_runs",
    "drop_rows_after",
    "dynamics_rows",
    "effective_rank",
    "format_phase_readout",
    "head_entropy",
    "list_checkpoints",
    "load_probe_batch",
    "load_rows",
    "phase_readout",
    "plot_overlay",
    "plot_run",
    "preferred_rows",
    "probe_shape",
    "proportional_effective_rank",
    "write_readout",
    "write_rows",
]
