"""lm-evaluation-harness on a metalm model: `metalm eval harness RUN --tasks …`.

The run's `final/` (or checkpoint) directory is an ordinary Hugging Face model, so this is
`lm_eval.simple_evaluate(model="hf", pretrained=<dir>)` with metalm's defaults: the window length
of `metalm eval perplexity` (the run's train.seq_len), float32, the run's tokenizer. The shipped
task `metalm_text` (harness_tasks/metalm_text.yaml) scores any local text file as one document with
rolling log-likelihood; besides lm-eval's word/byte perplexities its result carries the per-token
loss, which equals `metalm eval perplexity` on that file (both predict every token once, the first
from the end-of-document token, in the same windows; lm-eval gives the last, partial window a longer
context, a difference well below 1e-3 nats on a few thousand tokens). Needs the optional extra
`pip install "metalm[lm-eval]"` (lm_eval with its Hugging Face backend).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field

from ..checkpoint import resolve_model_dir
from ..config_base import cli
from ..errors import MetalmError
from ..run_dir import RunDir
from .settings import DEVICE, EvaluationSettings

TASKS_DIR = Path(__file__).parent / "harness_tasks"
TEXT_TASK = "metalm_text"


class HarnessSettings(EvaluationSettings):
    """`metalm eval harness`: lm-evaluation-harness tasks on the model (`model="hf"`)."""

    evaluation: ClassVar[str] = "harness"

    tasks: list[str] = Field([TEXT_TASK], json_schema_extra=cli(comma=True),
                             description=f"lm-eval task names, comma-separated ({TEXT_TASK}: perplexity of each --data file)")
    data: list[str] | None = Field(None, description=f"a text file for the {TEXT_TASK} task; repeatable")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples per task (default: each task's own)")
    limit: float | None = Field(None, gt=0, description="at most this many documents per task (a fraction if < 1)")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    max_length: int | None = Field(None, ge=1, description="window length (default: the run's train.seq_len or the model context)")
    device: str = DEVICE


def text_tasks(data: list[str]) -> list[dict[str, Any]]:
    """The `metalm_text` task configuration for each text file (named metalm_text, metalm_text_2, …)."""
    base = yaml.safe_load((TASKS_DIR / f"{TEXT_TASK}.yaml").read_text())
    tasks = []
    for i, spec in enumerate(data, 1):
        path = Path(spec)
        if not path.is_file():
            raise MetalmError(f"--data {spec}: not a text file")
        task = copy.deepcopy(base)
        task["task"] = TEXT_TASK if i == 1 else f"{TEXT_TASK}_{i}"
        task["dataset_kwargs"]["data_files"] = {"test": str(path.resolve())}
        tasks.append(task)
    return tasks


def _token_loss(samples: list[dict], tokenizer) -> dict[str, float]:
    """Per-token loss of rolling log-likelihood samples: -Σ log p / Σ tokens (every token once)."""
    nll = -sum(float(s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"])
               for s in samples)
    tokens = sum(len(tokenizer(s["target"], add_special_tokens=False)["input_ids"]) for s in samples)
    return {"tokens": tokens, "loss": nll / tokens, "perplexity": math.exp(nll / tokens)}


def evaluate_harness(checkpoint: str | Path, settings: HarnessSettings) -> dict[str, Any]:
    try:
        import accelerate  # noqa: F401  (lm_eval's hf model needs it: the [hf] extra)
        import lm_eval
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MetalmError('lm-evaluation-harness is not installed: pip install "metalm[lm-eval]"') from None
    from ..tokenizer import load_tokenizer

    where = resolve_model_dir(checkpoint)
    model_dir, tok_dir = where.model_dir, where.tokenizer_dir
    max_length = settings.max_length
    if max_length is None and where.run is not None:
        max_length = where.run.config_section("train").get("seq_len")
    names = [t for t in settings.tasks if t != TEXT_TASK]
    texts = []
    if TEXT_TASK in settings.tasks:
        if not settings.data:
            raise MetalmError(f"--tasks {TEXT_TASK} needs --data FILE (the text to score)")
        texts = text_tasks(settings.data)
    model_args: dict[str, Any] = {"pretrained": str(model_dir), "tokenizer": str(tok_dir), "dtype": "float32"}
    if max_length is not None:
        model_args["max_length"] = int(max_length)
    from ..device import resolve_device

    try:
        out = simple_evaluate(model="hf", model_args=model_args, tasks=names + texts,
                              num_fewshot=settings.num_fewshot, batch_size=settings.batch_size,
                              device=str(resolve_device(settings.device)), limit=settings.limit, log_samples=True,
                              task_manager=TaskManager(include_path=str(TASKS_DIR)))
    except (KeyError, ValueError) as exc:  # e.g. an unknown task name
        raise MetalmError(f"lm-eval: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    tokenizer = load_tokenizer(tok_dir)
    results = {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not k.startswith("alias")}
               for task, metrics in out["results"].items()}
    text = [{"task": t["task"], "data": t["dataset_kwargs"]["data_files"]["test"],
             **_token_loss(out["samples"][t["task"]], tokenizer)} for t in texts]
    return {"checkpoint": str(model_dir), "max_length": max_length, "tasks": settings.tasks, "results": results,
            "text": text, "lm_eval": lm_eval.__version__}


def format_harness(result: dict[str, Any]) -> str:
    lines = [f"checkpoint: {result['checkpoint']} (lm-evaluation-harness, windows of {result['max_length']} tokens)"]
    for task, metrics in result["results"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"{task}: {shown}")
    for row in result["text"]:
        lines.append(f"{row['task']} ({row['data']}): {row['tokens']:,} tokens, loss {row['loss']:.4f}, "
                     f"perplexity {row['perplexity']:.2f}")
    return "\n".join(lines)


def save_harness(result: dict[str, Any], run: RunDir) -> Path:
    return run.write_eval("harness", result)
