"""Which run directories a `metalm watch PATH...` command is about.

A run directory is what `metalm.run_dir.is_run_dir` says; any other directory is taken as an
experiment and expanded to the run directories found up to `MAX_DEPTH` levels below it (not
looking inside run directories themselves, whose checkpoints/ and final/ are not runs). Discovery
is repeated at every poll, so runs that an experiment starts later appear on the page; a path with
no run yet is listed as itself, so the page shows it as waiting instead of showing nothing.
Symbolic links below a watched path are not followed: a linked directory is no run and is not
searched, so nothing outside the watched directories is listed (or served).
"""

from __future__ import annotations

import os
from pathlib import Path

from metalm.run_dir import is_run_dir

MAX_DEPTH = 4  # <experiment>/sweep/<arm>/<setting>/seed-<s>


def _runs_below(root: Path, depth: int) -> list[Path]:
    if depth == 0:
        return []
    try:
        children = sorted(
            (Path(entry.path) for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)),
            key=lambda p: p.name,
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    runs: list[Path] = []
    for child in children:
        if child.name.startswith("."):
            continue
        if is_run_dir(child):
            runs.append(child)
        else:
            runs.extend(_runs_below(child, depth - 1))
    return runs


def discover_runs(root: Path) -> list[Path]:
    """The run directories that `root` stands for, in a stable (sorted) order; `[root]` itself when
    it is a run, or when nothing below it is a run yet (a run about to start)."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    return _runs_below(root, MAX_DEPTH) or [root]


def display_name(run: Path, root: Path, several_roots: bool) -> str:
    """A short, unique-enough label: the path below the watched root (prefixed with the root's
    name when several roots are watched), or the root's own name when it is the run."""
    if run == root:
        return root.name or str(root)
    relative = run.relative_to(root).as_posix()
    return f"{root.name}/{relative}" if several_roots else relative
