"""The experiment summary (`EXP/summary.json`) as typed objects with one JSON form.

`report.summarise` computes the numbers (`compare`, `regime`, `metatask`, `matched`, `sweep`) and
validates them into an `ExperimentSummary`; the verdict, the report's tables and anything that reads
summary.json back (`read_summary`: `metalm watch`, tests) use these types, so every key is spelled
here and nowhere else. A key the schema does not know is refused (`extra="forbid"`): a producer
cannot add a number the readers would silently miss. Seeds are ints here and strings in the JSON
(its object keys); the evaluation results keep the form of their own files (`eval_results`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, ValidationError

from ..eval_results import FewshotResult, NerLanguage, PerplexityResult
from ..run_dir import SUMMARY as SUMMARY_FILE


def _read(kind: Any) -> PlainValidator:
    """An evaluation type inside the summary is read through its own `from_json`..."""
    return PlainValidator(lambda v: v if isinstance(v, kind) else kind.from_json(v))


_WRITE = PlainSerializer(lambda r: r.to_json())  # ... and written through its `to_json` (its file's form)
Perplexity = Annotated[PerplexityResult, _read(PerplexityResult), _WRITE]
Fewshot = Annotated[FewshotResult, _read(FewshotResult), _WRITE]
NerScores = Annotated[NerLanguage, _read(NerLanguage), _WRITE]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeanCI(_Model):
    """A mean over seeds (or rows) with its Student-t interval (`compare.mean_ci`): none from one value.
    The types below that carry these four fields beside others declare them where their producer puts
    them, so summary.json keeps its key order."""

    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None


class FinalLoss(MeanCI):
    per_seed: dict[int, float]


class RegimeSeed(_Model):
    final_val_loss: float
    below_unigram: float
    label: str


class Regime(_Model):
    """`regime.regime`: "learning" or "unigram stage" (None without a unigram cross-entropy)."""

    label: str | None
    unigram_ce: float | None
    margin: float | None = None
    per_seed: dict[int, RegimeSeed]


class SchedulePoint(_Model):
    """Where a run is read (`compare.schedule_point`): its step, whether mid-schedule, the LR fraction."""

    step: float
    mid_schedule: bool
    lr_fraction: float | None


class AtEqual(_Model):
    budget: float
    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None
    mid_schedule: dict[int, SchedulePoint]


class Speedup(_Model):
    """One measure's speed-up to the target (`compare.speedups`)."""

    per_seed: dict[int, float]
    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None
    not_reached: list[int]
    baseline_not_reached: list[int]
    dropped: dict[int, str]


class PairedSeed(_Model):
    budget: float
    arm_loss: float
    baseline_loss: float
    difference: float
    baseline_at: SchedulePoint
    arm_at: SchedulePoint
    mid_schedule: list[str]

    def read_at(self, run: str) -> SchedulePoint:
        """Where `run` ("baseline" or "arm") was read."""
        return self.baseline_at if run == "baseline" else self.arm_at


class PairedDifference(_Model):
    """An arm's paired difference at equal FLOPs (`compare.paired_difference`) and what it was paired
    against (the baseline, or its matched baseline runs)."""

    measure: str
    per_seed: dict[int, PairedSeed]
    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None
    dropped: dict[int, str]
    against: str


class CurveSeed(_Model):
    budget: float
    arm_loss: float
    baseline_loss: float
    difference: float


class CurvePoint(_Model):
    fraction: float
    per_seed: dict[int, CurveSeed]
    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None


class CurveDifferences(_Model):
    """The curve-level comparison on one axis (`compare.curve_differences`)."""

    measure: str
    points: list[CurvePoint]
    dropped: dict[int, str]
    against: str
    note: str | None = None


class Evaluations(_Model):
    """An arm's stored evaluations per seed (NER: per result name, seed → scores per test language)
    and each seed's phase read-out (`RunDir.read_phases`, kept as written)."""

    perplexity: dict[int, Perplexity] = {}
    fewshot: dict[int, Fewshot] = {}
    ner: dict[str, dict[int, dict[str, NerScores]]] = {}
    phases: dict[int, dict[str, Any]] = {}


class ArmSummary(_Model):
    """One arm: its role and runs, final loss and regime, cost to the target, loss at the experiment's
    equal budgets, and (arms other than the baseline) the comparisons with the baseline."""

    role: str
    control: str
    runs: dict[int, str]
    final_val_loss: FinalLoss
    regime: Regime
    cost_to_target: dict[int, dict[str, float] | None]
    missed_target: list[int]
    val_loss_at_equal: dict[str, AtEqual]
    speedup: dict[str, Speedup] | None = None
    paired_difference_at_equal_flops: PairedDifference | None = None
    curve_differences: dict[str, CurveDifferences] | None = None
    evaluations: Evaluations


class MatchedRun(_Model):
    """An arm's matched baseline run for one seed (`experiment.matched`)."""

    run: str
    steps: int
    final_flops: float | None
    arm_final_flops: float | None
    final_val_loss: float
    arm_final_val_loss: float | None


class QueryAccuracy(MeanCI):
    per_seed: dict[int, float]


class RealisedEpisode(_Model):
    """Means over the meta rows of the episodes actually built (`metatask.realised_episode`)."""

    classes: float | None = None
    support_min: float | None = None
    support_median: float | None = None
    query_items: float | None = None
    rows: int


class MetaTaskSummary(_Model):
    """Whether a meta arm learned its meta task (`metatask.meta_task`, DESIGN 2.6)."""

    n_way: int
    chance: float | None
    window: str
    over: str
    rows: int
    query_acc: QueryAccuracy
    inner_loop_gain: MeanCI
    learned: bool
    configured: dict[str, Any]
    realised_episode: RealisedEpisode | None


class AttributionSeed(_Model):
    steps: list[float]
    differences: list[float]
    curve_mean: float
    final_step: float
    arm_loss: float
    control_loss: float
    difference: float


class Attribution(_Model):
    """A control-arm attribution at equal optimizer steps (`compare.paired_at_steps`); the top-level
    n/mean/ci are the final evaluation's."""

    effect: str  # "meta-arm" or "replay"
    arm: str
    control: str
    axis: str
    per_seed: dict[int, AttributionSeed]
    n: int
    mean: float | None
    ci: list[float] | None = None
    level: float | None = None
    final: MeanCI
    curve_mean: MeanCI
    dropped: dict[int, str]


class Controls(_Model):
    unpaired: dict[str, str]
    meta_without_control: list[str]


class SweepSetting(_Model):
    setting: dict[str, Any]
    name: str
    final_val_loss: dict[int, float | None]
    state: dict[int, str]
    mean: float | None


class SweepArm(_Model):
    settings: list[SweepSetting]
    chosen: dict[str, Any] | None
    chosen_name: str | None
    at_edge: list[str]
    taken_by: list[str] = []


class Sweeps(_Model):
    """The experiment's sweep (`experiment.sweep`): grid, seeds, and per swept arm its table and choice."""

    seeds: list[int]
    grid: dict[str, list[Any]]
    selected_on_arm_seeds: list[int]
    arms: dict[str, SweepArm]


class ExperimentSummary(_Model):
    """Every number of an experiment's report (`summary.json`)."""

    baseline: str
    target_loss: float | None
    target_source: str
    unigram_ce: float | None
    unigram_ce_source: str
    arms: dict[str, ArmSummary]
    matched_baselines: dict[str, dict[int, MatchedRun]] = {}
    meta_task: dict[str, MetaTaskSummary] = {}
    attributions: list[Attribution] = []
    controls: Controls = Controls(unpaired={}, meta_without_control=[])
    metrics_problems: dict[str, list[str]] = {}
    sweeps: Sweeps | None = None
    verdict: list[str] = []
    versions: dict[str, str | None] = {}
    configs: dict[str, dict[int, dict[str, Any] | None]] = {}
    unfinished: list[str] = []

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the keys the summary was built or read with (an optional number a producer
        did not give, such as the interval of one seed, stays absent rather than null), so
        `from_json(tree).to_json() == tree`."""
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def from_json(cls, tree: Any) -> ExperimentSummary:
        """A summary from its JSON form; anything malformed is one ValueError naming where."""
        try:
            return cls.model_validate(tree)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "summary"
            raise ValueError(f"summary: {where}: {first['msg']} ({exc.error_count()} problem(s))") from None


def read_summary(path: str | Path) -> ExperimentSummary | None:
    """An experiment's summary (its directory or the file itself); None when there is none yet or it
    is unreadable or malformed (a report being rewritten, or one from another version)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        return ExperimentSummary.from_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
