"""Perplexity per held-out set: token-weighted next-token loss and exp(loss), one row per domain.

A set's documents are tokenized as in training (each followed by the end-of-document token) and
the stream starts with that token too, so every token is predicted exactly once and a document's
first token from the separator it follows in training - the convention of lm-evaluation-harness's
rolling log-likelihood, whose BOS is that token (see `metalm.tokenizer`). The stream is cut into
windows of seq_len + 1 tokens that overlap by one token, the last window possibly shorter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from ..checkpoint import resolve_model_dir
from ..config import DataConfig
from ..data.pipeline import read_documents
from ..data.sources import resolve_files
from ..data.token_store import concat, tokenize_documents
from ..device import resolve_device
from ..errors import MetalmError
from ..eval_results import PerplexityResult, PerplexitySet
from ..log import progress
from ..tokenizer import load_tokenizer
from .settings import PerplexitySettings


def windows(tokens: np.ndarray, seq_len: int) -> list[np.ndarray]:
    """Windows of ≤ seq_len + 1 tokens covering the stream, consecutive ones sharing one token."""
    return [np.asarray(tokens[s:s + seq_len + 1], dtype=np.int64) for s in range(0, len(tokens) - 1, seq_len)]


@torch.no_grad()
def stream_nll(model, tokens: np.ndarray, seq_len: int, batch_size: int, device: torch.device,
               what: str = "perplexity") -> tuple[float, int]:
    """(sum of next-token NLL in nats, number of predicted tokens) over a token stream (progress
    shown as `what`)."""
    total, count = 0.0, 0
    wins = windows(tokens, seq_len)
    for i in progress(range(0, len(wins), batch_size), -(-len(wins) // batch_size), what, "batches"):
        group = wins[i:i + batch_size]
        for length in sorted({len(w) for w in group}):  # full windows batched; the short tail alone
            batch = torch.from_numpy(np.stack([w for w in group if len(w) == length])).to(device)
            logits = model(input_ids=batch[:, :-1]).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += batch[:, 1:].numel()
    return total, count


def evaluate_perplexity(checkpoint: str | Path, data: list[str] | None = None,
                        settings: PerplexitySettings | None = None, **options: Any) -> dict:
    """Loss and perplexity of each held-out set in `data` (or `settings.data`). `settings` (default:
    `PerplexitySettings()`) with keyword `options` replacing some of its fields."""
    if data is not None:
        options["data"] = [str(spec) for spec in data]
    s = PerplexitySettings.resolve(settings, **options)
    if not s.data:
        raise MetalmError("perplexity: no held-out set to evaluate (pass --data)")
    data, seq_len, batch_size, max_tokens = s.data, s.seq_len, s.batch_size, s.max_tokens
    where = resolve_model_dir(checkpoint)
    model_dir = where.model_dir
    dev = resolve_device(s.device)
    tokenizer = load_tokenizer(where.tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = model.to(dev).eval()  # type: ignore[arg-type]  # typeshed: a wraps()-decorated method's self stays unbound
    if seq_len is None:
        seq_len = model.config.max_position_embeddings
        if where.run is not None:
            seq_len = int(where.run.config_section("train").get("seq_len", seq_len))
    if seq_len < 1 or seq_len > model.config.max_position_embeddings:
        raise MetalmError(f"--seq-len {seq_len} is outside 1…{model.config.max_position_embeddings} (the model's context)")
    data_cfg = DataConfig(text_field=s.text_field, txt_documents="blank_line")
    rows = []
    for spec in data:
        docs = read_documents(resolve_files(spec), data_cfg, "--data")
        arr = concat(tokenize_documents(docs, tokenizer), np.uint32)
        tokens = np.concatenate([np.array([tokenizer.eos_token_id], np.uint32), arr.tokens])
        tokens = tokens[: max_tokens + 1] if max_tokens else tokens  # read_documents refused an empty set
        nll, count = stream_nll(model, tokens, seq_len, batch_size, dev, f"perplexity {spec}")
        loss = nll / count
        rows.append(PerplexitySet(data=spec, documents=arr.n_docs, tokens=count, loss=loss, perplexity=math.exp(loss)))
    return PerplexityResult(checkpoint=str(model_dir), seq_len=seq_len, sets=rows).to_json()


def format_perplexity_table(result: dict) -> str:
    lines = [f"checkpoint: {result['checkpoint']} (windows of {result['seq_len']} tokens)",
             f"{'data':<48} {'tokens':>12} {'loss':>8} {'ppl':>10}"]
    for r in result["sets"]:
        lines.append(f"{r['data'][-48:]:<48} {r['tokens']:>12,} {r['loss']:>8.4f} {r['perplexity']:>10.2f}")
    return "\n".join(lines)


def save_perplexity(result: dict, checkpoint: str | Path) -> Path | None:
    """Save into RUN/eval/perplexity.json when the checkpoint belongs to a run."""
    run = resolve_model_dir(checkpoint, verify=False).run  # the run only: loading verified it
    return None if run is None else run.write_eval(PerplexityResult.NAME, result)
