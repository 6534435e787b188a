"""Live view of training runs: `metalm watch RUN_OR_EXPERIMENT_DIR ...` (issue 7).

A small read-only local web server (`server`) follows run directories incrementally (`tail`,
`store`, `run_state`, `watcher`) and feeds a self-contained page (`static/`, plotly.js served from
the installed `plotly` package) that polls it for only what changed. `heatmap_matrix` turns
dynamics rows into the layer x step matrices that the page (and a TensorBoard logger) draw.
"""

from metalm.watch.downsample import minmax_downsample
from metalm.dynamics.heatmap import heatmap_matrix
from metalm.watch.server import make_server, serve

__all__ = ["heatmap_matrix", "make_server", "minmax_downsample", "serve"]
