"""The settings of each evaluation, declared once: typed sections used by the experiment file
(`evaluations: {perplexity: …, fewshot: …, ner: …}`, validated when it is loaded) and by the flags
of `metalm eval perplexity|fewshot|ner` (generated from the fields: name, type, default, help).

The few-shot SMLMT settings take their defaults (and bounds) from `MetaConfig`'s fields, so a
checkpoint is evaluated on the same kind of episodes a meta run trains on unless told otherwise.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo

from ..config_base import Section, cli, format_validation_error
from ..device import DEVICE_HELP
from ..errors import ConfigError
from ..meta.config import MetaConfig

DEVICE = Field("auto", description=f"device: {DEVICE_HELP}")


def _from_meta(name: str, description: str) -> Any:
    """The bounds and default of `MetaConfig.<name>`, with an evaluation-side description (the field
    declares the same type: tests check it)."""
    field = MetaConfig.model_fields[name]
    args = (field.annotation, *field.metadata, Field(field.default, description=description))
    return FieldInfo.from_annotation(Annotated[args])  # type: ignore[arg-type]  # typed type[Any]; takes Annotated too


_S = TypeVar("_S", bound="EvaluationSettings")


class EvaluationSettings(Section):
    """Base of the evaluation settings; `evaluation` is the evaluation's key under `evaluations:`."""

    evaluation: ClassVar[str] = ""

    @classmethod
    def resolve(cls: type[_S], settings: _S | None = None, **options: Any) -> _S:
        """`settings` (default: all defaults) with `options` replaced, validated; a bad value is a
        ConfigError naming `<name>.<key>`."""
        values = settings.model_dump() if settings is not None else {}
        try:
            return cls.model_validate({**values, **options})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, prefix=f"{cls.evaluation}.")) from None


class PerplexitySettings(EvaluationSettings):
    """`metalm eval perplexity`: loss and perplexity per held-out set."""

    evaluation: ClassVar[str] = "perplexity"

    data: list[str] | None = Field(None, json_schema_extra=cli(required=True),
                                   description="a held-out set (file, dir, glob, hf:NAME); repeat for several "
                                               "domains (experiments: default the run's validation set)")
    seq_len: int | None = Field(None, ge=1, description="window length (default: the run's train.seq_len or the model context)")
    batch_size: int = Field(16, ge=1, description="windows per forward pass")
    max_tokens: int | None = Field(None, ge=1, description="evaluate at most this many tokens per set")
    text_field: str = Field("text", description="the text column of .jsonl/.parquet files and Hub datasets")
    device: str = DEVICE


class FewshotSettings(EvaluationSettings):
    """`metalm eval fewshot`: accuracy on held-out SMLMT episodes before/after k head-adaptation steps."""

    evaluation: ClassVar[str] = "fewshot"

    episodes: int = Field(100, ge=1, description="held-out episodes")
    data: list[str] | None = Field(None, description="held-out text (default: the run's validation set); repeatable")
    variant: Literal["sentence", "token"] = _from_meta(
        "smlmt_variant", "SMLMT variant: classes are words (sentence) or token ids (token)")
    n_way: int = _from_meta("n_way", "classes per episode")
    k_shot: int = _from_meta("k_shot", "support examples per class")
    q_query: int = _from_meta("q_query", "query examples per class")
    inner_steps: int = _from_meta("inner_steps", "head-adaptation steps")
    inner_lr: float = _from_meta("inner_lr", "head-adaptation learning rate")
    head_init: Literal["zero", "proto", "learned"] | None = _from_meta(
        "head_init", "initial head: zero, proto or learned (default: learned for token, proto for sentence)")
    pool: Literal["last", "mask"] | None = _from_meta(
        "pool", "sentence variant: read the window at the last or the mask position (default: last)")
    window_len: int = _from_meta("window_len", "tokens per episode window")
    band_min_count: int = _from_meta("band_min_count",
                                     "a class candidate occurs at least this often in the held-out text")
    band_skip_top: int = _from_meta("band_skip_top", "the most frequent words/tokens skipped as class candidates")
    seed: int = Field(0, ge=0, description="episode seed (keep it fixed to compare checkpoints)")
    device: str = DEVICE


class NerSettings(EvaluationSettings):
    """`metalm eval ner`: Universal NER fine-tuning / probing, per language and zero-shot cross-lingual."""

    evaluation: ClassVar[str] = "ner"

    data: str = Field("demo", json_schema_extra=cli(required=True),
                      description="folder with one sub-folder of IOB2 files per language, hf:universalner/universal_ner, "
                                  "or demo (the generated demo set)")
    train_lang: str = Field("en", json_schema_extra=cli(required=True), description="language to train the NER head on")
    test_langs: list[str] | None = Field(None, json_schema_extra=cli(flags=("--test-lang", "--test-langs"), comma=True),
                                         description="test languages, comma-separated (default: the train language)")
    mode: Literal["finetune", "probe"] = Field("finetune", description="finetune all weights (the paper) or probe a frozen backbone")
    seeds: int = Field(1, ge=1, description="number of seeds (mean ± std)")
    seed: int = Field(0, ge=0, description="first seed")
    epochs: int = Field(10, ge=1, description="training epochs")
    lr: float | None = Field(None, gt=0, description="learning rate (default: 3e-5 finetune, 1e-2 probe)")
    batch_size: int = Field(16, ge=1, description="sentences per batch")
    use_dev_for_train: bool = Field(False, description="train on dev (automatic when a language has no train file)")
    select_best_on_dev: bool = Field(False, description="keep the epoch with the best dev F1 (off: the paper tests the final weights)")
    max_train_sentences: int | None = Field(None, ge=1, description="train on at most this many sentences")
    device: str = DEVICE


SETTINGS: dict[str, type[EvaluationSettings]] = {cls.evaluation: cls for cls in (PerplexitySettings, FewshotSettings, NerSettings)}


def experiment_settings(evaluations: Any) -> dict[str, EvaluationSettings]:
    """The experiment file's `evaluations:` mapping → validated settings of each requested evaluation.

    Each entry is `true` (defaults), `false`/null (not run), a mapping of settings, or — for
    perplexity — a list of held-out sets. Unknown evaluations and keys are ConfigErrors naming them.
    """
    if evaluations is None:
        return {}
    if not isinstance(evaluations, dict):
        raise ConfigError(f"evaluations: a mapping of {', '.join(SETTINGS)} to their settings")
    out: dict[str, EvaluationSettings] = {}
    for name, value in evaluations.items():
        cls = SETTINGS.get(name)
        if cls is None:
            raise ConfigError(f"evaluations: unknown {name!r}; choose from {', '.join(sorted(SETTINGS))}")
        if value is None or value is False:
            continue
        if value is True:
            value = {}
        elif isinstance(value, list) and cls is PerplexitySettings:
            value = {"data": value}
        elif not isinstance(value, dict):
            raise ConfigError(f"evaluations.{name}: true, or a mapping of its settings"
                              + (", or a list of held-out sets" if cls is PerplexitySettings else ""))
        try:
            out[name] = cls.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, cls, prefix=f"evaluations.{name}.")) from None
    return out
