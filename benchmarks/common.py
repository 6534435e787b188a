"""What the benchmark scripts share: paths, the machine description, result files, "before" worktrees.

The scripts are run as `python benchmarks/<name>.py` (gpu.py through gpu.sh), so this directory is on
`sys.path` and `from common import ...` finds this module. It imports nothing heavy at load time:
torch is imported only by `machine()`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED_DATA = ROOT.parent / "shared" / "data"
ELTEC = SHARED_DATA / "corpora" / "eltec-eng"  # ELTeC English: train/ and validation/


def machine() -> str:
    """One line naming where a result was measured: CPU architecture (and processor, where the platform
    names one beyond the architecture), CPU count, Python, torch and the CUDA device when present."""
    arch, processor = platform.machine(), platform.processor()
    parts = [f"{arch} ({processor})" if processor and processor != arch else arch or "unknown CPU",
             f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}"]
    try:
        import torch
    except ImportError:
        return ", ".join(parts)
    parts.append(f"torch {torch.__version__}")
    if torch.cuda.is_available():
        parts.append(f"CUDA {torch.cuda.get_device_name()}")
    return ", ".join(parts)


def save_result(path: str | Path, data) -> Path:
    """Write `data` as indented JSON (with a trailing newline), creating the parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def ensure_worktree(commit: str, path: Path) -> Path:
    """A git worktree of `commit` at `path` (added when absent); returns its `src` directory, for
    PYTHONPATH. Exits when `path` holds a worktree at another commit."""
    if not (path / "src" / "metalm").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True, text=True)
    want = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True, capture_output=True, text=True)
    if head.stdout.strip() != want.stdout.strip():
        raise SystemExit(f"{path} is at {head.stdout.strip()[:12]}, not {commit}; remove it (git worktree remove "
                         f"{path}) or pass --worktree")
    return path / "src"
