"""The run-directory contract: one module owns the layout; files a later run reads are atomic."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalm.atomic import publish_dir, write_json_atomic, write_text_atomic
from metalm.checksums import CHECKSUMS, checkpoint_problem, file_digests
from metalm.config_diff import config_differences, differing_keys, flatten
from metalm.errors import ConfigError
from metalm.run_dir import RunDir, append_jsonl, is_run_dir, read_jsonl
from metalm.step_ranges import show_ranges, step_ranges

SRC = Path(__file__).resolve().parents[1] / "src" / "metalm"


def test_no_other_module_spells_the_run_files():
    owned = re.compile(r"metrics\.jsonl|status\.json|config\.yaml|dynamics\.jsonl|phases\.json|probe_batch\.safetensors")
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in SRC.rglob("*.py") if path.name != "run_dir.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if owned.search(line)]
    assert offenders == []


def test_layout_and_round_trips(tmp_path):
    run = RunDir(tmp_path / "r")
    assert not run.exists() and run.read_config() is None and run.read_status() is None
    run.path.mkdir()
    run.write_config({"train": {"lr": 0.001}, "run": {"seed": 3}})
    assert is_run_dir(run.path) and run.config_section("train") == {"lr": 0.001}
    run.write_status({"state": "running", "step": 2})
    assert run.read_status()["state"] == "running" and not run.is_finished()
    run.write_eval("ner-en-probe", {"summary": {}})
    run.write_eval("fewshot", {"x": 1})
    assert run.eval_names("ner-") == ["ner-en-probe"] and run.read_eval("fewshot") == {"x": 1}
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_rows_are_truncated_to_the_restored_step(tmp_path):
    run = RunDir(tmp_path)
    append_jsonl(run.metrics_path, [{"step": s} for s in range(6)])
    run.append_dynamics([{"step": s, "group": "weights"} for s in (0, 2, 4)])
    with run.metrics_path.open("a") as handle:
        handle.write('{"step": 6, "lo')  # a killed writer's torn line
    run.truncate_rows(3)
    assert [r["step"] for r in run.read_metrics()] == [0, 1, 2, 3]
    assert [r["step"] for r in run.read_dynamics()] == [0, 2]
    assert run.missing_rows(range(6)) == [4, 5]
    run.truncate_rows(None)  # no checkpoint: the run restarts from step 0
    assert run.read_metrics() == [] and run.read_dynamics() == []


def test_step_ranges():
    assert step_ranges([7, 2, 3, 4, 9, 3]) == [[2, 4], [7, 7], [9, 9]] and step_ranges([]) == []
    assert show_ranges([[2, 4], [7, 7]]) == "2–4, 7"


def test_checkpoint_checksums_name_the_damage(tmp_path):
    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights" * 10)
    (ckpt / "state.pt").write_bytes(b"state")
    assert checkpoint_problem(ckpt) is None  # legacy: nothing to check against
    write_json_atomic(ckpt / CHECKSUMS, file_digests(ckpt))
    assert checkpoint_problem(ckpt) is None
    (ckpt / "state.pt").write_bytes(b"stats")
    assert checkpoint_problem(ckpt) == "state.pt does not match its checksum"
    (ckpt / "model.safetensors").write_bytes(b"weights")
    assert checkpoint_problem(ckpt) == "model.safetensors has 7 bytes, 70 were written"
    (ckpt / "model.safetensors").unlink()
    assert checkpoint_problem(ckpt) == "model.safetensors is missing"
    (ckpt / CHECKSUMS).write_text("{not json")
    assert checkpoint_problem(ckpt) == f"{CHECKSUMS} is unreadable"


def test_latest_checkpoint_skips_damaged_ones(tmp_path, caplog):
    run = RunDir(tmp_path)
    for step in (2, 4):
        d = run.checkpoint_dir(step)
        d.mkdir(parents=True)
        for name in ("config.json", "state.pt"):
            (d / name).write_text(f"{name} {step}")
        write_json_atomic(d / CHECKSUMS, file_digests(d))
    (run.checkpoint_dir(4) / "state.pt").write_text("")
    assert run.latest_checkpoint()[0] == 2 and "step-00000004 is damaged (state.pt has 0 bytes" in caplog.text
    assert run.latest_checkpoint(verify=False)[0] == 4


def test_run_dir_must_be_a_writable_directory(tmp_path):
    RunDir(tmp_path / "new" / "run").check_writable()  # created later
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is an existing file"):
        RunDir(tmp_path / "file").check_writable()
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        RunDir(tmp_path / "file" / "run").check_writable()


def test_checkpoints_need_weights_and_state(tmp_path):
    run = RunDir(tmp_path)
    for step, files in ((2, ("config.json", "state.pt")), (4, ("config.json",)), (6, ("state.pt",))):
        d = run.checkpoint_dir(step)
        d.mkdir(parents=True)
        for f in files:
            (d / f).write_text("x")
    (run.path / "checkpoints" / ".tmp-step-00000008.abc").mkdir()  # an unfinished write
    assert [s for s, _ in run.checkpoints()] == [2] and run.latest_checkpoint()[0] == 2
    assert [s for s, _ in run.saved_models()] == [2, 4]  # post-hoc analysis needs only the weights
    run.final_dir.mkdir()
    (run.final_dir / "config.json").write_text("x")
    run.write_status({"state": "finished", "step": 9})
    assert run.saved_models()[-1] == (9, run.final_dir) and run.is_finished()


def test_config_differences_ignore_execution_keys():
    saved = {"run": {"threads": 1, "seed": 0}, "train": {"lr": 0.001, "steps": 5}}
    current = {"run": {"threads": 4, "seed": 0}, "train": {"lr": 0.002, "steps": 5}, "meta": {"enabled": True}}
    assert config_differences(saved, current) == ["meta.enabled: None → True", "train.lr: 0.001 → 0.002"]
    assert config_differences({"run": {"dir": "runs/a"}}, {"run": {"dir": "moved/a"}}) == []  # a moved run resumes
    assert differing_keys({"a": saved, "b": saved}) == []
    assert flatten({"a": {"b": 1, "c": {}}}) == {"a.b": 1, "a.c": {}}


def test_atomic_writers_leave_old_or_new(tmp_path):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), publish_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError("killed")
    assert not (tmp_path / "d").exists() and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with publish_dir(tmp_path / "d") as tmp:
        (tmp / "x").write_text("whole")
    assert (tmp_path / "d" / "x").read_text() == "whole" and read_jsonl(tmp_path / "none.jsonl") == []


def test_a_run_dir_travels_as_an_object_and_names_its_path(tmp_path):
    run = RunDir(tmp_path / "run")
    assert RunDir.of(run) is run and RunDir.of(tmp_path / "run").path == run.path == RunDir.of(str(run.path)).path
    assert f"{run}" == str(tmp_path / "run") and repr(run) == f"RunDir({str(tmp_path / 'run')!r})"
    assert Path(run) == run.path  # os.PathLike
