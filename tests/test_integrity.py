"""Integrity (DESIGN 2.9): nothing is used unchecked — a damaged token-cache entry is rebuilt, a run
refuses other data and a second trainer, evaluations are reused only on unchanged inputs."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from helpers import data_cfg, make_corpus
from metalm.cli import main
from metalm.data import prepare_corpus


@pytest.fixture
def entry(tmp_path) -> tuple:
    """(data config, cache, first corpus) of a freshly tokenized small corpus."""
    cfg = data_cfg(make_corpus(tmp_path / "corpus") / "train", tmp_path / "corpus" / "validation")
    cache = str(tmp_path / "cache")
    return cfg, cache, prepare_corpus(cfg, cache)


def _reference(corpus) -> tuple:
    return np.array(corpus.train.tokens).copy(), np.array(corpus.train.doc_offsets).copy()


@pytest.mark.parametrize("damage", ["truncate tokens", "truncate documents", "flip a byte", "info.json garbled"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_never_read(entry, damage, caplog):
    cfg, cache, first = entry
    tokens, offsets = _reference(first)
    directory = Path(first.info["cache"])
    if damage == "truncate tokens":
        with open(directory / "train.bin", "r+b") as f:
            f.truncate(1000)
        expected = "train.bin holds 1,000 bytes"
    elif damage == "truncate documents":
        with open(directory / "train_docs.bin", "r+b") as f:
            f.truncate(8 * 5)
        expected = "train_docs.bin holds 40 bytes"
    elif damage == "flip a byte":
        data = bytearray((directory / "train.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (directory / "train.bin").write_bytes(bytes(data))
        expected = "train.bin: its content differs"
    else:
        (directory / "info.json").write_text("{not json")
        expected = "info.json is unreadable"
    del first
    with caplog.at_level(logging.WARNING, logger="metalm.data"):
        again = prepare_corpus(cfg, cache)
    assert any("is damaged" in r.message and expected in r.message for r in caplog.records), caplog.text
    np.testing.assert_array_equal(again.train.tokens, tokens)
    np.testing.assert_array_equal(again.train.doc_offsets, offsets)
    assert again.info["cache"] == str(directory)  # rebuilt in place, under the same key


def test_a_flipped_byte_outside_the_sampled_blocks_is_found_by_data_verify(tmp_path, monkeypatch, capsys, caplog):
    from metalm.data import token_store

    monkeypatch.setattr(token_store, "SAMPLE_BLOCKS", 2)  # only the first and last 64 bytes are sampled
    monkeypatch.setattr(token_store, "SAMPLE_BLOCK_BYTES", 64)
    corpus = make_corpus(tmp_path / "corpus")
    monkeypatch.setenv("METALM_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cfg.yaml").write_text("{}")
    argv = ["data", str(tmp_path / "cfg.yaml"), f"data.train={corpus / 'train'}",
            f"data.validation={corpus / 'validation'}", "data.vocab_size=300"]
    assert main(argv) == 0
    directory = Path(capsys.readouterr().out.split("cache: ")[1].split()[0])
    path = directory / "train.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="metalm.data"):
        assert main(argv) == 0  # the sampled check at open does not see it
        assert "damaged" not in caplog.text
        assert main([*argv, "--verify"]) == 0
    assert "train.bin: its content differs from when it was written (full digest)" in caplog.text
    assert "(every byte checked)" in capsys.readouterr().out
    assert path.read_bytes() != bytes(data)  # rewritten


def test_an_entry_of_format_2_is_rewritten_in_place(entry, caplog):
    cfg, cache, first = entry
    directory = Path(first.info["cache"])
    info = json.loads((directory / "info.json").read_text())
    info["format"] = 2
    del info["checks"]
    (directory / "info.json").write_text(json.dumps(info))
    again = prepare_corpus(cfg, cache)
    assert again.info["cache"] == str(directory) and again.info["format"] == 3 and "checks" in again.info


@contextlib.contextmanager
def held_by_another_process(directory: Path):
    """Another process holding `directory`'s lock (as a running trainer or experiment does); its PID."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import time; from metalm.dir_lock import hold_lock\n"
                               f"with hold_lock({str(directory)!r}, 'directory', ''):\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_trainer_in_a_run_directory_is_refused_naming_the_holder(tmp_path, capsys):
    from helpers import train_tiny

    corpus, run = make_corpus(tmp_path / "corpus"), tmp_path / "run"
    with held_by_another_process(run) as pid:
        capsys.readouterr()
        assert train_tiny(corpus, run) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"run directory {run} is in use by process {pid}" in err[0], err
        assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()
    assert train_tiny(corpus, run) == 0  # released with its holder; the run now trains
    assert train_tiny(corpus, run) == 0  # and its own lock was released at the end


def test_a_second_experiment_in_its_directory_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    corpus = make_corpus(tmp_path / "corpus")
    spec = {"run": {"dir": "exp", "progress": False}, "model": {"preset": "nano"},
            "data": {"train": str(corpus / "train"), "validation": str(corpus / "validation"), "vocab_size": 300},
            "train": {"steps": 2, "batch_size": 4, "seq_len": 32, "eval_every": 2, "eval_batches": 1},
            "arms": {"vanilla": {}}}
    Path("exp.yaml").write_text(yaml.safe_dump(spec))
    with held_by_another_process(tmp_path / "exp") as pid:
        capsys.readouterr()
        assert main(["experiment", "exp.yaml"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"experiment directory exp is in use by process {pid}" in err[0], err
        assert not Path("exp/vanilla").exists()


def test_resuming_on_changed_data_is_refused_naming_the_source(tmp_path, monkeypatch, capsys):
    from helpers import interrupt_at, train_tiny

    from metalm.training import faults

    corpus, run = make_corpus(tmp_path / "corpus"), tmp_path / "run"
    interrupt_at(monkeypatch, 6)
    assert train_tiny(corpus, run) == 130
    monkeypatch.setattr(faults, "before_step", None)
    source = corpus / "train" / "train-00.txt"
    source.write_text(source.read_text().replace("river", "ocean"))
    capsys.readouterr()
    assert train_tiny(corpus, run) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on other data" in err[0] and f"data.train {source} changed" in err[0], err
    source.write_text(source.read_text().replace("ocean", "river"))  # the original data: it resumes
    assert train_tiny(corpus, run) == 0


def test_a_checkpoint_on_other_data_is_refused(tmp_path, monkeypatch):
    """Each checkpoint records the data's key: a checkpoint of other data is not loaded (even where
    data.json lost its record)."""
    from helpers import interrupt_at, tiny_overrides, train_tiny
    from metalm.config import load_config
    from metalm.errors import ConfigError
    from metalm.trainer import Trainer
    from metalm.training.checkpointer import Checkpointer

    corpus, run = make_corpus(tmp_path / "corpus"), tmp_path / "run"
    interrupt_at(monkeypatch, 6)
    assert train_tiny(corpus, run) == 130
    data = json.loads((run / "data.json").read_text())
    assert data["key"] == Path(data["cache"]).name
    monkeypatch.setattr(Trainer, "_check_same_data", lambda self: None)
    original = Checkpointer.__init__
    monkeypatch.setattr(Checkpointer, "__init__",
                        lambda self, *a, **kw: original(self, *a, **{**kw, "data_key": "0" * 24}))
    cfg = load_config(corpus.parent / "cfg.yaml", tiny_overrides(corpus, run))
    with pytest.raises(ConfigError, match="checkpoint .*step-00000004 was trained on other data"):
        Trainer(cfg).run()


# -- a finished run: evaluations and dynamics on it ------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    from helpers import train_tiny

    root = tmp_path_factory.mktemp("finished")
    corpus = make_corpus(root / "corpus")
    assert train_tiny(corpus, root / "run") == 0
    write_held_out(root / "held-out.txt", "Evening letters.")
    return root / "run"


def write_held_out(path: Path, word: str) -> Path:
    path.write_text("\n\n".join(f"The doctor walked to the castle. {word} The river was quiet." for _ in range(30)))
    return path


FEWSHOT = ["--episodes", "2", "--n-way", "3", "--k-shot", "2", "--q-query", "2", "--window-len", "16",
           "--band-min-count", "4", "--band-skip-top", "5"]


def _read_only(argv: list[str], run: Path):
    """`python -m metalm ARGV` with `run` read-only: a read-only bind mount as root (chmod does not stop
    root), the directory's write bits removed otherwise."""
    import os
    import shutil
    import subprocess
    import sys

    command = [sys.executable, "-m", "metalm", *argv]
    if os.geteuid() != 0:
        for p in [run, *run.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=600)
        finally:
            for p in [run, *run.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a directory read-only")
    script = f'mount --bind "{run}" "{run}" && mount -o remount,bind,ro "{run}" && exec "$@"'
    proc = subprocess.run(["unshare", "-m", "bash", "-c", script, "bash", *command], capture_output=True, text=True,
                          timeout=600)
    if "mount:" in proc.stderr[:200] or "unshare:" in proc.stderr[:200]:
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr[:200]}")
    return proc


@pytest.mark.parametrize("argv, printed", [
    (["eval", "perplexity", "RUN", "--data", "HELD"], "ppl"),
    (["eval", "fewshot", "RUN", *FEWSHOT], "support"),
    (["eval", "ner", "RUN", "--data", "demo", "--train-lang", "en", "--epochs", "1", "--mode", "probe",
      "--max-train-sentences", "16"], "F1"),
    (["dynamics", "RUN"], "effective rank"),
], ids=["perplexity", "fewshot", "ner", "dynamics"])
def test_a_read_only_run_directory_prints_the_result_and_warns_once(finished, argv, printed):
    argv = [str(finished) if a == "RUN" else str(finished.parent / "held-out.txt") if a == "HELD" else a for a in argv]
    before = sorted(str(p) for p in finished.rglob("*"))
    proc = _read_only(argv, finished)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert printed in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "could not be saved" in line]
    assert len(warnings) == 1 and str(finished) in warnings[0], proc.stderr
    assert sorted(str(p) for p in finished.rglob("*")) == before


def test_fewshot_learned_head_on_a_run_without_one_says_so(finished, capsys, caplog):
    args = ["eval", "fewshot", str(finished), *FEWSHOT, "--head-init", "learned", "--variant", "token"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: the checkpoint holds no learned head; a freshly initialised head was evaluated" in out
    assert "holds no learned head" in caplog.text
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["learned_head"].startswith("none in the checkpoint")


def test_perplexity_on_empty_data_names_the_flag(finished, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n  \n")
    assert main(["eval", "perplexity", str(finished), "--data", str(tmp_path / "empty.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metalm: error: --data: no documents") and "data.eval" not in err


def test_an_experiment_evaluates_again_when_a_held_out_file_changes_content(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    corpus = make_corpus(tmp_path / "corpus")
    held = write_held_out(tmp_path / "held-out.txt", "Evening letters.")
    spec = {"run": {"dir": "exp", "progress": False}, "model": {"preset": "nano"},
            "data": {"train": str(corpus / "train"), "validation": str(corpus / "validation"), "vocab_size": 300},
            "train": {"steps": 2, "batch_size": 4, "seq_len": 32, "eval_every": 2, "eval_batches": 1,
                      "save_every": 2},
            "dynamics": {"every": 0}, "arms": {"vanilla": {}}, "evaluations": {"perplexity": [str(held)]}}
    Path("exp.yaml").write_text(yaml.safe_dump(spec))
    assert main(["experiment", "exp.yaml"]) == 0
    result = Path("exp/vanilla/seed-0/eval/perplexity.json")
    first = json.loads(result.read_text())
    result.write_text(json.dumps({**first, "marker": "kept"}))
    assert main(["experiment", "exp.yaml"]) == 0
    assert json.loads(result.read_text()).get("marker") == "kept"  # unchanged content: reused
    write_held_out(held, "Thunderstorm marmalade spectacles lighthouse embroidery parliament.")  # same path
    assert main(["experiment", "exp.yaml"]) == 0
    again = json.loads(result.read_text())
    assert "marker" not in again and again["sets"][0]["loss"] != first["sets"][0]["loss"]


def test_the_content_digest_covers_every_file_of_a_directory(tmp_path):
    from metalm.data.sources import content_digest

    (tmp_path / "ner" / "en").mkdir(parents=True)
    (tmp_path / "ner" / "en" / "train.iob2").write_text("1\tParis\tB-LOC\n")
    before = content_digest([str(tmp_path / "ner")])
    assert content_digest([str(tmp_path / "ner")]) == before
    (tmp_path / "ner" / "en" / "train.iob2").write_text("1\tParis\tO\n")
    assert content_digest([str(tmp_path / "ner")]) != before
    assert content_digest(["hf:universalner/universal_ner"]) == content_digest(["hf:universalner/universal_ner"])


def test_report_of_run_directories_names_each_arm_by_its_distinguishing_path(tmp_path, monkeypatch, capsys):
    from helpers import train_tiny

    monkeypatch.chdir(tmp_path)
    corpus = make_corpus(tmp_path / "corpus")
    for name in ("A", "B"):
        assert train_tiny(corpus, tmp_path / name / "seed-0", **{"train.steps": 2, "dynamics.every": 0}) == 0
    capsys.readouterr()
    assert main(["report", "A/seed-0", "B/seed-0"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"report: {tmp_path / 'report' / 'report.md'}")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert set(summary["arms"]) == {"A/seed-0", "B/seed-0"} and summary["arms"]["A/seed-0"]["role"] == "baseline"
    assert not (tmp_path / "A" / "report").exists()
    assert main(["report", "A/seed-0", "B/seed-0", "--out", "elsewhere", "--baseline", "B/seed-0"]) == 0
    assert json.loads(Path("elsewhere/summary.json").read_text())["arms"]["B/seed-0"]["role"] == "baseline"
    capsys.readouterr()
    for argv, message in ((["report", "A/seed-0", "A/seed-0/"], "the same run directory is given twice"),
                          (["report", "A/seed-0", "B/seed-0", "--out", "B/seed-0/report"], "lies inside the run"),
                          (["report", "A/seed-0", "B/seed-0", "--baseline", "seed-0"],
                           "--baseline seed-0: no such arm")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "B" / "seed-0" / "report").exists()


def test_arm_names_are_the_shortest_distinguishing_tails():
    from metalm.experiment.runner import arm_names

    assert arm_names([Path("/r/vanilla"), Path("/r/meta")]) == ["vanilla", "meta"]
    assert arm_names([Path("/x/A/seed-0"), Path("/x/B/seed-0"), Path("/x/C")]) == ["A/seed-0", "B/seed-0", "C"]
    assert arm_names([Path("/p/a/s"), Path("/q/a/s")]) == ["p/a/s", "q/a/s"]


@pytest.mark.parametrize("damage", ["flipped bytes", "weights missing"])
def test_dynamics_skips_a_damaged_checkpoint_with_a_warning(finished, tmp_path, damage, capsys, caplog):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    weights = run / "checkpoints" / "step-00000004" / "model.safetensors"
    if damage == "weights missing":
        weights.unlink()
    else:
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert main(["dynamics", str(run), "--groups", "weights"]) == 0
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "step-00000004 is damaged" in warnings[0] and "skipping it" in warnings[0], warnings
    steps = {json.loads(line)["step"] for line in (run / "dynamics-posthoc.jsonl").read_text().splitlines()}
    assert 4 not in steps and 8 in steps
