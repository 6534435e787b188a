"""NER: the Hugging Face token-classification recipe against `metalm eval ner`, on one trained model,
before and after the tokenizer export fix (issue 21); and lm-eval's perplexity against metalm's.

1. A model is trained with `metalm train` on ELTeC English (micro preset, 200 steps, 4M tokens of
   text; or `--run` names an existing run).
2. For each seed, on the shared UNER English data (no train file: both train on dev, test on test):
   - `metalm eval ner` (finetune, the given lr and epochs, batch 16);
   - the HF recipe: `AutoTokenizer.from_pretrained(final, add_prefix_space=True)`, words tokenized
     with `is_split_into_words=True`, the first sub-word of each word labelled, `AutoModelForTokenClassification`
     + `DataCollatorForTokenClassification` + `Trainer` (same lr, epochs, batch 16, linear decay, no
     weight decay, no warm-up), predictions read at each word's first sub-word, seqeval F1;
   - the HF recipe "before": the tokenizer loaded as exported before the fix (the generic class, which
     ignores `add_prefix_space`, so words are tokenized without their leading space);
   - the HF recipe "after, EOS first": each sentence preceded by the end-of-document token, the
     context `metalm eval ner` gives it (what remains of the gap).
3. Per-token loss of `metalm eval perplexity` and of lm-eval's `metalm_text` task (BOS = EOS, the
   fix) and of lm-eval with BOS `<|bos|>` (before the fix) on a held-out ELTeC text.

    python benchmarks/ner_vs_hf.py [--run RUN] [--seeds 3] [--epochs 2] [--lr 1e-3] [--max-train-sentences N]

writes benchmarks/results/ner_vs_hf.json; RESULTS.md copies its table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ELTEC, ROOT, SHARED_DATA, machine, save_result

UNER = SHARED_DATA / "uner"
TRAIN = ["model.preset=micro", "data.vocab_size=8192", "data.max_tokens=4000000", "data.tokenizer_sample_bytes=4000000",
         "train.steps=200", "train.batch_size=16", "train.seq_len=128", "train.lr=0.003", "train.warmup_steps=20",
         "train.eval_every=50", "train.save_every=200", "dynamics.every=0", "run.progress=false"]


def metalm(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "metalm", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"metalm {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def train_model(run: Path) -> None:
    cfg = run.parent / "ner_vs_hf.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("{}\n")
    metalm("train", str(cfg), f"run.dir={run}", f"data.train={ELTEC / 'train'}",
           f"data.validation={ELTEC / 'validation'}", *TRAIN)


def hf_recipe(final: Path, seed: int, lr: float, epochs: int, max_sentences: int | None, before: bool,
              eos_first: bool = False) -> float:
    """Entity-level F1 (conlleval matching, × 100) of the standard HF token-classification recipe;
    `eos_first`: each sentence starts after the end-of-document token, as documents do in training
    and sentences do in `metalm eval ner` (the tokenizer adds no BOS of its own)."""
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              PreTrainedTokenizerFast, Trainer, TrainingArguments)

    sys.path.insert(0, str(ROOT / "src"))
    from metalm.evaluation.iob2 import load_language
    from metalm.evaluation.ner_scoring import score_ner

    train = load_language(UNER, "en", "dev")[:max_sentences]
    test = load_language(UNER, "en", "test")
    labels = sorted({t for s in train + test for t in s.tags}, key=lambda t: (t != "O", t[2:], t))
    label_id = {t: i for i, t in enumerate(labels)}
    cls = PreTrainedTokenizerFast if before else AutoTokenizer  # before: the generic class ignored the flag
    tok = cls.from_pretrained(str(final), add_prefix_space=True)
    context = json.loads((final / "config.json").read_text())["max_position_embeddings"]

    def encode(sents):
        enc = tok([s.tokens for s in sents], is_split_into_words=True, truncation=True, max_length=context - eos_first)
        rows = []
        for i, s in enumerate(sents):
            words, previous, lab = enc.word_ids(i), None, []
            for w in words:
                lab.append(-100 if w is None or w == previous else label_id[s.tags[w]])
                previous = w
            first = [tok.eos_token_id] if eos_first else []
            rows.append({"input_ids": first + enc["input_ids"][i], "attention_mask": [1] * len(first) + enc["attention_mask"][i],
                         "labels": [-100] * len(first) + lab})
        return rows

    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(
        str(final), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_id)
    model.config.pad_token_id = tok.pad_token_id
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="ner-vs-hf-"), learning_rate=lr,
                             num_train_epochs=epochs, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                             weight_decay=0.0, warmup_steps=0, lr_scheduler_type="linear", seed=seed,
                             save_strategy="no", report_to=[], logging_steps=50, disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(encode(train)),
                      data_collator=DataCollatorForTokenClassification(tok))
    trainer.train()
    test_rows = encode(test)
    logits = trainer.predict(Dataset.from_list(test_rows)).predictions
    gold, pred = [], []
    for s, row, lg in zip(test, test_rows, logits):
        first = [j for j, lab in enumerate(row["labels"]) if lab != -100]
        tags = [labels[int(np.argmax(lg[j]))] for j in first]
        gold.append(s.tags)
        pred.append(tags + ["O"] * (len(s.tags) - len(tags)))  # words cut by truncation: O
    return 100 * score_ner(gold, pred)["f1"]


def metalm_ner(run: Path, seed: int, lr: float, epochs: int, max_sentences: int | None) -> float:
    args = ["eval", "ner", str(run), "--data", str(UNER), "--train-lang", "en", "--seed", str(seed),
            "--epochs", str(epochs), "--lr", str(lr), "--batch-size", "16", "--json"]
    if max_sentences:
        args += ["--max-train-sentences", str(max_sentences)]
    result = json.loads(metalm(*args))
    return 100 * result["summary"]["en"]["f1"]["mean"]


def perplexities(run: Path, chars: int) -> dict:
    """metalm eval perplexity vs lm-eval's metalm_text task (BOS = EOS) and lm-eval with BOS <|bos|>."""
    text = (ELTEC / "validation").glob("*.txt").__next__().read_text()[:chars]
    held_out = run.parent / "ner_vs_hf-held-out.txt"
    held_out.write_text(" ".join(text.split()))  # one document, as the lm-eval task reads a file
    ours = json.loads(metalm("eval", "perplexity", str(run), "--data", str(held_out), "--json"))["sets"][0]
    after = json.loads(metalm("eval", "harness", str(run), "--data", str(held_out), "--json"))["text"][0]
    sys.path.insert(0, str(ROOT / "src"))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    from metalm.evaluation.harness import TASKS_DIR, text_tasks

    final = run / "final"
    task = text_tasks([str(held_out)])
    out = simple_evaluate(model="hf", model_args={"pretrained": str(final), "dtype": "float32", "max_length": 128,
                                                  "prefix_token_id": 1},  # <|bos|>, the old export's BOS
                          tasks=task, batch_size=16, device="cpu", log_samples=True,
                          task_manager=TaskManager(include_path=str(TASKS_DIR)))
    tok = AutoTokenizer.from_pretrained(str(final))
    samples = out["samples"]["metalm_text"]
    nll = -sum(float(s["filtered_resps"][0]) for s in samples)
    n = sum(len(tok(s["target"], add_special_tokens=False)["input_ids"]) for s in samples)
    return {"tokens": ours["tokens"], "metalm_loss": ours["loss"], "lm_eval_loss_bos_eos": after["loss"],
            "lm_eval_loss_bos_old": nll / n}


def first_token_losses(final: Path, n_docs: int = 300) -> dict:
    """Mean NLL of each held-out document's first token after <|bos|> (the old export's BOS, which
    lm-eval puts before every document) and after <|eos|> (training's separator, the new BOS)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(final))
    model = AutoModelForCausalLM.from_pretrained(str(final), dtype=torch.float32).eval()
    text = (ELTEC / "validation").glob("*.txt").__next__().read_text()
    docs = [d.strip() for d in text.split("\n\n") if d.strip()][:n_docs]
    firsts = torch.tensor([tok(d, add_special_tokens=False)["input_ids"][0] for d in docs])
    out = {}
    with torch.no_grad():
        for name, prefix in (("after_bos_token", tok.convert_tokens_to_ids("<|bos|>")), ("after_eos_token", tok.eos_token_id)):
            logits = model(input_ids=torch.full((1, 1), prefix)).logits[0, -1].log_softmax(-1)
            out[name] = float(-logits[firsts].mean())
    return {"documents": len(docs), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None,
                    help="a trained metalm run (default: train one in /tmp/metalm-ner-vs-hf/run, reused when there)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-train-sentences", type=int, default=None)
    ap.add_argument("--ppl-chars", type=int, default=60_000, help="characters of held-out text for the perplexities")
    a = ap.parse_args()
    run = a.run or Path("/tmp/metalm-ner-vs-hf/run")
    t0 = time.time()
    if a.run is None and not (run / "final").is_dir():
        train_model(run)
    rows = {"metalm eval ner": [], "HF recipe (after)": [], "HF recipe (before)": [], "HF recipe (after, EOS first)": []}
    for seed in range(a.seeds):
        rows["metalm eval ner"].append(metalm_ner(run, seed, a.lr, a.epochs, a.max_train_sentences))
        rows["HF recipe (after)"].append(hf_recipe(run / "final", seed, a.lr, a.epochs, a.max_train_sentences, False))
        rows["HF recipe (before)"].append(hf_recipe(run / "final", seed, a.lr, a.epochs, a.max_train_sentences, True))
        rows["HF recipe (after, EOS first)"].append(
            hf_recipe(run / "final", seed, a.lr, a.epochs, a.max_train_sentences, False, eos_first=True))
        print(seed, {k: round(v[-1], 1) for k, v in rows.items()}, flush=True)
        save_result(ROOT / "benchmarks" / "results" / "ner_vs_hf.partial.json", rows)  # a long run keeps its seeds
    summary = {k: {"per_seed": v, "mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
               for k, v in rows.items()}
    result = {"machine": machine(), "run": str(run), "seeds": a.seeds, "epochs": a.epochs, "lr": a.lr,
              "max_train_sentences": a.max_train_sentences, "ner_f1": summary,
              "perplexity": perplexities(run, a.ppl_chars), "first_token_nll": first_token_losses(run / "final"),
              "seconds": time.time() - t0}
    (ROOT / "benchmarks" / "results" / "ner_vs_hf.partial.json").unlink()
    print(json.dumps(result, indent=1))
    save_result(ROOT / "benchmarks" / "results" / "ner_vs_hf.json", result)


if __name__ == "__main__":
    main()
