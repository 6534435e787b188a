"""Test helpers (imported as `from helpers import …`; `pythonpath = ["tests"]` in pyproject.toml): small
real-looking corpora, a tiny config, fault injection through `metalm.training.faults`, run comparisons.
Fixtures live in conftest.py."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from metalm.run_dir import RunDir, append_jsonl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


WORDS = ("the a of and to in that was he she it with as his her for had on at by not but from they "
         "river castle morning letter garden village doctor window evening journey mother father "
         "silver quiet ancient narrow sudden gentle bright heavy walked spoke smiled waited wrote "
         "answered looked opened closed remembered carried").split()


# Rarer long words that a 300-token vocabulary splits into several sub-word tokens.
LONG = "marmalade lighthouse thunderstorm embroidery spectacles parliament".split()


def make_docs(seed: int, n_docs: int = 50, long_share: float = 0.12) -> list[str]:
    """Documents of short sentences over WORDS, with `long_share` of the words from LONG."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(6, 14)):
            words = [rng.choice(LONG) if rng.random() < long_share else rng.choice(WORDS)
                     for _ in range(rng.randint(6, 16))]
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ",", "!"]))
        docs.append("\n".join(sentences))
    return docs


def tokenized(docs: list[str], vocab_size: int = 300):
    """(tokenizer, token array, document offsets) in the token-store layout: EOS after each document."""
    from metalm.tokenizer import train_tokenizer

    tok = train_tokenizer(docs, vocab_size)
    ids, offsets = [], [0]
    for d in docs:
        ids += tok(d)["input_ids"] + [tok.eos_token_id]
        offsets.append(len(ids))
    return tok, np.asarray(ids, dtype=np.uint16), np.asarray(offsets, dtype=np.int64)


def decoded(tok, tokens):
    """Text of the token stream (special tokens, the mask among them, as NUL) and each token's first
    character offset."""
    tokens = np.asarray(tokens)
    special = set(tok.all_special_ids)
    pieces = {i: ("\0" if i in special else tok.decode([i])) for i in np.unique(tokens).tolist()}
    texts = [pieces[t] for t in tokens.tolist()]
    return "".join(texts), np.concatenate([[0], np.cumsum([len(t) for t in texts])])


def write_corpus(path: Path, n_docs: int = 40, words_per_doc: int = 300, seed: int = 0) -> Path:
    """A small deterministic corpus in the shared format: blank-line-separated documents."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = []
        remaining = words_per_doc
        while remaining > 0:
            n = min(remaining, rng.randint(8, 20))
            sentence = " ".join(rng.choice(WORDS) for _ in range(n))
            lines.append(sentence.capitalize() + ".")
            remaining -= n
        docs.append("\n".join(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def make_corpus(root: Path, val_docs: int = 4) -> Path:
    """`root/train/` (40 documents) and `root/validation/` (`val_docs` documents), as tests train on."""
    write_corpus(root / "train" / "train-00.txt", n_docs=40, seed=1)
    write_corpus(root / "validation" / "validation-00.txt", n_docs=val_docs, seed=2)
    return root


def data_cfg(train, validation=None, **kw):
    """A DataConfig for `train` (and `validation`) with the tests' 300-token vocabulary."""
    from metalm.config import DataConfig

    return DataConfig(train=str(train), validation=None if validation is None else str(validation), vocab_size=300, **kw)


def tiny_overrides(corpus: Path, run_dir: Path, **extra) -> list[str]:
    """Overrides for a seconds-long run of the nano preset on `corpus`."""
    items = {
        "run.dir": str(run_dir), "run.progress": False, "run.seed": 0,
        "data.train": str(corpus / "train"), "data.validation": str(corpus / "validation"),
        "data.vocab_size": 300, "model.preset": "nano",
        "train.steps": 8, "train.batch_size": 4, "train.seq_len": 32, "train.lr": 0.003,
        "train.warmup_steps": 2, "train.eval_every": 4, "train.eval_batches": 2,
        "train.save_every": 4, "train.log_every": 1,
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def train_tiny(corpus: Path, run: Path, **extra) -> int:
    """`metalm train` in process on `corpus` with `tiny_overrides` (an empty cfg.yaml beside the
    corpus); the exit code."""
    from metalm.cli import main

    cfg = corpus.parent / "cfg.yaml"
    cfg.write_text("{}")
    return main(["train", str(cfg), *tiny_overrides(corpus, run, **extra)])


def train_one_and_two_processes(tmp_path: Path, corpus: Path, **common) -> tuple[Path, Path]:
    """The same tiny run as 1 process and as 2 gloo processes under torchrun: (one, two) run dirs."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "metalm", "train", str(cfg), *tiny_overrides(corpus, one, **common)],
                   check=True, capture_output=True, timeout=600)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "metalm", "train", str(cfg), *tiny_overrides(corpus, two, **common)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)  # a hung process group fails the test instead of stalling the suite
    assert proc.returncode == 0, proc.stderr[-3000:]
    return one, two



def interrupt_at(monkeypatch, at: int) -> None:
    """Training raises KeyboardInterrupt (as Ctrl-C would) at 0-based step `at` (`metalm.training.faults`)."""
    from metalm.training import faults

    def dying(step):
        if step == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(faults, "before_step", dying)


def poison_step(monkeypatch, at: int) -> None:
    """A NaN in one gradient of 0-based step `at` (a non-finite loss, as far as the optimizer knows)."""
    from metalm.training import faults

    def poisoned(step, model):
        if step == at:
            next(model.parameters()).grad[0, 0] = float("nan")

    monkeypatch.setattr(faults, "after_gradients", poisoned)


def interrupt_and_resume(monkeypatch, run, at_step: int) -> None:
    """`run()` interrupted when training reaches optimizer step `at_step`, then `run()` again, which
    resumes from the last checkpoint to the end."""
    from metalm.training import faults

    interrupt_at(monkeypatch, at_step)
    assert run() == 130
    monkeypatch.setattr(faults, "before_step", None)
    assert run() == 0


TIME_KEYS = {"time", "tokens_per_s", "mfu"}  # wall-clock columns


def deterministic(rows: list[dict]) -> list[dict]:
    """Metrics rows without their wall-clock columns."""
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    """Runs `a` and `b` ended identically: the same metrics rows (wall-clock columns aside) and
    bit-identical final weights under the same names."""
    from safetensors.torch import load_file

    from metalm.run_dir import read_jsonl

    assert deterministic(read_jsonl(a / "metrics.jsonl")) == deterministic(read_jsonl(b / "metrics.jsonl"))
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_processes_match(one: Path, two: Path, keys: tuple[str, ...]) -> None:
    """The runs of `train_one_and_two_processes` agree: step kinds, the given row values (to float
    tolerance), accounted tokens and FLOPs exactly, and the final weights."""
    import pytest
    import torch
    from safetensors.torch import load_file

    from metalm.run_dir import read_jsonl

    r1, r2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r.get("step_kind") for r in r1] == [r.get("step_kind") for r in r2]
    for a, b in zip(r1, r2):
        for key in keys:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
        assert a["tokens"] == b["tokens"] and a["flops"] == b["flops"]
    w1, w2 = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def assert_result_round_trip(kind, path: Path):
    """The evaluation result stored at `path`, read back through its type (`metalm.eval_results`),
    writes the same file byte for byte; returns the typed result."""
    text = path.read_text(encoding="utf-8")
    result = kind.from_json(json.loads(text))
    assert json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n" == text
    return result


# -- synthetic run directories (report and comparison tests) ---------------------------------------

def curve(losses, flops_per_eval=100.0):
    """A validation curve evaluated every 10 steps; 10 tokens, `flops_per_eval / 10` FLOPs and 1 s per step."""
    steps = [10 * i for i in range(len(losses))]
    return {"step": steps, "tokens": [10.0 * s for s in steps], "flops": [flops_per_eval / 10 * s for s in steps],
            "time": [float(s) for s in steps], "val_loss": [float(v) for v in losses]}


def make_run(root, arm, seed, losses, flops_per_eval=100.0, meta=None, phases=None, rows=(), train=None):
    """A run directory (report tests) with a validation curve (`curve`) and any further metrics `rows`."""
    run = RunDir(root / arm / f"seed-{seed}")
    run.path.mkdir(parents=True)
    run.write_config({"run": {"name": arm, "dir": str(run.path), "seed": seed}, "model": {"preset": "nano"},
                      "meta": meta or {"enabled": False}, **({"train": train} if train else {})})
    c = curve(losses, flops_per_eval)
    append_jsonl(run.metrics_path, sorted([{k: c[k][i] for k in c} for i in range(len(losses))] + list(rows),
                                          key=lambda r: r["step"]))
    if phases is not None:
        run.write_phases(phases)
    return run


# -- NER: synthetic IOB2 splits -------------------------------------------------------------------

PER = [["Anna", "Berg"], ["John", "Smith"], ["Maria"], ["Olof", "Palme"], ["Li", "Wei"]]
LOC = [["Paris"], ["New", "York"], ["Oslo"], ["Rio", "de", "Janeiro"]]
ORG = [["Acme", "Corp"], ["United", "Nations"], ["Volvo"]]
TEMPLATES = [
    ["{PER}", "went", "to", "{LOC}", "."],
    ["{PER}", "works", "for", "{ORG}", "in", "{LOC}", "."],
    ["the", "weather", "was", "nice", "today", "."],
    ["{ORG}", "hired", "{PER}", ",", "said", "{PER}", "."],
]


def sentence(rng):
    """A templated sentence with PER/LOC/ORG entities: (tokens, IOB2 tags)."""
    tokens, tags = [], []
    for slot in rng.choice(TEMPLATES):
        if slot.startswith("{"):
            kind = slot[1:-1]
            words = rng.choice({"PER": PER, "LOC": LOC, "ORG": ORG}[kind])
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            tokens.append(slot)
            tags.append("O")
    return tokens, tags


def write_split(path: Path, n: int, seed: int, cjk: bool = False):
    """`n` seeded sentences as a CoNLL-U-like IOB2 file (`cjk`: some words in Chinese script)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        tokens, tags = sentence(rng)
        if cjk:
            tokens = ["北京" if t == "Paris" else "是" if t == "to" else t for t in tokens]
        lines += [f"# sent_id = s{i}", f"# text = {' '.join(tokens)}"]
        lines += [f"{j + 1}\t{t}\t{g}\t-\t-" for j, (t, g) in enumerate(zip(tokens, tags))]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- meta-gradient tests --------------------------------------------------------------------------

def new_model(tok, dtype=torch.float32):
    """A nano model in `dtype` with non-trivial norm weights (seeded)."""
    from metalm.model import build_model

    torch.manual_seed(0)
    # sdpa keeps float64 end to end (eager attention takes its softmax in float32)
    model = build_model("nano", vocab_size=len(tok), attn_implementation="sdpa").to(dtype)
    with torch.no_grad():  # non-trivial norm weights, so their gradients are tested too
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def grads(model, extra=()):
    out = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
           for n, p in model.named_parameters()}
    for n, p in extra:
        out[n] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return out


def assert_grads_close(a, b, rtol=1e-4, atol=1e-6):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


# -- the ELTeC English validation novels (real prose) ---------------------------------------------

ELTEC = SHARED_DATA / "corpora" / "eltec-eng" / "validation"


def word_pattern(word: str, casefold: bool) -> re.Pattern:
    """Whole-word matches of `word` (neighbours are not letters or digits)."""
    return re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", re.IGNORECASE if casefold else 0)
