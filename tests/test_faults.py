"""Fault injection: every fault a run can meet is survived — a kill before the first checkpoint,
divergence, damaged checkpoints, a full disk, a truncated metrics file, SIGTERM, a moved or unusable
run directory — and the run resumes to exactly the result of an uninterrupted one (CPU)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import (assert_same_run, deterministic, interrupt_at, make_corpus, poison_step, tiny_overrides,
                      train_tiny)
from metalm import checkpoint as ckpt
from metalm.checkpoint import resolve_model_dir
from metalm.config import load_config
from metalm.errors import CheckpointError, ConfigError
from metalm.run_dir import RunDir, read_jsonl

SAVE_EVERY_2 = {"train.save_every": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("faults") / "corpus")


@pytest.fixture(scope="module")
def full(corpus, tmp_path_factory) -> Path:
    """The uninterrupted reference run (checkpoints at 2, 4, 6, 8)."""
    run = tmp_path_factory.mktemp("full") / "run"
    assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    return run


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def weights(path: Path) -> dict:
    return load_file(path / "model.safetensors")


def full_rows(run: Path) -> list[dict]:
    return read_jsonl(run / "metrics.jsonl")


def interrupted_run(corpus, run, monkeypatch, at: int = 7, **extra) -> Path:
    interrupt_at(monkeypatch, at)
    assert train_tiny(corpus, run, **{**SAVE_EVERY_2, **extra}) == 130
    monkeypatch.undo()
    assert status(run)["state"] == "interrupted"
    return run


# -- a kill before the first checkpoint ---------------------------------------------------------


def test_kill_before_the_first_checkpoint_restarts_without_duplicate_rows(corpus, tmp_path, monkeypatch):
    settings = {"train.save_every": 0, "dynamics.every": 2}
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert train_tiny(corpus, reference, **settings) == 0
    interrupt_at(monkeypatch, 5)
    assert train_tiny(corpus, run, **settings) == 130
    monkeypatch.undo()
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(6)) and not (run / "checkpoints").exists()
    assert train_tiny(corpus, run, **settings) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(9))  # each step once
    assert read_jsonl(run / "dynamics.jsonl") == read_jsonl(reference / "dynamics.jsonl")
    assert_same_run(reference, run)


def test_disk_full_at_the_first_save_then_resume_is_exact(corpus, full, tmp_path, monkeypatch, capsys):
    original = ckpt.save_checkpoint
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", "checkpoints/step-00000002/model.safetensors")
        return original(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", full_disk)
    run = tmp_path / "run"
    capsys.readouterr()
    assert train_tiny(corpus, run, **SAVE_EVERY_2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("metalm: error: no space left") and "Traceback" not in "".join(err)
    assert status(run)["state"] == "failed" and not (run / "checkpoints").exists()
    assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    assert_same_run(full, run)


@pytest.mark.parametrize("limit_kib, fails", [(1000, "state.pt"), (500, "model.safetensors")])
def test_a_file_size_limit_at_a_checkpoint_is_one_line_then_resume_is_exact(corpus, full, tmp_path, limit_kib, fails):
    """A real refused write (`ulimit -f`: torch and safetensors raise their own errors, not OSError)."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "metalm", "train", str(corpus.parent / "cfg.yaml"),
            *tiny_overrides(corpus, run, **SAVE_EVERY_2)]
    proc = subprocess.run(["bash", "-c", f'ulimit -f {limit_kib}; exec "$@"', "bash", *argv], capture_output=True,
                          text=True, timeout=600)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert err[-1].startswith("metalm: error: cannot write ") and "step-00000002" in err[-1], err[-1]
    assert status(run)["state"] == "failed" and not RunDir(run).checkpoints()
    assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    assert_same_run(full, run)


# -- divergence ---------------------------------------------------------------------------------------


def all_checkpoints_finite(run: Path) -> bool:
    return all(torch.isfinite(t).all() for _, path in RunDir(run).checkpoints() for t in weights(path).values())


def test_divergence_stops_the_run_without_a_nonfinite_checkpoint(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_tiny(corpus, run, **{"train.lr": 1e6, "train.save_every": 1}) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("metalm: error: training diverged at step ") and "on_nonfinite" in message
    st = status(run)
    assert st["state"] == "diverged" and "diverged" in st["error"] and st["step"] < 8
    assert RunDir(run).checkpoints() and all_checkpoints_finite(run)
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == st["step"]  # the bad step is not logged


def test_skip_policy_counts_skipped_steps_and_stops_after_the_maximum(corpus, tmp_path):
    run = tmp_path / "run"
    rc = train_tiny(corpus, run, **{"train.lr": 1e6, "train.save_every": 1, "train.on_nonfinite": "skip",
                               "train.max_skipped_steps": 2})
    assert rc == 2 and status(run)["state"] == "diverged" and "2 steps in a row were skipped" in status(run)["error"]
    rows = read_jsonl(run / "metrics.jsonl")[1:]
    assert [r["skipped_steps"] for r in rows][-2:] == [1, 2] and rows[0]["skipped_steps"] == 0
    assert all_checkpoints_finite(run)


def test_a_skipped_step_leaves_the_weights_and_the_run_goes_on(corpus, full, tmp_path, monkeypatch):
    run = tmp_path / "run"
    poison_step(monkeypatch, 2)
    assert train_tiny(corpus, run, **{"train.save_every": 1, "train.on_nonfinite": "skip"}) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r.get("skipped_steps") for r in rows] == [None, 0, 0, 1, 1, 1, 1, 1, 1]
    assert rows[3]["grad_norm"] is None and rows[3]["tokens"] == full_rows(full)[3]["tokens"]
    assert [r.get("lr") for r in rows] == [r.get("lr") for r in full_rows(full)]  # the schedule moved on
    before, after = weights(run / "checkpoints" / "step-00000002"), weights(run / "checkpoints" / "step-00000003")
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 3's update was dropped
    assert not all(torch.equal(before[k], w) for k, w in weights(run / "final").items())
    counters = ckpt.load_state(run / "checkpoints" / "step-00000004")["counters"]
    assert counters["skipped_steps"] == 1 and counters["skipped_in_a_row"] == 0


def test_nonfinite_config_values_are_refused():
    for override in ("train.lr=.inf", "train.lr=.nan", "train.grad_clip=.inf"):
        with pytest.raises(ConfigError, match="finite"):
            load_config(None, [override])


# -- damaged checkpoints ---------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) * 3 // 4] ^= 0x01  # inside the tensor data: the file still parses
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": ("model.safetensors", truncate, True),
    "truncated state": ("state.pt", truncate, True),
    "flipped weight byte": ("model.safetensors", flip_byte, True),
    "flipped state byte": ("state.pt", flip_byte, True),
    "legacy truncated weights": ("model.safetensors", truncate, False),  # no checksums.json: the load fails
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(corpus, full, tmp_path, monkeypatch, caplog, case):
    name, damage, checksums = DAMAGE[case]
    run = interrupted_run(corpus, tmp_path / "run", monkeypatch)
    latest = run / "checkpoints" / "step-00000006"
    if not checksums:
        (latest / "checksums.json").unlink()
    damage(latest / name)
    with caplog.at_level(logging.WARNING, logger="metalm"):
        assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    assert "step-00000006 is damaged" in caplog.text and (name in caplog.text or "does not load" in caplog.text)
    assert_same_run(full, run)


def test_eval_resolves_the_newest_intact_checkpoint(corpus, tmp_path, monkeypatch, caplog):
    run = interrupted_run(corpus, tmp_path / "run", monkeypatch)
    truncate(run / "checkpoints" / "step-00000006" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="metalm"):
        assert resolve_model_dir(run).model_dir == run / "checkpoints" / "step-00000004"
    assert "does not match" in caplog.text or "bytes" in caplog.text
    with pytest.raises(CheckpointError, match="step-00000006 is damaged"):
        resolve_model_dir(run / "checkpoints" / "step-00000006")


def test_every_checkpoint_damaged_is_one_line_and_status_failed(corpus, tmp_path, monkeypatch, capsys):
    run = interrupted_run(corpus, tmp_path / "run", monkeypatch)
    for _, path in RunDir(run).checkpoints():
        flip_byte(path / "state.pt")
    before = read_jsonl(run / "metrics.jsonl")
    capsys.readouterr()
    assert train_tiny(corpus, run, **SAVE_EVERY_2) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("metalm: error: no usable checkpoint in ")
    assert status(run)["state"] == "failed" and read_jsonl(run / "metrics.jsonl") == before  # nothing discarded


# -- the metrics file ------------------------------------------------------------------------------------


def test_rows_lost_before_the_checkpoint_are_reported(corpus, full, tmp_path, monkeypatch, caplog):
    run = interrupted_run(corpus, tmp_path / "run", monkeypatch)
    metrics = run / "metrics.jsonl"
    text = metrics.read_text()
    cut = text.index('{"step": 2')
    metrics.write_text(text[: cut + 10])  # a torn row 2; rows 2–7 gone (the checkpoint is at 6)
    with caplog.at_level(logging.WARNING, logger="metalm"):
        assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    assert "lacks the rows of steps 2–6" in caplog.text
    assert status(run)["metrics_gaps"] == [[2, 6]] and status(run)["state"] == "finished"
    rows = deterministic(read_jsonl(metrics))
    assert [r["step"] for r in rows] == [0, 1, 7, 8]
    assert rows == [r for r in deterministic(read_jsonl(full / "metrics.jsonl")) if r["step"] in (0, 1, 7, 8)]
    assert RunDir(run).metrics_problems() == [f"{metrics} lacks the rows of steps 2–6 (lost before the run resumed)"]


def test_rows_lost_after_the_run_finished_are_reported(corpus, full, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(full, run)
    assert RunDir(run).metrics_problems() == []
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:4]))
    assert RunDir(run).metrics_problems() == [f"{run / 'metrics.jsonl'} holds 4 of the 9 rows the run wrote"]
    with caplog.at_level(logging.INFO, logger="metalm"):
        assert train_tiny(corpus, run, **SAVE_EVERY_2) == 0
    assert "already finished" in caplog.text and "holds 4 of the 9 rows" in caplog.text


# -- signals ---------------------------------------------------------------------------------------------


def test_sigterm_interrupts_like_ctrl_c_and_resumes_exactly(corpus, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    extra = {"train.steps": 40, "train.save_every": 5, "train.eval_every": 20, "run.threads": 1}

    def command(run):
        return [sys.executable, "-m", "metalm", "train", str(cfg), *tiny_overrides(corpus, run, **extra)]

    reference, run = tmp_path / "reference", tmp_path / "run"
    subprocess.run(command(reference), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-00000005").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert not (run / "final").exists(), "the run finished before it could be stopped"
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err[-2000:]
    assert status(run)["state"] == "interrupted"
    subprocess.run(command(run), check=True, env=env, capture_output=True, timeout=600)
    assert_same_run(reference, run)


def test_signal_handlers_are_restored_after_a_run(corpus, tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert train_tiny(corpus, tmp_path / "run", **{"train.steps": 2}) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- the run directory -------------------------------------------------------------------------------------


def test_a_moved_run_directory_resumes(corpus, full, tmp_path, monkeypatch):
    run = interrupted_run(corpus, tmp_path / "run", monkeypatch)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(run, moved)
    assert train_tiny(corpus, moved, **SAVE_EVERY_2) == 0
    assert_same_run(full, moved)


@pytest.mark.parametrize("case", ["a file", "under a file", "not writable"])
def test_unusable_run_dir_is_one_line_before_anything_is_written(corpus, tmp_path, monkeypatch, capsys, case):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    run = {"a file": blocker, "under a file": blocker / "run", "not writable": tmp_path / "ro" / "run"}[case]
    if case == "not writable":
        (tmp_path / "ro").mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    capsys.readouterr()
    assert train_tiny(corpus, run) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalm: error: run.dir "), lines
    assert blocker.read_text() == "x" and not (tmp_path / "ro" / "run").exists()


def test_config_written_atomically_under_a_file_size_limit(corpus, tmp_path):
    """A run killed while writing config.yaml (here: the file size limit) leaves no half config: the
    same command then works."""
    import resource

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    env = {**os.environ, "METALM_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"

    def command(run):
        return [sys.executable, "-m", "metalm", "train", str(cfg), *tiny_overrides(corpus, run, **{"train.steps": 2})]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    subprocess.run(command(tmp_path / "warm"), check=True, env=env, capture_output=True, timeout=600)  # a warm cache
    proc = subprocess.run(command(run), env=env, capture_output=True, text=True, preexec_fn=limit, timeout=600)
    assert proc.returncode != 0 and RunDir(run).read_config() is None
    assert not (run / "config.yaml").exists()
    assert "write_config" in proc.stderr, proc.stderr[-2000:]  # the write that hit the limit
    proc = subprocess.run(command(run), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert status(run)["state"] == "finished"


@pytest.mark.parametrize("after_s", [0.4, 0.8, 1.2])
def test_ctrl_c_during_start_up_is_one_line(corpus, tmp_path, after_s):
    """SIGINT while Python imports torch and builds the parser (before any run exists): one line, 130."""
    (corpus.parent / "cfg.yaml").write_text("{}")
    # Ctrl-C as at a terminal, even when the suite itself runs with SIGINT ignored (started with `&`)
    proc = subprocess.Popen([sys.executable, "-m", "metalm", "train", str(corpus.parent / "cfg.yaml"),
                             *tiny_overrides(corpus, tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("metalm: interrupted"), err[-2000:]
