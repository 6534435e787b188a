"""End-to-end training through the CLI: run directory, exact resume, export, errors, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers import assert_same_run, interrupt_at, tiny_overrides, train_one_and_two_processes
from metalm.cli import main
from metalm.run_dir import read_jsonl
from metalm.training import faults

def train(tmp_path, corpus, run, *extra, config_text="{}"):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_text)
    return main(["train", str(cfg), *tiny_overrides(corpus, run), *extra])


def test_run_directory_contents_and_metrics(tmp_path, corpus_dir, capsys):
    run = tmp_path / "run"
    assert train(tmp_path, corpus_dir, run) == 0
    out = capsys.readouterr().err
    assert "M parameters" in out and "non-embedding" in out and "MFLOPs/token" in out
    for name in ("config.yaml", "metrics.jsonl", "status.json", "data.json", "tokenizer/tokenizer.json",
                 "checkpoints/step-00000004/model.safetensors", "checkpoints/step-00000008/state.pt",
                 "final/model.safetensors", "final/tokenizer.json"):
        assert (run / name).exists(), name
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(9))
    assert rows[0]["tokens"] == 0 and "val_loss" in rows[0]
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 4, 8]
    for r in rows[1:]:
        assert {"loss", "lr", "tokens", "flops", "time", "step_kind", "grad_norm"} <= set(r)
        assert r["tokens"] == r["step"] * 4 * 32
    assert rows[-1]["flops"] == rows[1]["flops"] * 8
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_finished_run_does_nothing(tmp_path, corpus_dir, capsys):
    run = tmp_path / "run"
    train(tmp_path, corpus_dir, run)
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train(tmp_path, corpus_dir, run) == 0
    assert "already finished" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before


def test_kill_and_resume_is_exact(tmp_path, corpus_dir, monkeypatch):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    dyn = ("dynamics.every=2", "dynamics.groups=[activations, attention]")
    assert train(tmp_path, corpus_dir, full, *dyn) == 0

    interrupt_at(monkeypatch, 6)  # after the step-4 checkpoint and two more logged steps
    assert train(tmp_path, corpus_dir, resumed, *dyn) == 130
    assert json.loads((resumed / "status.json").read_text())["state"] == "interrupted"
    assert not (resumed / "final").exists()
    assert max(r["step"] for r in read_jsonl(resumed / "metrics.jsonl")) == 6
    monkeypatch.setattr(faults, "before_step", None)
    assert train(tmp_path, corpus_dir, resumed, *dyn) == 0

    assert_same_run(full, resumed)  # bit-identical on CPU
    dynamics = read_jsonl(full / "dynamics.jsonl")
    assert sorted({r["step"] for r in dynamics}) == [0, 2, 4, 6, 8]
    assert dynamics == read_jsonl(resumed / "dynamics.jsonl")


def test_sigkill_and_resume_is_exact(tmp_path, corpus_dir):
    """A real `kill -9` of a training process at an arbitrary moment, then the same command again."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def command(run):
        return [sys.executable, "-m", "metalm", "train", str(cfg),
                *tiny_overrides(corpus_dir, run, **{"train.steps": 60, "train.save_every": 10, "train.eval_every": 20})]

    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(command(full), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-00000020").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists(), "the run finished before it could be killed"
    subprocess.run(command(killed), check=True, env=env, capture_output=True)
    assert_same_run(full, killed)


def test_export_loads_with_auto_classes_and_generates(tmp_path, corpus_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    train(tmp_path, corpus_dir, run)
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    ids = tok("The river", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, ids.shape[1] + 5)
    assert isinstance(tok.decode(out[0]), str) and tok.mask_token == "<|mask|>"


def run_cli(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "metalm", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("case", ["missing", "empty", "undecodable", "short_validation", "bad_key", "bad_value"])
def test_error_paths_exit_2_with_one_line_and_no_run_dir(tmp_path, corpus_dir, case):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    run = tmp_path / "run"
    overrides = tiny_overrides(corpus_dir, run)
    bad = tmp_path / "bad.txt"
    if case == "missing":
        overrides.append(f"data.train={tmp_path / 'nope.txt'}")
    elif case == "empty":
        bad.write_text("\n\n")
        overrides.append(f"data.train={bad}")
    elif case == "undecodable":
        bad.write_bytes(b"\xff\xfe\x00garbage")
        overrides.append(f"data.train={bad}")
    elif case == "short_validation":
        bad.write_text("too short\n")
        overrides.append(f"data.validation={bad}")
    elif case == "bad_key":
        overrides.append("train.stepz=3")
    else:
        overrides.append("train.batch_size=-4")
    proc = run_cli(["train", str(cfg), *overrides])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metalm: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run.exists()


def test_resume_with_a_different_config_is_refused(tmp_path, corpus_dir):
    run = tmp_path / "run"
    train(tmp_path, corpus_dir, run, "train.steps=4")
    proc = run_cli(["train", str(tmp_path / "cfg.yaml"), *tiny_overrides(corpus_dir, run), "train.lr=0.5"])
    assert proc.returncode == 2 and "different config (train.lr: 0.003 → 0.5" in proc.stderr


def test_ddp_two_processes_match_one(tmp_path, corpus_dir):
    """torchrun with 2 CPU processes (gloo) follows the 1-process loss curve for the same global batch."""
    common = {"train.steps": 6, "train.eval_every": 3, "train.grad_accum": 2}
    one, two = train_one_and_two_processes(tmp_path, corpus_dir, **common)
    r1, r2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r["step"] for r in r1] == [r["step"] for r in r2]
    for a, b in zip(r1, r2):
        for key in ("loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
        assert a["tokens"] == b["tokens"] and a["flops"] == b["flops"]
    w1, w2 = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
