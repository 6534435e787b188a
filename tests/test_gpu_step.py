"""The GPU-ready training step, exercised on the CPU: `run.compile`, the deferred (device-side)
non-finite check, the `mfu` column, the peak-FLOP/s table and the fused-AdamW choice.

The CUDA-only paths run here through the same code: fused AdamW's `found_inf` works on the CPU too,
so the deferred check is forced on (monkeypatched) and compared with the immediate one."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import metalm.trainer as trainer_mod
from helpers import assert_same_run, deterministic, poison_step, tiny_overrides, train_tiny
from metalm.config import load_config
from metalm.device import compile_enabled, defers_host_syncs, fused_adamw
from metalm.errors import DivergedError
from metalm.peak_flops import gpu_peak_tflops, peak_tflops
from metalm.run_dir import read_jsonl
from metalm.trainer import Trainer
from metalm.training.guard import NonFiniteGuard
from metalm.training.state import TrainState

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
SHORT = {"train.steps": 4, "train.eval_every": 2, "train.save_every": 4}


# -- run.compile ------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (apt-get install g++)")
def test_compiled_step_matches_eager_and_mfu_column(tmp_path, corpus_dir, capsys):
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert train_tiny(corpus_dir, eager, **SHORT, **{"run.peak_tflops": 0.001}) == 0
    assert "torch.compile off (run.compile=auto)" in capsys.readouterr().err
    assert train_tiny(corpus_dir, compiled, **SHORT, **{"run.compile": "true"}) == 0
    err = capsys.readouterr().err
    assert err.count("torch.compile on (run.compile=true)") == 1 and "mfu" not in err  # CPU: no mfu line either

    r_eager, r_compiled = read_jsonl(eager / "metrics.jsonl"), read_jsonl(compiled / "metrics.jsonl")
    assert [r["step"] for r in r_eager] == [r["step"] for r in r_compiled] == [0, 1, 2, 3, 4]
    for a, b in zip(r_eager, r_compiled):
        for key in ("loss", "val_loss", "grad_norm"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-4, rel=1e-4), (a["step"], key)
        assert a["flops"] == b["flops"]
    # the compiled loss leaves the model as it is: same weight names, no compiled wrapper saved
    w_eager, w_compiled = load_file(eager / "final" / "model.safetensors"), load_file(compiled / "final" / "model.safetensors")
    assert set(w_eager) == set(w_compiled) and not any("_orig_mod" in k for k in w_compiled)
    assert all(torch.allclose(w_eager[k], w_compiled[k], atol=1e-4) for k in w_eager)
    ckpt = load_file(compiled / "checkpoints" / "step-00000004" / "model.safetensors")
    assert set(ckpt) == set(w_eager)

    # mfu: accounted FLOPs since the previous row / its seconds / the configured peak (1 GFLOP/s)
    assert all("mfu" not in r for r in r_compiled)  # CPU without run.peak_tflops: no column
    for prev, row in zip(r_eager, r_eager[1:]):
        expected = (row["flops"] - prev["flops"]) / (row["time"] - prev["time"]) / 1e9
        assert row["mfu"] == pytest.approx(expected, rel=1e-9)
    assert "mfu" not in r_eager[0]


# -- the deferred non-finite check -------------------------------------------------------------------
def guarded_run(policy: str, bad_steps: set[int], steps: int, deferred: bool, check_every: int,
                max_skipped: int = 2):
    """AdamW (fused) on one parameter through `NonFiniteGuard`; NaN gradients at `bad_steps`; the
    deferred counters read every `check_every` steps and at the end. Returns what a run ends with."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    state = TrainState()
    guard = NonFiniteGuard(policy, max_skipped, state, deferred=deferred)
    error = None
    try:
        for step in range(steps):
            gen = torch.Generator().manual_seed(step)
            p.grad = torch.full_like(p, math.nan) if step in bad_steps else torch.randn(p.shape, generator=gen)
            guard.step(opt, step, torch.nn.utils.clip_grad_norm_([p], 1.0))
            opt.zero_grad(set_to_none=True)
            if (step + 1) % check_every == 0 or step == steps - 1:
                guard.check()
    except DivergedError as exc:
        error = str(exc)
    moments = opt.state[p]
    return (p.detach().clone(), float(moments["step"]) if moments else 0.0, state.skipped_steps,
            state.skipped_in_a_row, error)


@pytest.mark.parametrize("policy,bad,steps", [
    ("skip", {1, 3, 4, 6}, 10),  # runs of 1 and 2: skipped, the run goes on
    ("skip", {1, 3, 4, 6, 7, 8, 9}, 12),  # a third in a row: diverged at step 9, later steps dropped
    ("skip", {0, 1, 2}, 6),  # before any update
    ("stop", {5}, 12),
    ("stop", set(), 6),
])
@pytest.mark.parametrize("check_every", [1, 4])
def test_deferred_guard_matches_the_immediate_one(policy, bad, steps, check_every):
    immediate = guarded_run(policy, bad, steps, deferred=False, check_every=1)
    deferred = guarded_run(policy, bad, steps, deferred=True, check_every=check_every)
    assert torch.equal(immediate[0], deferred[0])
    assert immediate[1:] == deferred[1:]


def test_deferred_guard_messages():
    *_, skip_error = guarded_run("skip", {2, 3, 4}, 8, deferred=True, check_every=8)
    assert skip_error.startswith("training diverged at step 5: 2 steps in a row were skipped and this one is "
                                 "non-finite too (gradient norm nan)")
    *_, stop_error = guarded_run("stop", {3}, 8, deferred=True, check_every=8)
    assert stop_error.startswith("training diverged at step 4: non-finite gradient norm nan;")


def poisoned_trainer(tmp_path, corpus, monkeypatch, name, deferred, at, **extra):
    """A Trainer with fused AdamW (and the deferred check if asked) whose step `at` has a NaN
    gradient; returns it after `run()` and the DivergedError's message, if any."""
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / name, **{"train.log_every": 4, "train.eval_every": 4,
                                                                         **extra}))
    with monkeypatch.context() as patch:  # undone on return: the next call poisons the real step again
        patch.setattr(trainer_mod, "fused_adamw", lambda device: True)
        patch.setattr(trainer_mod, "defers_host_syncs", lambda device: deferred)
        poison_step(patch, at)
        trainer = Trainer(cfg)
        error = None
        try:
            trainer.run()
        except DivergedError as exc:
            error = str(exc)
    # the deferred check hands AdamW its decision as `found_inf`
    assert hasattr(trainer.optimizer, "found_inf") is deferred and trainer.optimizer.param_groups[0]["fused"]
    return trainer, error


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_deferred_check_in_the_loop_matches_the_immediate_one(tmp_path, corpus_dir, monkeypatch, policy):
    extra = {"train.on_nonfinite": policy}
    now, now_error = poisoned_trainer(tmp_path, corpus_dir, monkeypatch, "now", False, 5, **extra)
    later, later_error = poisoned_trainer(tmp_path, corpus_dir, monkeypatch, "later", True, 5, **extra)
    assert now_error == later_error
    assert (now_error is None) == (policy == "skip")
    for (name, a), b in zip(now.model.named_parameters(), later.model.parameters()):
        assert torch.equal(a, b), name
    assert now.state.skipped_steps == later.state.skipped_steps == (1 if policy == "skip" else 0)
    steps = [float(s["step"]) for s in now.optimizer.state_dict()["state"].values()]
    assert steps == [float(s["step"]) for s in later.optimizer.state_dict()["state"].values()]

    def rows(run):
        return deterministic(read_jsonl(run / "metrics.jsonl"))

    assert rows(tmp_path / "now") == rows(tmp_path / "later")  # the bad step's row is never written
    assert [r["step"] for r in rows(tmp_path / "later")] == ([0, 4, 8] if policy == "skip" else [0, 4])


# -- peak FLOP/s and device choices ------------------------------------------------------------------
@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989),
    ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA A100 80GB PCIe", 312),
    ("NVIDIA A10G", 70), ("NVIDIA A10", 125), ("NVIDIA L4", 121), ("NVIDIA L40S", 362), ("NVIDIA L40", 181),
    ("NVIDIA GeForce RTX 4090", 165), ("NVIDIA GeForce RTX 3090", 71), ("Tesla V100-SXM2-16GB", 125),
    ("Tesla T4", 65), ("NVIDIA B200", 2250), ("AMD Instinct MI300X", 1307),
    ("NVIDIA GeForce GTX 1080", None), ("Some Future Accelerator", None),
])
def test_peak_table_lookup(name, tflops):
    assert gpu_peak_tflops(name) == tflops


def test_peak_tflops_configured_wins_and_cpu_has_none(caplog):
    assert peak_tflops(123.0, CPU) == 123.0
    with caplog.at_level("DEBUG", logger="metalm"):
        assert peak_tflops(None, CPU) is None
    assert "run.peak_tflops" in caplog.text  # a debug line: every CPU run would say it


def test_device_choices():
    assert fused_adamw(CUDA) and not fused_adamw(CPU)  # CPU keeps the foreach AdamW (bit-identical resumes)
    assert defers_host_syncs(CUDA) and not defers_host_syncs(CPU)
    assert compile_enabled("auto", CUDA) and not compile_enabled("auto", CPU)
    assert compile_enabled(True, CPU) and not compile_enabled(False, CUDA)


def test_cpu_trainer_keeps_the_default_adamw(tmp_path, corpus_dir):
    trainer = Trainer.build(load_config(None, tiny_overrides(corpus_dir, tmp_path / "run")))
    trainer.step(0)
    assert not trainer.optimizer.param_groups[0]["fused"] and not hasattr(trainer.optimizer, "found_inf")


# -- benchmarks/gpu.sh -------------------------------------------------------------------------------
GPU_SH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def test_gpu_benchmark_without_cuda_fails_in_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(["bash", str(GPU_SH), "--presets", "tiny"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device available" in proc.stderr and "--device cpu --quick" in proc.stderr


def test_gpu_benchmark_quick_cpu_path(tmp_path, corpus_dir):
    """The real step path (`Trainer.step` of AR and meta steps) on the CPU; a failing
    configuration (an unknown preset) is recorded with its reason and the next one still runs."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(GPU_SH), "--device", "cpu", "--quick", "--data", str(corpus_dir), "--out",
                           str(out), "--presets", "no-such-preset", "nano"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    (failed,) = report["failed"]
    assert failed["configuration"] == "no-such-preset compile=off" and "ConfigError" in failed["reason"]
    assert "no-such-preset" in failed["reason"]
    (r,) = report["results"]
    assert r["preset"] == "nano" and r["compile"] is False and not report["skipped"]
    assert r["ar"]["tokens_per_step"] == r["meta"]["tokens_per_step"] == 4 * 64  # the meta step reads the AR rows
    assert r["ar"]["tokens_per_s"] > 0 and r["meta_over_ar_step_time"] > 0 and r["ar"]["mfu"] is None


# -- resuming across optimizer flavours (run.device may change between a run and its resume) ---------
def flavoured_run(cfg, monkeypatch, fused: bool, deferred: bool = False, stop_at: int | None = None):
    """`Trainer(cfg).run()` with the AdamW flavour forced (`fused`, and the deferred check), stopped by
    a KeyboardInterrupt at step `stop_at` if given; returns the trainer."""
    with monkeypatch.context() as patch:
        patch.setattr(trainer_mod, "fused_adamw", lambda device: fused)
        patch.setattr(trainer_mod, "defers_host_syncs", lambda device: deferred)
        if stop_at is not None:
            from metalm.training import faults

            def dying(step):
                if step == stop_at:
                    raise KeyboardInterrupt

            patch.setattr(faults, "before_step", dying)
        trainer = Trainer(cfg)
        try:
            trainer.run()
        except KeyboardInterrupt:
            assert stop_at is not None
    return trainer


def test_cpu_checkpoint_resumes_with_fused_adamw_and_deferred_syncs(tmp_path, corpus_dir, monkeypatch):
    """A CPU (foreach) checkpoint resumed as CUDA would: fused AdamW with `found_inf` from the deferred
    guard. The saved `fused: None` used to come back with the state and fail the first step."""
    cfg = load_config(None, tiny_overrides(corpus_dir, tmp_path / "run"))
    flavoured_run(cfg, monkeypatch, fused=False, stop_at=6)  # checkpoint of step 4 written
    resumed = flavoured_run(cfg, monkeypatch, fused=True, deferred=True)
    assert resumed.state.step == 8 and hasattr(resumed.optimizer, "found_inf")
    assert all(g["fused"] and not g["foreach"] for g in resumed.optimizer.param_groups)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_fused_checkpoint_resumes_on_the_cpu_flavour(tmp_path, corpus_dir, monkeypatch):
    """A fused (CUDA-flavour) checkpoint resumed on the CPU gets the CPU's AdamW back, and continues
    bit for bit as the same state saved by a CPU run would (not with the fused kernel's rounding)."""
    from metalm import checkpoint as ckpt

    cfg = load_config(None, tiny_overrides(corpus_dir, tmp_path / "gpu"))
    flavoured_run(cfg, monkeypatch, fused=True, deferred=True, stop_at=6)
    shutil.copytree(tmp_path / "gpu", tmp_path / "as_cpu")
    resumed = flavoured_run(cfg, monkeypatch, fused=False)
    assert not any(g["fused"] for g in resumed.optimizer.param_groups)

    # the reference: the same checkpoint as a CPU run writes it (the CPU's implementation flags)
    load_state = ckpt.load_state
    default = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # the CPU trainer's AdamW
    cpu_flags = {k: default.param_groups[0][k] for k in ("fused", "foreach")}

    def as_cpu(directory):
        state = load_state(directory)
        state["optimizer"]["param_groups"] = [{**g, **cpu_flags} for g in state["optimizer"]["param_groups"]]
        return state

    monkeypatch.setattr(ckpt, "load_state", as_cpu)
    reference = load_config(None, tiny_overrides(corpus_dir, tmp_path / "as_cpu"))
    flavoured_run(reference, monkeypatch, fused=False)
    assert_same_run(tmp_path / "gpu", tmp_path / "as_cpu")


def test_gpu_benchmark_counts_only_sync_reports():
    """Host syncs are the sync debug mode's reports, not its prototype notice nor other warnings."""
    sys.path.insert(0, str(GPU_SH.parent))
    try:
        from gpu import sync_reports
    finally:
        sys.path.remove(str(GPU_SH.parent))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("Synchronization debug mode is a prototype feature and does not yet detect all "
                      "synchronizing operations", stacklevel=1)
        warnings.warn("called a synchronizing CUDA operation (Triggered internally at CUDAFunctions.cpp:1)", stacklevel=1)
        warnings.warn("some unrelated deprecation", DeprecationWarning, stacklevel=1)
    (report,) = sync_reports(caught)
    assert report.endswith(": called a synchronizing CUDA operation (Triggered internally at CUDAFunctions.cpp:1)")


def test_gpu_benchmark_names_missing_packages_in_one_line(tmp_path):
    """A Python without metalm's dependencies (as the lent GPU image lacks pydantic): one line naming
    them and where their wheels go, exit 2, before anything is imported."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    proc = subprocess.run(["bash", str(GPU_SH), "--device", "cpu", "--quick"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": str(tmp_path / "bare" / "bin" / "python"),
                                            "PYTHONPATH": ""})
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("benchmarks/gpu.sh: missing Python packages: torch, ")
    assert "pydantic" in line and "transformers" in line
    assert "benchmarks/wheels/" in line and "Traceback" not in proc.stderr
