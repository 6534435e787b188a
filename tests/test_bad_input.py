"""Bad input, one table: every row is a command line (and the files it needs) that must be refused
with ONE line `metalm: error: …` on stderr and exit status 2 - no traceback, nothing written.

Rows run in-process (`metalm.cli.main`) in an empty working directory with the metalm cache
elsewhere; the directory listing after the command must equal the one before it. Commands that
name a run directory get an empty one: each of them must refuse its input before reading the
run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import make_corpus, write_corpus
from metalm.cli import main

TINY = {"model": {"preset": "nano"}, "data": {"train": "corpus/train", "validation": "corpus/validation",
                                                "vocab_size": 300},
        "train": {"steps": 2, "batch_size": 4, "seq_len": 32, "eval_every": 2, "eval_batches": 1, "save_every": 2},
        "run": {"dir": "runs/r", "progress": False}}


def _yaml(path: str, tree: dict) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(tree, sort_keys=False))


def config(cwd: Path, monkeypatch) -> None:
    make_corpus(cwd / "corpus")
    _yaml("cfg.yaml", TINY)


def run_dir(cwd: Path, monkeypatch) -> None:
    (cwd / "run").mkdir()
    (cwd / "held-out.txt").write_text("Some held-out text.\n")


def empty_corpus(cwd: Path, monkeypatch) -> None:
    config(cwd, monkeypatch)
    (cwd / "empty.txt").write_text("\n   \n")


def bad_iob2(cwd: Path, monkeypatch) -> None:
    run_dir(cwd, monkeypatch)
    (cwd / "ner" / "en").mkdir(parents=True)
    (cwd / "ner" / "en" / "train.iob2").write_text("1\tParis\tB-LOC\n2\tis\n")
    (cwd / "ner" / "en" / "test.iob2").write_text("1\tParis\tB-LOC\n")


def experiment(**changes):
    """An experiment file over the tiny config, with `changes` merged into it."""

    def setup(cwd: Path, monkeypatch) -> None:
        make_corpus(cwd / "corpus")
        tree = {**TINY, "run": {"dir": "exp", "progress": False}, "arms": {"vanilla": {}}, **changes}
        _yaml("exp.yaml", tree)

    return setup


def tokenizer_data(cwd: Path, monkeypatch) -> None:
    write_corpus(cwd / "text.txt", n_docs=5)
    (cwd / "taken").write_text("a file, not a directory\n")


def hub_offline(cwd: Path, monkeypatch) -> None:
    """As on a machine without network (this one may have one): offline mode, restored afterwards."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def token_ids(cwd: Path, monkeypatch) -> None:
    """A parquet file of token ids (one id beyond a 300-token vocabulary), one without the column,
    and the tokenizer they were made with."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metalm.tokenizer import train_tokenizer

    config(cwd, monkeypatch)
    train_tokenizer([(cwd / "corpus" / "train" / "train-00.txt").read_text()], 300).save_pretrained(cwd / "tok")
    pq.write_table(pa.table({"input_ids": [[5, 6, 7], [8, 400]]}), cwd / "ids.parquet")
    pq.write_table(pa.table({"tokens": [[5, 6, 7]]}), cwd / "other.parquet")
    pq.write_table(pa.table({"input_ids": [[5, 6, 7] * 50, [8, 9] * 50] * 200}), cwd / "damaged.parquet",
                   row_group_size=100)
    data = bytearray((cwd / "damaged.parquet").read_bytes())
    for at in range(len(data) // 3, len(data) // 3 + 40):  # a page in the middle
        data[at] ^= 0x5A
    (cwd / "damaged.parquet").write_bytes(bytes(data))
    (cwd / "huge.jsonl").write_text('{"input_ids": [5, 6, 7]}\n{"input_ids": [8, 100000000000000000000000]}\n')


def duplicate_keys(text: str, name: str = "dup.yaml"):
    """A YAML file with a key given twice (PyYAML alone keeps the last silently)."""

    def setup(cwd: Path, monkeypatch) -> None:
        make_corpus(cwd / "corpus")
        Path(name).write_text(text)

    return setup


def two_processes(cwd: Path, monkeypatch) -> None:
    config(cwd, monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: the launch's process count is known at load


DENSE = ["meta.enabled=true", "meta.smlmt_variant=token", "meta.layout=dense"]
NER_DEMO = {"data": "demo", "train_lang": "en", "epochs": 1}

ROWS = [
    # id, argv, setup, a part of the expected message
    ("missing config file", ["train", "nope.yaml"], None, "config file not found: nope.yaml"),
    ("unknown key", ["train", "cfg.yaml", "train.stpes=3"], config, "unknown config key 'train.stpes'"),
    ("bad value", ["train", "cfg.yaml", "train.lr=-1"], config, "train.lr"),
    ("lr 3e-4 is a number", ["config", "cfg.yaml", "train.lr=3e-4", "train.steps=0"], config, "train.steps"),
    ("dense episodes do not divide the rows", ["train", "cfg.yaml", *DENSE, "meta.episodes_per_step=3"], config,
     "meta.episodes_per_step: 3 does not divide the 4 rows of a meta step"),
    ("dense episodes do not divide a micro-batch", ["train", "cfg.yaml", *DENSE, "meta.schedule=microbatch",
                                                    "train.grad_accum=2", "meta.episodes_per_step=4"], config,
     "meta.episodes_per_step: 4 does not divide the 2 rows of a meta micro-batch"),
    ("inner layers beyond the preset's", ["train", "cfg.yaml", "meta.enabled=true", "meta.inner_n_layers=3",
                                          "meta.inner_params=head+last_n_layers"], config,
     "meta.inner_n_layers: 3 exceeds the model's 2 layers"),
    ("fewer episodes than processes", ["train", "cfg.yaml", "meta.enabled=true"], two_processes,
     "meta.episodes_per_step: 1 is fewer than the 2 processes"),
    ("micro-batch not divisible by the processes", ["train", "cfg.yaml", "train.batch_size=3"], two_processes,
     "3 sequences per micro-batch is not divisible by the 2 processes"),
    ("empty corpus", ["train", "cfg.yaml", "data.train=empty.txt"], empty_corpus, "no documents"),
    ("missing data path", ["train", "cfg.yaml", "data.train=nowhere"], config, "data file not found: nowhere"),
    ("hf: without a name", ["train", "cfg.yaml", "data.train=hf:"], config, "hf:NAME[:CONFIG][@SPLIT]"),
    ("hf: offline", ["tokenizer", "train", "--data", "hf:metalm-tests/absent", "--out", "tok"], hub_offline,
     "cannot be reached"),
    ("token ids without a tokenizer", ["train", "cfg.yaml", "data.train=ids.parquet"], token_ids,
     "data.tokenizer: ids.parquet holds token ids; name the tokenizer"),
    ("token id outside the vocabulary", ["train", "cfg.yaml", "data.train=ids.parquet", "data.tokenizer=tok"],
     token_ids, "ids.parquet: token id 400 at record 1 is outside the tokenizer's vocabulary"),
    ("damaged parquet page", ["train", "cfg.yaml", "data.train=damaged.parquet", "data.tokenizer=tok"], token_ids,
     "damaged.parquet: cannot be read, the file is damaged"),
    ("token id of 10**23", ["train", "cfg.yaml", "data.train=huge.jsonl", "data.tokenizer=tok"], token_ids,
     "huge.jsonl:2: token id 100000000000000000000000 is outside the tokenizer's vocabulary"),
    ("no token or text column", ["train", "cfg.yaml", "data.train=other.parquet", "data.tokenizer=tok"], token_ids,
     "other.parquet: no column 'text' (text) or 'input_ids' (token ids)"),
    ("usage error", ["eval", "perplexity", "run"], run_dir, "eval perplexity: the following arguments are required"),
    ("not an int", ["bench", "cfg.yaml", "--repeats", "x"], config, "invalid int value"),
    ("perplexity batch-size 0", ["eval", "perplexity", "run", "--data", "held-out.txt", "--batch-size", "0"], run_dir,
     "--batch-size"),
    ("perplexity max-tokens 0", ["eval", "perplexity", "run", "--data", "held-out.txt", "--max-tokens", "0"], run_dir,
     "--max-tokens"),
    ("fewshot n-way 1", ["eval", "fewshot", "run", "--n-way", "1"], run_dir, "--n-way"),
    ("fewshot incompatible settings", ["eval", "fewshot", "run", "--variant", "sentence", "--head-init", "learned"],
     run_dir, "head_init='learned'"),
    ("ner malformed IOB2", ["eval", "ner", "run", "--data", "ner", "--train-lang", "en"], bad_iob2, "train.iob2"),
    ("watch port 99999", ["watch", "run", "--port", "99999"], run_dir, "port must be 0"),
    ("tokenizer sample-bytes 0", ["tokenizer", "train", "--data", "text.txt", "--sample-bytes", "0", "--out", "tok"],
     tokenizer_data, "--sample-bytes"),
    ("tokenizer vocab-size too small", ["tokenizer", "train", "--data", "text.txt", "--vocab-size", "100",
                                        "--out", "tok"], tokenizer_data, "--vocab-size"),
    ("tokenizer out is a file", ["tokenizer", "train", "--data", "text.txt", "--out", "taken"], tokenizer_data,
     "a file of that name exists"),
    ("bench repeats 0", ["bench", "cfg.yaml", "--repeats", "0"], config, "--repeats"),
    ("experiment misspelt evaluation key", ["experiment", "exp.yaml"],
     experiment(evaluations={"fewshot": {"bogus": 1}}), "evaluations.fewshot.bogus"),
    ("experiment arm with bad data", ["experiment", "exp.yaml"],
     experiment(arms={"vanilla": {}, "bad": {"data": {"train": "nowhere"}}}), "arm 'bad': data file not found"),
    ("experiment perplexity set missing", ["experiment", "exp.yaml"],
     experiment(evaluations={"perplexity": ["nowhere.txt"]}), "evaluations.perplexity.data"),
    ("experiment fewshot n_way too large", ["experiment", "exp.yaml"],
     experiment(evaluations={"fewshot": {"n_way": 500}}), "evaluations.fewshot.n_way: 500 exceeds"),
    ("experiment ner directory missing", ["experiment", "exp.yaml"],
     experiment(evaluations={"ner": {**NER_DEMO, "data": "no-ner"}}), "NER data directory not found"),
    ("config key twice", ["train", "dup.yaml"], duplicate_keys("train:\n  steps: 2\nmodel: {preset: nano}\n"
                                                               "train:\n  steps: 3\n"),
     "dup.yaml: line 4 is not valid YAML: key 'train' is given twice (lines 1 and 4)"),
    ("experiment arm twice", ["experiment", "dup.yaml"],
     duplicate_keys("arms:\n  vanilla: {}\n  meta: {}\n  vanilla: {train: {lr: 1.0}}\n"),
     "key 'vanilla' is given twice (lines 2 and 4)"),
    ("experiment seeds twice", ["experiment", "dup.yaml"],
     duplicate_keys("arms: {vanilla: {}}\nseeds: [0]\nseeds: [0, 1]\n"), "key 'seeds' is given twice (lines 2 and 3)"),
    *[(f"experiment arm named {name!r}", ["experiment", "exp.yaml"], experiment(arms={"vanilla": {}, name: {}}),
       f"arms: {name!r} cannot name an arm's directory")
      for name in ("..", "../escape", ".", "", "a/b", ".hidden", "report.md", "summary.json", "plots")],
    ("experiment ner language missing", ["experiment", "exp.yaml"],
     experiment(evaluations={"ner": {**NER_DEMO, "test_langs": ["zz"]}}), "no folder for language 'zz'"),
]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("argv, setup, expected", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_bad_input_is_one_line_status_2_and_leaves_nothing(argv, setup, expected, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("METALM_CACHE", str(tmp_path / "cache"))
    if setup is not None:
        setup(cwd, monkeypatch)
    before = _listing(cwd)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("metalm: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert _listing(cwd) == before
    assert not list((tmp_path / "cache").rglob("*.partial"))  # nothing left to resume from bad input


def test_refused_dense_config_tokenizes_nothing(tmp_path, monkeypatch):
    """The done-when of complete validation at load, through the command line: a dense-layout config
    whose episodes do not divide the rows exits 2 with one line, before any tokenization or write."""
    import os
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    config(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "metalm", "train", "cfg.yaml", *DENSE, "meta.episodes_per_step=3"],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "METALM_CACHE": str(cache)},
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "meta.episodes_per_step: 3 does not divide" in proc.stderr
    assert not (tmp_path / "runs").exists() and not (cache / "tokens").exists()
