"""The Hugging Face model card of a run's `final/` export (`final/README.md`).

Its YAML metadata is what the Hub indexes and filters on (library, pipeline, tags, datasets,
evaluation results); the body says what the model is: training data, key settings, the final
validation loss and perplexity, and every stored evaluation. The card is written with the export and
rewritten whenever an evaluation result is stored, so it always lists the results the run has.
"""

from __future__ import annotations

import math
from pathlib import Path

from .atomic import write_text_atomic
from .eval_results import FewshotResult, NerResult, PerplexityResult, read_result
from .run_dir import RunDir
from .tokenizer import is_metalm_tokenizer

CARD = "README.md"
KEY_SETTINGS = {
    "model": ("preset", "hf_config"),
    "train": ("steps", "batch_size", "seq_len", "grad_accum", "lr", "schedule", "warmup_steps", "weight_decay"),
    "meta": ("enabled", "task", "algorithm", "inner_params", "inner_steps", "inner_lr", "n_way", "k_shot",
             "hybrid", "schedule", "control"),
}


def _sources(run: RunDir) -> tuple[list[str], list[str]]:
    """(Hub dataset names, every training source as recorded) of the run's data."""
    info = run.read_data_info() or {}
    train = info.get("train") or run.config_section("data").get("train") or []
    train = [train] if isinstance(train, str) else [str(s) for s in train]
    hub = sorted({s.removeprefix("hf:").split(":")[0] for s in train if s.startswith("hf:")})
    return hub, train


def _final_val_loss(run: RunDir) -> tuple[int, float] | None:
    rows = [r for r in run.read_metrics() if isinstance(r.get("val_loss"), (int, float))]
    return (int(rows[-1].get("step", 0)), float(rows[-1]["val_loss"])) if rows else None


def _results(run: RunDir) -> list[tuple[str, str, str, float]]:
    """(task, dataset, metric, value) of every stored evaluation result metalm knows how to read."""
    found = []
    for name in run.eval_names():
        tree = run.read_eval(name)
        if name == PerplexityResult.NAME and (ppl := read_result(PerplexityResult, tree)) is not None:
            for s in ppl.sets:
                found += [("text-generation", Path(s.data).name, "loss", s.loss),
                          ("text-generation", Path(s.data).name, "perplexity", s.perplexity)]
        elif name == FewshotResult.NAME and (fewshot := read_result(FewshotResult, tree)) is not None:
            for metric in ("query_acc_before", "query_acc_after"):
                if metric in fewshot.accuracy:
                    found.append(("few-shot SMLMT", "held-out episodes", metric, fewshot.accuracy[metric].mean))
        elif name.startswith("ner-") and (ner := read_result(NerResult, tree)) is not None:
            for lang, scores in ner.summary.items():
                found.append(("token-classification", f"UNER {lang} ({ner.config.get('mode')}, trained on "
                              f"{ner.config.get('train_lang')}; {name})", "f1", scores.f1.mean))
    return found


def model_card(run: RunDir) -> str:
    """The card's text (YAML front matter + markdown) from the run's config, data, metrics and evals."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    config = run.read_config() or {}
    name = config.get("run", {}).get("name") or run.path.name
    meta = config.get("meta", {}).get("enabled")
    hub, train = _sources(run)
    results = _results(run)
    data = ModelCardData(
        library_name="transformers", pipeline_tag="text-generation", model_name=name,
        tags=["metalm", "llama", "causal-lm"] + (["meta-learning", "smlmt"] if meta else []),
        datasets=hub or None,
        eval_results=[EvalResult(task_type=task, dataset_type="local", dataset_name=dataset, metric_type=metric,
                                 metric_value=round(value, 6)) for task, dataset, metric, value in results] or None,
    )
    lines = [f"# {name}", "", f"A Llama-style causal language model trained with metalm "
             f"({'meta-learned (SMLMT) and autoregressive' if meta else 'autoregressive (vanilla)'} pretraining).",
             "It loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`"
             + ("; the tokenizer's BOS is the end-of-document token training separated documents with, and "
                "`add_prefix_space=True` gives split words their in-text tokens." if is_metalm_tokenizer(run.final_dir)
                else "."), "",
             "## Training data", ""]
    lines += [f"- `{s}`" for s in train] or ["- (not recorded)"]
    info = run.read_data_info() or {}
    if isinstance(info.get("splits"), dict):
        lines += [""] + [f"{split}: {v.get('tokens', 0):,} tokens, {v.get('documents', 0):,} documents"
                         for split, v in info["splits"].items() if isinstance(v, dict)]
    lines += ["", "## Key settings", "", "| setting | value |", "|---|---|"]
    for section, keys in KEY_SETTINGS.items():
        values = config.get(section, {})
        if section == "meta" and not values.get("enabled"):
            keys = ("enabled",)
        lines += [f"| {section}.{k} | {values[k]} |" for k in keys if values.get(k) is not None]
    lines += [f"| run.seed | {config.get('run', {}).get('seed')} |", "", "## Results", ""]
    final = _final_val_loss(run)
    if final is not None:
        step, loss = final
        lines.append(f"Final validation loss (step {step}): {loss:.4f} (perplexity {math.exp(min(loss, 700)):.2f}).")
    lines += [""] + (["| evaluation | data | metric | value |", "|---|---|---|---|"]
                     + [f"| {t} | {d} | {m} | {v:.4f} |" for t, d, m, v in results] if results
                     else ["No evaluation stored yet (`metalm eval …` adds its results here)."])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def write_model_card(run: RunDir, directory: Path | None = None) -> Path | None:
    """Write the card into `directory` (default: the run's `final/`, when it exists); its path."""
    directory = run.final_dir if directory is None else directory
    if not directory.is_dir():
        return None
    path = directory / CARD
    write_text_atomic(path, model_card(run))
    return path
