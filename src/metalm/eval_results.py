"""Evaluation results as typed objects with one JSON form: `RUN/eval/perplexity.json`, `fewshot.json`
and `ner-*.json`.

An evaluation builds its result through these types and stores `to_json()`; the report and the model
card read a stored file back with `from_json()`, so the keys are spelled in one place. `to_json()`
gives the keys in the order the files have always had them (`from_json(tree).to_json() == tree` for
a stored result). A malformed or foreign file is a `ValueError` from `from_json` (`read_result`
answers None), never a half-read result. The parts that only describe how a result was computed
(settings, per-seed details) stay plain JSON mappings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", "PerplexityResult", "FewshotResult", "NerResult")
X = TypeVar("X")


def _mapping(tree: Any, what: str) -> dict:
    if not isinstance(tree, dict):
        raise ValueError(f"{what}: expected a JSON object, not {type(tree).__name__}")
    return tree


def _parse(what: str, tree: Any, build: Callable[[dict], X]) -> X:
    """`build(tree)` for a JSON object `tree`; a missing key is a ValueError naming `what`."""
    tree = _mapping(tree, what)
    try:
        return build(tree)
    except KeyError as exc:
        raise ValueError(f"{what}: no {exc}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what}: expected a number, not {value!r}")
    return value


@dataclass(frozen=True)
class MeanStd:
    """A figure over seeds or episodes: mean, sample standard deviation, and (NER) how many values."""

    mean: float
    std: float
    n: int | None = None  # NER's figures count their seeds; few-shot accuracies do not

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, **({} if self.n is None else {"n": self.n})}

    @classmethod
    def from_json(cls, tree: Any) -> MeanStd:
        return _parse("mean ± std", tree, lambda t: cls(_number(t["mean"], "mean"), _number(t["std"], "std"), t.get("n")))


# -- perplexity ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PerplexitySet:
    """One held-out set: its tokens' mean loss (nats/token) and perplexity."""

    data: str
    documents: int
    tokens: int
    loss: float
    perplexity: float

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "documents": self.documents, "tokens": self.tokens, "loss": self.loss,
                "perplexity": self.perplexity}

    @classmethod
    def from_json(cls, tree: Any) -> PerplexitySet:
        return _parse("perplexity set", tree, lambda t: cls(str(t["data"]), t["documents"], t["tokens"],
                                                            _number(t["loss"], "loss"),
                                                            _number(t["perplexity"], "perplexity")))


@dataclass(frozen=True)
class PerplexityResult:
    """`metalm eval perplexity`: the model evaluated, its window length, one entry per held-out set."""

    checkpoint: str
    seq_len: int
    sets: list[PerplexitySet]

    NAME = "perplexity"  # RUN/eval/perplexity.json

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "seq_len": self.seq_len, "sets": [s.to_json() for s in self.sets]}

    @classmethod
    def from_json(cls, tree: Any) -> PerplexityResult:
        def build(t: dict) -> PerplexityResult:
            if not isinstance(t["sets"], list):
                raise ValueError("perplexity: sets is not a list")
            return cls(str(t["checkpoint"]), t["seq_len"], [PerplexitySet.from_json(s) for s in t["sets"]])

        return _parse(cls.NAME, tree, build)


# -- few-shot --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FewshotResult:
    """`metalm eval fewshot`: accuracies (mean ± std over held-out episodes) before and after the
    inner loop adapts the head (`support_acc_before`, ..., `query_acc_after`)."""

    checkpoint: str
    episodes: int
    chance: float
    settings: dict[str, Any]  # the episode settings, echoed
    accuracy: dict[str, MeanStd]

    NAME = "fewshot"  # RUN/eval/fewshot.json

    def to_json(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "episodes": self.episodes, "chance": self.chance,
                "settings": self.settings, "accuracy": {k: v.to_json() for k, v in self.accuracy.items()}}

    @classmethod
    def from_json(cls, tree: Any) -> FewshotResult:
        return _parse(cls.NAME, tree, lambda t: cls(
            str(t["checkpoint"]), t["episodes"], _number(t["chance"], "chance"), _mapping(t["settings"], "fewshot settings"),
            {k: MeanStd.from_json(v) for k, v in _mapping(t["accuracy"], "fewshot accuracy").items()}))


# -- NER -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NerLanguage:
    """One test language's scores, mean ± std over seeds: entity-level F1 (conlleval matching),
    precision, recall, F1 under strict IOB2, and F1 per entity type."""

    f1: MeanStd
    precision: MeanStd
    recall: MeanStd
    strict_f1: MeanStd
    per_type_f1: dict[str, MeanStd]

    def to_json(self) -> dict[str, Any]:
        return {"f1": self.f1.to_json(), "precision": self.precision.to_json(), "recall": self.recall.to_json(),
                "strict_f1": self.strict_f1.to_json(),
                "per_type_f1": {k: v.to_json() for k, v in self.per_type_f1.items()}}

    @classmethod
    def from_json(cls, tree: Any) -> NerLanguage:
        return _parse("NER language summary", tree, lambda t: cls(
            MeanStd.from_json(t["f1"]), MeanStd.from_json(t["precision"]), MeanStd.from_json(t["recall"]),
            MeanStd.from_json(t["strict_f1"]),
            {k: MeanStd.from_json(v) for k, v in _mapping(t["per_type_f1"], "per_type_f1").items()}))


@dataclass(frozen=True)
class NerResult:
    """`metalm eval ner`: how it was computed (`config`), what was noticed (`notes`, `warnings`), the
    data's sizes, one entry per seed (`runs`), the scores per test language over seeds (`summary`),
    the F1 of predicting `O` everywhere and the timings."""

    config: dict[str, Any]
    notes: list[str]
    warnings: dict[str, Any]
    data: dict[str, Any]
    runs: list[dict[str, Any]]
    summary: dict[str, NerLanguage]
    baseline_all_o: dict[str, float]
    timing: dict[str, float]

    TASK = "ner"

    def to_json(self) -> dict[str, Any]:
        return {"task": self.TASK, "config": self.config, "notes": self.notes, "warnings": self.warnings,
                "data": self.data, "runs": self.runs, "summary": {k: v.to_json() for k, v in self.summary.items()},
                "baseline_all_o": self.baseline_all_o, "timing": self.timing}

    @classmethod
    def from_json(cls, tree: Any) -> NerResult:
        def build(t: dict) -> NerResult:
            if t.get("task") != cls.TASK:
                raise ValueError(f"NER result: task is {t.get('task')!r}, not {cls.TASK!r}")
            return cls(_mapping(t["config"], "NER config"), t["notes"], t["warnings"], t["data"], t["runs"],
                       {k: NerLanguage.from_json(v) for k, v in _mapping(t["summary"], "NER summary").items()},
                       t["baseline_all_o"], t["timing"])

        return _parse("NER result", tree, build)


def read_result(kind: type[T], tree: Any) -> T | None:
    """A stored result (`RunDir.read_eval`) as `kind`, or None when it is missing or malformed."""
    try:
        return kind.from_json(tree)
    except (ValueError, TypeError):
        return None
