"""Entity-level NER scores with seqeval, their mean ± std over seeds, and the results table.

Two matchings are reported (DESIGN 2.8): seqeval's default mode, which is conlleval-compatible
(a dangling `I-X` opens an entity) and is what the paper reports, and strict IOB2
(`mode="strict", scheme=IOB2`: a dangling `I-X` is no entity), which penalises ill-formed output.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Any

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

MODES = {"default": {}, "strict": {"mode": "strict", "scheme": IOB2}}


def _report(y_true: list[list[str]], y_pred: list[list[str]], mode: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rep = classification_report(y_true, y_pred, output_dict=True, zero_division=0, **MODES[mode])
        except (ValueError, ZeroDivisionError):  # no entity in gold nor prediction
            rep = {}
    micro = rep.get("micro avg", {})

    def num(x: Any) -> float:
        x = float(x)
        return 0.0 if math.isnan(x) else x

    per_type = {
        name: {
            "f1": num(v["f1-score"]),
            "precision": num(v["precision"]),
            "recall": num(v["recall"]),
            "support": int(v["support"]),
        }
        for name, v in rep.items()
        if not name.endswith(" avg")
    }
    return {
        "f1": num(micro.get("f1-score", 0.0)),
        "precision": num(micro.get("precision", 0.0)),
        "recall": num(micro.get("recall", 0.0)),
        "per_type": per_type,
    }


def score_ner(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level micro precision/recall/F1 and per-type scores, in both matchings.

    Keys: `f1`, `precision`, `recall`, `per_type` (conlleval-compatible, the headline numbers),
    `strict` (the same keys under strict IOB2), `sentences`, `entities` (gold, conlleval count)."""
    gold = [list(s) for s in y_true]
    pred = [list(s) for s in y_pred]
    if len(gold) != len(pred) or any(len(t) != len(p) for t, p in zip(gold, pred)):
        raise ValueError("score_ner: gold and predicted tag sequences differ in shape")
    default = _report(gold, pred, "default")
    strict = _report(gold, pred, "strict")
    return {
        **default,
        "strict": strict,
        "sentences": len(gold),
        "entities": sum(v["support"] for v in default["per_type"].values()),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def aggregate(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of the scores `score_ner` returned for one test language."""
    types = sorted({t for s in scores for t in s["per_type"]})
    return {
        "f1": mean_std([s["f1"] for s in scores]),
        "precision": mean_std([s["precision"] for s in scores]),
        "recall": mean_std([s["recall"] for s in scores]),
        "strict_f1": mean_std([s["strict"]["f1"] for s in scores]),
        "per_type_f1": {t: mean_std([s["per_type"].get(t, {}).get("f1", 0.0) for s in scores]) for t in types},
    }


def _pm(stat: dict[str, float], scale: float = 100.0) -> str:
    text = f"{stat['mean'] * scale:.1f}"
    return text + (f" ± {stat['std'] * scale:.1f}" if stat["n"] > 1 else "")


def format_ner_table(result: dict[str, Any]) -> str:
    """A plain-text table of a `run_ner` result: one row per test language, F1 × 100."""
    cfg = result["config"]
    summary = result["summary"]
    types = sorted({t for row in summary.values() for t in row["per_type_f1"]})
    header = ["test", "F1", "strict F1", "P", "R", *types, "all-O"]
    rows = []
    for lang, row in summary.items():
        tag = lang + (" (in-language)" if lang == cfg["train_lang"] else " (zero-shot)")
        rows.append(
            [
                tag,
                _pm(row["f1"]),
                _pm(row["strict_f1"]),
                _pm(row["precision"]),
                _pm(row["recall"]),
                *(_pm(row["per_type_f1"][t]) if t in row["per_type_f1"] else "-" for t in types),
                f"{100 * result['baseline_all_o'][lang]:.1f}",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    seeds = len(result["runs"])
    title = (
        f"NER {cfg['mode']}: trained on {cfg['train_lang']}/{cfg['train_split']} "
        f"({result['data'][cfg['train_lang']][cfg['train_split']]['sentences']} sentences), "
        f"{cfg['epochs']} epochs, lr {cfg['lr']:g}, batch {cfg['batch_size']}, "
        f"{seeds} seed{'s' if seeds != 1 else ''}; entity-level micro F1 × 100"
        + (" (mean ± std)" if seeds > 1 else "")
    )
    notes = [f"note: {n}" for n in result.get("notes", [])]
    if result.get("warnings", {}).get("count"):
        notes.append(f"warning: {result['warnings']['count']} dangling I- tag(s) accepted (conlleval reading)")
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows), *notes])
