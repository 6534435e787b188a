"""Everything metalm writes follows the umask, atomic writes and published directories included
(a colleague on a shared machine reads the results under umask 022; nobody does under 077)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_corpus, tiny_overrides


def _metalm(args: list[str], mask: int, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "metalm", *args], cwd=cwd, capture_output=True, text=True,
                          preexec_fn=lambda: os.umask(mask), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_and_folder_follows_the_umask(tmp_path, mask):
    corpus = make_corpus(tmp_path / "corpus")
    (tmp_path / "cfg.yaml").write_text("{}")
    run = tmp_path / "runs" / "r"
    _metalm(["train", "cfg.yaml", *tiny_overrides(corpus, run)], mask, tmp_path)
    _metalm(["eval", "perplexity", str(run), "--data", str(corpus / "validation")], mask, tmp_path)
    _metalm(["report", str(run)], mask, tmp_path)
    written = [p for p in (tmp_path / "runs").rglob("*")]
    for name in ("final", "final/model.safetensors", "final/README.md", "config.yaml", "data.json", "status.json",
                 "eval/perplexity.json", "tokenizer/tokenizer_config.json", "checkpoints"):
        assert run / name in written, name
    assert any(p.name == "report.md" for p in written) and any(p.name == "summary.json" for p in written)
    wrong = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written
             if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~mask}
    assert not wrong
