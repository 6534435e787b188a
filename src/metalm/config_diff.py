"""Differences between configs: which settings of a resumed run changed, and which keys tell the
runs of a comparison apart."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Config keys that change how a run is executed or displayed, not what it computes: a run may be
# resumed with different values (`run.dir` too: a moved run directory resumes).
EXECUTION_KEYS = frozenset({"run.dir", "run.progress", "run.threads", "run.cache_dir", "run.tensorboard", "run.wandb",
                            "run.device", "run.peak_tflops", "run.dist_timeout_s", "data.num_proc"})


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for a nested mapping (an empty mapping is a value of its own)."""
    if isinstance(tree, Mapping) and tree:
        flat: dict[str, Any] = {}
        for key, item in tree.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "(root)": tree}


def differing_keys(configs: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """The dotted keys whose values differ between the given configs (None-valued entries skipped),
    sorted; a key missing from one config differs from any value in another."""
    flat = [flatten(c) for c in configs.values() if isinstance(c, Mapping)]
    ignored = set(ignore)
    missing = object()
    keys = sorted({k for f in flat for k in f} - ignored)
    return [k for k in keys if len({repr(f.get(k, missing)) for f in flat}) > 1]


def config_differences(saved: Mapping, current: Mapping) -> list[str]:
    """`key: old → new` for every setting that changes what a run computes (execution keys such as
    `run.threads` may differ)."""
    a, b = flatten(saved), flatten(current)
    return [f"{k}: {a.get(k)!r} → {b.get(k)!r}"
            for k in differing_keys({"saved": saved, "current": current}, EXECUTION_KEYS)]
