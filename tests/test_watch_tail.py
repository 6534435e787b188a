"""Incremental reading of run directories for `metalm watch`: tails, stores, run states, discovery."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from metalm.errors import MetalmError
from metalm.watch.discover import discover_runs
from metalm.dynamics.heatmap import heatmap_matrix
from metalm.watch.phases import component_phase_table, phase_table
from metalm.watch.run_state import Cursor, DynamicsSelection, RunState
from metalm.watch.store import MetricsStore
from metalm.watch.tail import FileSnapshot, JsonlTail, parse_json
from metalm.watch.watcher import Watcher, differences_table


def _line(row: dict) -> str:
    return json.dumps(row) + "\n"


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _metrics_row(step: int, **extra) -> dict:
    row = {"step": step, "loss": 5.0 - step * 0.01, "lr": 1e-3, "tokens": step * 100, "flops": step * 1e6,
           "time": step * 0.5, "step_kind": "ar"}
    row.update(extra)
    return row


# --- JsonlTail ---------------------------------------------------------------------------------


def test_appended_rows_show_up_and_only_new_ones_are_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line({"step": 1}) + _line({"step": 2}))
    tail = JsonlTail(path)
    rows, restarted = tail.poll()
    assert [r["step"] for r in rows] == [1, 2] and not restarted
    assert tail.poll() == ([], False)
    _append(path, _line({"step": 3}))
    rows, restarted = tail.poll()
    assert [r["step"] for r in rows] == [3] and not restarted
    assert tail.offset == path.stat().st_size


def test_partial_trailing_line_is_ignored_until_completed(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line({"step": 1}) + '{"step": 2, "lo')
    tail = JsonlTail(path)
    rows, _ = tail.poll()
    assert [r["step"] for r in rows] == [1]
    assert tail.poll() == ([], False)  # still incomplete
    _append(path, 'ss": 4.5}')
    assert tail.poll() == ([], False)  # complete JSON but no newline yet: the writer may not be done
    _append(path, "\n")
    rows, restarted = tail.poll()
    assert rows == [{"step": 2, "loss": 4.5}] and not restarted
    assert tail.bad_lines == 0


def test_missing_file_then_created(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.poll() == ([], False)
    path.write_text(_line({"step": 0}))
    rows, restarted = tail.poll()
    assert rows == [{"step": 0}] and not restarted


def test_truncated_file_is_read_again_from_the_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line({"step": s}) for s in range(5)))
    tail = JsonlTail(path)
    assert len(tail.poll()[0]) == 5
    with open(path, "w") as f:  # same inode, shorter
        f.write(_line({"step": 7}))
    rows, restarted = tail.poll()
    assert restarted and [r["step"] for r in rows] == [7]


def test_replaced_file_is_read_again_even_when_longer(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line({"step": 1}))
    tail = JsonlTail(path)
    tail.poll()
    replacement = tmp_path / "new.jsonl"
    replacement.write_text("".join(_line({"step": s, "run": "b"}) for s in range(10, 14)))
    os.replace(replacement, path)  # new inode
    rows, restarted = tail.poll()
    assert restarted and [r["step"] for r in rows] == [10, 11, 12, 13]


def test_in_place_rewrite_of_the_same_length_is_detected(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line({"step": 1, "loss": 1.0}))
    tail = JsonlTail(path)
    tail.poll()
    with open(path, "r+") as f:  # same inode, same bytes count up to the offset, different content
        f.write(_line({"step": 2, "loss": 9.0}) + _line({"step": 3, "loss": 8.0}))
    rows, restarted = tail.poll()
    assert restarted and [r["step"] for r in rows] == [2, 3]


def test_deleted_file_restarts_and_garbage_lines_are_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line({"step": 1}))
    tail = JsonlTail(path)
    tail.poll()
    path.unlink()
    assert tail.poll() == ([], True)
    path.write_text('{"step": 1, "lo{"step": 2}\n[1, 2]\n' + _line({"step": 3}))  # a crash-cut line
    rows, _ = tail.poll()
    assert [r["step"] for r in rows] == [3] and tail.bad_lines == 2


def test_file_snapshot_keeps_last_good_value_while_half_written(tmp_path):
    path = tmp_path / "status.json"
    snap = FileSnapshot(path, parse_json)
    assert snap.poll() is False and snap.value is None
    path.write_text(json.dumps({"state": "running", "step": 3}))
    assert snap.poll() is True and snap.value["step"] == 3
    assert snap.poll() is False
    path.write_text('{"state": "runn')
    assert snap.poll() is False and snap.value["step"] == 3
    path.write_text(json.dumps({"state": "finished", "step": 10}))
    assert snap.poll() is True and snap.value["state"] == "finished"
    path.unlink()
    assert snap.poll() is True and snap.value is None


# --- MetricsStore ------------------------------------------------------------------------------


def test_metrics_store_columns_meta_share_and_resume_rewind():
    store = MetricsStore()
    store.add([{"step": 0, "val_loss": 9.0, "tokens": 0, "flops": 0, "time": 0}])
    store.add([_metrics_row(s, step_kind="meta" if s % 2 == 0 else "ar") for s in range(1, 11)])
    assert store.n == 11
    share = np.array(store.columns["meta_share"])
    assert math.isnan(share[0]) and share[1] == 0.0 and share[2] == 0.5 and share[10] == 0.5
    val = np.array(store.columns["val_loss"])
    assert val[0] == 9.0 and np.isnan(val[1:]).all()
    generation = store.generation
    store.add([_metrics_row(6, loss=1.25)])  # resumed from a step-5 checkpoint: re-logs step 6
    assert store.n == 7 and store.generation == generation + 1
    assert list(store.columns["step"]) == [0, 1, 2, 3, 4, 5, 6] and store.last("loss") == 1.25
    store.add([{"loss": 1.0}, {"step": "x"}])  # rows without a numeric step are ignored
    assert store.n == 7


def test_recent_rate_gives_tokens_per_second_and_seconds_per_step():
    store = MetricsStore()
    store.add([_metrics_row(s) for s in range(1, 50)])
    rate = store.recent_rate()
    assert rate["tokens_per_s"] == pytest.approx(200.0) and rate["seconds_per_step"] == pytest.approx(0.5)


# --- RunState / Watcher ------------------------------------------------------------------------


def _answer(run: RunState, cursor: Cursor = Cursor(), now: float = 1e9, stale_after: float = 60.0):
    return run.update(cursor, DynamicsSelection(), now, stale_after, max_points=100, max_columns=50)


def test_run_states_waiting_running_stale_finished_gone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = RunState(run_dir, 0, "run")
    run.refresh()
    assert _answer(run)["state"] == "waiting"
    (run_dir / "config.yaml").write_text("model:\n  preset: nano\n")
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 0, "total_steps": 100, "updated": 1000.0}))
    run.refresh()
    assert _answer(run, now=1001.0)["state"] == "waiting"  # running, but no metrics row yet
    (run_dir / "metrics.jsonl").write_text("".join(_line(_metrics_row(s)) for s in range(1, 21)))
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "step": 20, "total_steps": 100, "updated": 1000.0}))
    os.utime(run_dir / "metrics.jsonl", (1000.0, 1000.0))
    run.refresh()
    answer = _answer(run, now=1010.0)
    assert answer["state"] == "running" and answer["step"] == 20 and answer["total_steps"] == 100
    assert answer["eta_s"] == pytest.approx(80 * 0.5) and answer["tokens_per_s"] == pytest.approx(200.0)
    assert _answer(run, now=5000.0)["state"] == "stale"  # says running, silent for over an hour
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "step": 100, "total_steps": 100, "updated": 1100.0}))
    run.refresh()
    assert _answer(run, now=5000.0)["state"] == "finished"
    shutil.rmtree(run_dir)
    run.refresh()
    answer = _answer(run)
    assert answer["state"] == "gone" and answer["metrics"]["n"] == 20  # what was read stays shown


def test_update_sends_only_new_rows_after_the_cursor_and_resets_on_truncation(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(_line(_metrics_row(s)) for s in range(1, 11)))
    run = RunState(tmp_path, 0, "r")
    run.refresh()
    first = _answer(run)
    assert first["metrics"]["reset"] and len(first["metrics"]["series"]["loss"]["y"]) == 10
    assert "info" in first and "dynamics" in first
    _append(tmp_path / "metrics.jsonl", _line(_metrics_row(11)) + _line(_metrics_row(12)))
    run.refresh()
    cursor = Cursor(first["metrics"]["generation"], first["metrics"]["n"], first["dynamics"]["key"], first["info"]["revision"])
    second = _answer(run, cursor)
    assert not second["metrics"]["reset"]
    assert second["metrics"]["series"]["loss"]["step"] == [11, 12]
    assert "info" not in second and "dynamics" not in second  # unchanged: not sent again
    (tmp_path / "metrics.jsonl").write_text(_line(_metrics_row(1)))
    run.refresh()
    cursor = Cursor(second["metrics"]["generation"], second["metrics"]["n"], cursor.dynamics, cursor.info)
    third = _answer(run, cursor)
    assert third["metrics"]["reset"] and third["metrics"]["series"]["loss"]["step"] == [1]


def test_watcher_expands_experiments_and_survives_deleted_runs(tmp_path):
    exp = tmp_path / "exp"
    for name in ("vanilla", "sweep/meta/lr1/seed-0", "a/b/c/d/too_deep"):
        (exp / name).mkdir(parents=True)
        (exp / name / "config.yaml").write_text(f"name: {name}\nmodel:\n  preset: nano\n")
    (exp / "vanilla" / "checkpoints" / "step-00000001").mkdir(parents=True)
    (exp / "vanilla" / "checkpoints" / "step-00000001" / "config.yaml").write_text("x: 1\n")
    assert [p.relative_to(exp).as_posix() for p in discover_runs(exp)] == ["sweep/meta/lr1/seed-0", "vanilla"]
    watcher = Watcher([exp], poll_interval=0.01)
    answer = watcher.update({}, DynamicsSelection())
    assert [r["name"] for r in answer["runs"]] == ["sweep/meta/lr1/seed-0", "vanilla"]
    assert {r["state"] for r in answer["runs"]} == {"waiting"}
    assert answer["config_differences"]["keys"] == ["name"]
    shutil.rmtree(exp / "vanilla")
    (exp / "late").mkdir()
    (exp / "late" / "metrics.jsonl").write_text(_line(_metrics_row(1)))
    watcher.refresh(force=True)
    answer = watcher.update({}, DynamicsSelection())
    states = {r["name"]: r["state"] for r in answer["runs"]}
    assert states["vanilla"] == "gone" and states["late"] in ("running", "stopped")
    with pytest.raises(MetalmError, match="not a directory"):
        Watcher([tmp_path / "missing"])


def test_empty_path_is_listed_as_waiting_until_runs_appear(tmp_path):
    watcher = Watcher([tmp_path], poll_interval=0.01)
    answer = watcher.update({}, DynamicsSelection())
    assert [(r["name"], r["state"]) for r in answer["runs"]] == [(tmp_path.name, "waiting")]
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "metrics.jsonl").write_text("")
    watcher.refresh(force=True)
    assert [r["name"] for r in watcher.update({}, DynamicsSelection())["runs"]] == ["run1"]


# --- dynamics, phases, configs -----------------------------------------------------------------


def test_heatmap_matrix_averages_components_filters_and_sorts():
    rows = [
        {"step": 20, "group": "weights", "layer": 1, "component": "q", "erank": 4.0, "per": 0.5},
        {"step": 20, "group": "weights", "layer": 1, "component": "k", "erank": 6.0, "per": 0.7},
        {"step": 10, "group": "weights", "layer": 0, "component": "q", "erank": 1.0, "per": 0.1},
        {"step": 10, "group": "weights", "layer": 0, "component": "q", "erank": 2.0, "per": 0.2},  # re-logged
        {"step": 10, "group": "activations", "layer": 0, "component": "output", "erank": 99.0},
        {"step": 10, "group": "attention", "layer": 0, "head": 0, "entropy": 1.0, "entropy_norm": 0.5},
        {"step": 10, "group": "attention", "layer": 0, "head": 1, "entropy": 3.0, "entropy_norm": 0.7},
        {"step": 10, "group": "weights", "layer": [0], "component": "q", "erank": 5.0},  # malformed: skipped
    ]
    layers, steps, matrix = heatmap_matrix(rows, "weights", "erank")
    assert layers == [0, 1] and steps == [10, 20]
    assert matrix[0, 0] == 2.0 and matrix[1, 1] == 5.0
    assert np.isnan(matrix[0, 1]) and np.isnan(matrix[1, 0])
    _, _, only_q = heatmap_matrix(rows, "weights", "erank", component="q")
    assert only_q[1, 1] == 4.0
    layers, steps, entropy = heatmap_matrix(rows, "attention", "entropy")
    assert layers == [0] and steps == [10] and entropy[0, 0] == 2.0
    _, _, head1 = heatmap_matrix(rows, "attention", "entropy_norm", component=1)
    assert head1[0, 0] == 0.7
    assert heatmap_matrix([], "weights", "erank")[2].shape == (0, 0)


def test_dynamics_view_in_update(tmp_path):
    rows = [{"step": s, "group": "activations", "layer": layer, "component": "output", "erank": s + layer, "per": 0.5,
             "shape": [8, 8]} for s in range(0, 100, 10) for layer in range(3)]
    rows += [{"step": s, "group": "attention", "layer": 0, "head": h, "entropy": 1.0, "entropy_norm": 0.5}
             for s in range(0, 100, 10) for h in range(2)]
    (tmp_path / "dynamics.jsonl").write_text("".join(_line(r) for r in rows))
    run = RunState(tmp_path, 0, "r")
    run.refresh()
    view = run.update(Cursor(), DynamicsSelection(), 0.0, 60.0, max_points=100, max_columns=4)["dynamics"]
    assert view["rank"]["layers"] == ["0", "1", "2"] and view["rank"]["steps"][0] == 0 and view["rank"]["steps"][-1] == 90
    assert len(view["rank"]["steps"]) <= 4 and view["rank"]["z"][2][0] == 2.0
    assert view["entropy"]["layers"] == ["0"] and view["components"] == ["output"]


def test_phase_table_lays_out_the_saved_readout():
    from metalm.dynamics.phases import phase_readout

    # layer 0 collapses (5 → 3), diversifies to 7 at step 20, compresses; the final norm only rises
    rows = [{"step": s, "group": "activations", "layer": layer, "component": "output", "erank": v}
            for s, vals in ((0, (5.0, 5.0)), (10, (3.0, 6.0)), (20, (7.0, 8.0)), (30, (6.0, 9.0)))
            for layer, v in enumerate(vals)]
    rows += [{"step": s, "group": "attention", "layer": 0, "head": 0, "entropy": v}
             for s, v in ((0, 2.0), (10, 1.0), (20, 1.5), (30, 1.8))]
    table = phase_table(phase_readout(rows, smoothing=5))  # four points: no smoothing
    assert table["columns"] == ["layer", "effective rank: phases", "effective rank: trough at step",
                                "effective rank: peak at step", "head entropy: phases", "head entropy: trough at step",
                                "head entropy: peak at step"]
    assert [r[0] for r in table["rows"]] == ["layer 0", "final norm"]  # one decoder layer: index 1 is its output norm
    assert table["rows"][0][1:4] == ["collapse → diversify → compress", 10, 20]
    assert table["rows"][1][1:4] == ["still diversifying", None, 30]
    assert table["rows"][0][4:] == ["collapse → still diversifying", 10, 30]
    assert table["rows"][1][4:] == [None, None, None]  # the final norm has no attention
    assert phase_table({"note": "no layers here"}) is None and phase_table([1, 2]) is None
    assert phase_table(phase_readout([], smoothing=1)) is None
    assert component_phase_table(phase_readout(rows, smoothing=5)) is None  # no weight or gradient rows
    # weight and gradient PER, averaged over layers: one row per component
    rows = [{"step": s, "group": group, "layer": layer, "component": c, "per": v + layer * 0.01}
            for s, v in ((0, 0.9), (10, 0.8), (20, 0.7), (30, 0.6)) for layer in (0, 1)
            for group, c in (("weights", "q"), ("weights", "down"), ("gradients", "q"))]
    table = component_phase_table(phase_readout(rows, smoothing=5))
    assert table["columns"][:2] == ["component", "weight PER: phases"] and len(table["columns"]) == 7
    assert table["rows"] == [["attention q", "still collapsing", 30, None, "still collapsing", 30, None],
                             ["MLP down", "still collapsing", 30, None, None, None, None]]


def test_differences_table_lists_only_differing_keys():
    configs = {"a": {"model": {"preset": "nano"}, "meta": {"enabled": False}, "seed": 1},
               "b": {"model": {"preset": "nano"}, "meta": {"enabled": True}}, "c": None}
    assert differences_table(configs) == {"keys": ["meta.enabled", "seed"],
                                           "values": {"a": [False, 1], "b": [True, None]}}
    assert differences_table({"a": {"x": 1}}) == {"keys": [], "values": {}}
