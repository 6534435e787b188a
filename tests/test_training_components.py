"""The loop's components: row policy (and its state derived on resume), training state, progress."""

from __future__ import annotations

import io
import subprocess
import sys

import torch

from helpers import deterministic, interrupt_and_resume, tiny_overrides, train_tiny
from metalm.accounting import Work
from metalm.run_dir import RunDir, read_jsonl
from metalm.training.cadence import Cadence
from metalm.training.progress import Progress
from metalm.training.rows import RowPolicy
from metalm.training.state import TrainState

KINDS = ["ar", "meta", "meta", "ar", "ar", "meta", "ar", "ar", "meta", "meta", "ar", "meta"]


def logged_steps(policy: RowPolicy, start: int, stop: int) -> list[int]:
    out = []
    for k in range(start, stop):
        if policy.due(k + 1, KINDS[k], evaluated=False):
            out.append(k + 1)
    return out


def test_row_policy_logs_boundaries_and_first_of_each_kind():
    policy = RowPolicy(Cadence(4, len(KINDS)), KINDS.__getitem__)
    # interval 1-4: first ar (1), first meta (2), boundary (4); 5-8: ar 5, meta 6, boundary 8; ...
    assert logged_steps(policy, 0, len(KINDS)) == [1, 2, 4, 5, 6, 8, 9, 11, 12]
    vanilla = RowPolicy(Cadence(4, 10), None)
    assert [k + 1 for k in range(10) if vanilla.due(k + 1, "ar", evaluated=k == 2)] == [3, 4, 8, 10]


def test_row_policy_state_is_derived_on_resume():
    """Resuming at any step logs exactly the rows an uninterrupted run logs from there on."""
    full = logged_steps(RowPolicy(Cadence(4, len(KINDS)), KINDS.__getitem__), 0, len(KINDS))
    for at in range(len(KINDS)):
        policy = RowPolicy(Cadence(4, len(KINDS)), KINDS.__getitem__)
        policy.resume(TrainState(step=at, work=Work(tokens=10 * at), time=float(at)))
        assert logged_steps(policy, at, len(KINDS)) == [s for s in full if s > at], at


def test_train_state_round_trip_ignores_old_keys():
    state = TrainState(step=3, work=Work(1, 2, 3, 4), time=1.5, meta_steps=2)
    saved = {**state.state_dict(), "kinds_logged": ["ar"]}  # written by older versions
    restored = TrainState()
    restored.load_state_dict(saved)
    assert restored == state and "kinds_logged" not in state.state_dict()


def test_progress_without_a_terminal_logs_lines(caplog):
    stream = io.StringIO()  # not a TTY
    progress = Progress(10, 0, "run", enabled=True, stream=stream)
    with caplog.at_level("INFO", logger="metalm"):
        progress.step()
        progress.logged({"step": 1, "loss": 5.0, "tokens_per_s": 1000.0})
        progress.close()
    assert stream.getvalue() == "" and "step 1/10  loss 5.000  tok_s 1,000" in caplog.text


def test_hybrid_run_resumed_between_log_boundaries_is_exact(tmp_path, corpus_dir, monkeypatch):
    """log_every 4, save_every 3: the resumed interval's logged kinds come from the schedule."""
    meta = {"meta.enabled": "true", "meta.band_min_count": 5, "meta.band_skip_top": 10, "meta.window_len": 16,
            "meta.n_way": 3, "meta.k_shot": 2, "meta.q_query": 2, "meta.inner_steps": 2, "meta.schedule": "random",
            "train.steps": 10, "train.log_every": 4, "train.save_every": 3, "train.eval_every": 5}

    def run(name):
        return train_tiny(corpus_dir, tmp_path / name, **meta)

    assert run("full") == 0
    interrupt_and_resume(monkeypatch, lambda: run("resumed"), at_step=5)  # after the step-3 checkpoint, inside 5-8
    full, resumed = read_jsonl(tmp_path / "full" / "metrics.jsonl"), read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    assert len({r["step_kind"] for r in full[1:]}) == 2 and deterministic(full) == deterministic(resumed)
    state = torch.load(RunDir(tmp_path / "full").latest_checkpoint()[1] / "state.pt", weights_only=True)
    assert set(state["counters"]) == {"step", "work", "time", "meta_steps"}


def test_log_file_has_no_progress_frames(tmp_path, corpus_dir):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    log = tmp_path / "log.txt"
    args = tiny_overrides(corpus_dir, tmp_path / "run", **{"run.progress": "true", "train.log_every": 2})
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-m", "metalm", "train", str(cfg), *args], stdout=out, stderr=out, check=True)
    text = log.read_text()
    assert "\r" not in text and "step 8/8" in text and "finished" in text
