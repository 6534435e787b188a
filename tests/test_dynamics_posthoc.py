"""Post-hoc rows from saved checkpoints equal the on-the-fly rows; row files; figures."""

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from metalm.dynamics.config import DynamicsConfig
from metalm.dynamics.plots import plot_overlay, plot_run
from metalm.dynamics.posthoc import analyse_run, compare_runs, load_probe_batch
from metalm.dynamics.probe import dynamics_rows
from metalm.dynamics.readout import write_readout
from metalm.run_dir import RunDir, append_jsonl as append_rows, read_jsonl as load_rows
from metalm.errors import DataError, MetalmError
from metalm.model import build_model

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"


def train_run(run, steps=4, every=2, save_every=2, record=True, seed=0):
    """A tiny training run, recording like the trainer: rows appended to `RUN/dynamics.jsonl` at
    step 0 and every `every` steps, read-out at the end; checkpoints every `save_every` steps."""
    run.mkdir(parents=True)
    torch.manual_seed(seed)
    model = build_model("nano", vocab_size=64)
    probe = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(99))
    save_file({"input_ids": probe}, str(run / "probe_batch.safetensors"))
    cfg = DynamicsConfig(every=every if record else 0, smoothing=1)
    (run / "config.yaml").write_text(yaml.safe_dump({"dynamics": cfg.model_dump()}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(seed + 1)
    model.train()
    for step in range(steps + 1):
        if cfg.every and step % cfg.every == 0:
            append_rows(run / "dynamics.jsonl", dynamics_rows(model, probe, step, cfg.groups))
        if step % save_every == 0:
            model.save_pretrained(run / "checkpoints" / f"step-{step:08d}")
        if step == steps:
            break
        batch = torch.randint(0, 64, (4, 16), generator=data)
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
    readout = write_readout(run, load_rows(run / "dynamics.jsonl"), cfg.smoothing) if cfg.every else None
    return model, probe, readout


def assert_rows_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), (a, key)
            else:
                assert a[key] == b[key]


def test_posthoc_rows_equal_on_the_fly_rows(tmp_path):
    run = tmp_path / "run"
    _, _, readout = train_run(run)
    live = load_rows(run / "dynamics.jsonl")
    assert sorted({r["step"] for r in live}) == [0, 2, 4]
    assert readout is not None and (run / "phases.json").exists()
    assert json.loads((run / "phases.json").read_text()) == readout.phases
    assert all(p.read_bytes().startswith(PNG) for p in readout.plots)

    result = analyse_run(run)
    assert result.rows_path == run / "dynamics-posthoc.jsonl"  # the run recorded its own rows
    assert result.computed_steps == [0, 2, 4]
    assert_rows_equal(load_rows(result.rows_path), live)
    assert (run / "phases-posthoc.json").exists() and (run / "plots" / "posthoc" / "erank_heatmap.png").exists()
    # Rerun resumes; overwrite recomputes.
    assert analyse_run(run, readout=False).skipped_steps == [0, 2, 4]
    assert analyse_run(run, overwrite=True, readout=False).computed_steps == [0, 2, 4]
    assert_rows_equal(load_rows(result.rows_path), live)


def test_run_without_dynamics_gets_them_from_checkpoints(tmp_path):
    run = tmp_path / "vanilla"
    model, probe, readout = train_run(run, steps=3, save_every=1, record=False)
    assert readout is None and not (run / "dynamics.jsonl").exists()
    model.save_pretrained(run / "final")
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 3, "total_steps": 3}))
    assert [s for s, _ in RunDir(run).saved_models()] == [0, 1, 2, 3]  # final is step 3, already saved
    # A killed earlier analysis: step 0 complete, step 1 half-written.
    step0 = dynamics_rows(model.__class__.from_pretrained(run / "checkpoints" / "step-00000000"), probe, 0)
    append_rows(run / "dynamics.jsonl", step0 + dynamics_rows(model, probe, 1)[:3])
    with (run / "dynamics.jsonl").open("a") as handle:
        handle.write('{"step": 1, "gro')
    result = analyse_run(run, groups=["activations", "weights", "gradients", "attention"])
    assert result.rows_path == run / "dynamics.jsonl"
    assert result.skipped_steps == [0] and result.computed_steps == [1, 2, 3]
    rows = load_rows(run / "dynamics.jsonl")
    assert sorted({r["step"] for r in rows}) == [0, 1, 2, 3]
    assert_rows_equal([r for r in rows if r["step"] == 3], dynamics_rows(model, probe, 3))
    assert (run / "phases.json").exists() and (run / "plots" / "erank_vs_step.png").exists()
    # Only the final model, no checkpoint at its step:
    for step in (1, 2, 3):
        for f in (run / "checkpoints" / f"step-{step:08d}").iterdir():
            f.unlink()
        (run / "checkpoints" / f"step-{step:08d}").rmdir()
    assert [(s, p.name) for s, p in RunDir(run).saved_models()] == [(0, "step-00000000"), (3, "final")]


def test_probe_batch_source_and_errors(tmp_path):
    ids = torch.arange(6).view(2, 3)
    with pytest.raises(DataError, match="probe_batch.safetensors"):
        load_probe_batch(tmp_path)
    assert torch.equal(load_probe_batch(tmp_path, ids), ids)
    save_file({"input_ids": ids + 1}, str(tmp_path / "probe_batch.safetensors"))
    assert torch.equal(load_probe_batch(tmp_path, ids), ids + 1)  # the run's own batch wins
    with pytest.raises(MetalmError, match="no saved checkpoints"):
        analyse_run(tmp_path)


def test_row_files_survive_a_killed_writer_and_resume(tmp_path):
    path = tmp_path / "dynamics.jsonl"
    append_rows(path, [{"step": s, "group": "weights"} for s in range(5)])
    with path.open("a") as handle:
        handle.write('{"step": 5, "gr')  # killed mid-write
    assert [r["step"] for r in load_rows(path)] == [0, 1, 2, 3, 4]
    append_rows(path, [{"step": 6, "group": "weights"}])  # starts a fresh line after the torn one
    assert [r["step"] for r in load_rows(path)] == [0, 1, 2, 3, 4, 6]
    RunDir(tmp_path).truncate_rows(2)  # what a resumed run does
    assert [r["step"] for r in load_rows(path)] == [0, 1, 2]


def synthetic_rows(shift: float) -> list[dict]:
    rows = []
    for step in range(0, 60, 10):
        for layer in range(-1, 3):
            rows.append({"step": step, "group": "activations", "layer": layer, "component": "embed" if layer < 0 else "output",
                         "erank": 10 + shift + step / 10 - layer, "per": 0.5, "shape": [32, 64]})
        for group in ("weights", "gradients"):
            for layer, component in [(-1, "embed"), (0, "q"), (0, "down"), (1, "q"), (1, "down"), (2, "lm_head")]:
                rows.append({"step": step, "group": group, "layer": layer, "component": component,
                             "erank": 20.0, "per": 0.5 + shift / 10 + layer / 100, "shape": [64, 64]})
        for layer in range(2):
            for head in range(4):
                rows.append({"step": step, "group": "attention", "layer": layer, "head": head,
                             "entropy": 2 - step / 100 - head / 10 + shift, "entropy_norm": 0.9 - head / 10})
    return rows


def test_plots_are_written_and_non_empty(tmp_path):
    paths = plot_run(synthetic_rows(0.0), tmp_path / "one", title="demo")
    names = {p.name for p in paths}
    assert names == {"erank_vs_step.png", "per_by_component.png", "erank_heatmap.png", "entropy_heatmap.png",
                     "head_entropy_layer1.png"}
    for p in paths:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
    chosen = plot_run(synthetic_rows(0.0), tmp_path / "chosen", entropy_layer=0)
    assert "head_entropy_layer0.png" in {p.name for p in chosen}
    only_acts = [r for r in synthetic_rows(0.0) if r["group"] == "activations"]
    assert {p.name for p in plot_run(only_acts, tmp_path / "acts")} == {"erank_vs_step.png", "erank_heatmap.png"}
    overlay = plot_overlay(synthetic_rows(0.0), synthetic_rows(1.0), ["vanilla", "meta"], tmp_path / "overlay")
    assert {p.name for p in overlay} == {"overlay_activation_erank.png", "overlay_head_entropy.png", "overlay_per.png"}
    for p in overlay:
        assert p.read_bytes().startswith(PNG) and p.stat().st_size > 5000


def test_compare_runs_uses_recorded_rows(tmp_path):
    for name, shift in (("vanilla", 0.0), ("meta", 1.0)):
        (tmp_path / name).mkdir()
        append_rows(tmp_path / name / "dynamics.jsonl", synthetic_rows(shift))
    paths = compare_runs(tmp_path / "vanilla", tmp_path / "meta")
    assert paths and all(p.parent == tmp_path / "vanilla" / "plots" / "overlay-meta" for p in paths)
    with pytest.raises(MetalmError, match="no dynamics rows"):
        compare_runs(tmp_path / "vanilla", tmp_path)


def test_posthoc_probes_under_the_trainers_tf32_setting(tmp_path, monkeypatch):
    """On CUDA the trainer enables TF32 for float32 matmuls; post-hoc dynamics set the same with the
    same function for their device, so a checkpoint's probes equal the on-the-fly ones there too."""
    import metalm.dynamics.posthoc as posthoc
    import metalm.trainer as trainer

    assert posthoc.enable_tf32 is trainer.enable_tf32
    run = tmp_path / "run"
    train_run(run, steps=2, record=False)
    calls = []
    monkeypatch.setattr(posthoc, "enable_tf32", lambda device: calls.append(device))
    analyse_run(run, readout=False)
    assert calls == [torch.device("cpu")]
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:  # what the shared function does for a CUDA device (the flags can be set without one)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        trainer.enable_tf32(torch.device("cuda", 0))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
