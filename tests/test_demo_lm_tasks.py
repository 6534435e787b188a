"""The proposal's LM-task variant (DESIGN 2.3) runs on the default data with its default settings:
the demo world writes chronicles long enough for k_shot + q_query windows of window_len + 1 tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from metalm.data.demo import generate as gen
from metalm.data.demo import text as txt
from metalm.meta.config import MetaConfig

ROOT = Path(__file__).resolve().parents[1]


def test_chronicles_are_long_enough_for_default_lm_tasks(tmp_path):
    """Every chronicle holds the default episode's 8 windows of 65 tokens at ≤ 4 characters a
    token (the demo tokenizer averages ~3.3), and chronicles are the documented share."""
    world = gen.build_world(0)
    docs = txt.corpus_documents(world, "train", 400_000, seed=0)
    meta = MetaConfig(task="lm")
    need_chars = 4 * (meta.k_shot + meta.q_query) * (meta.window_len + 1)
    assert txt.CHRONICLE_CHARS >= need_chars
    long_docs = [t for _, t in docs if len(t) >= txt.CHRONICLE_CHARS]
    assert 0.02 * len(docs) <= len(long_docs) <= 0.10 * len(docs)


def test_lm_task_meta_trains_on_the_demo_data_with_defaults(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "metalm", "train", str(ROOT / "configs" / "smoke.yaml"),
                           "meta.enabled=true", "meta.task=lm", "model.preset=nano", "train.steps=4",
                           "train.warmup_steps=1", "train.eval_every=2", "train.save_every=4", "train.log_every=1",
                           "train.batch_size=4", f"run.dir={run}"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    meta_rows = [r for r in rows if r.get("step_kind") == "meta"]
    assert meta_rows and all(r["meta_loss"] > 0 for r in meta_rows)
    assert (run / "final" / "model.safetensors").exists()
