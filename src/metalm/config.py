"""Typed run configuration: YAML file + dotted command-line overrides, validated once at load.

Sections: `run`, `model`, `data`, `train` (defined here) and `meta`, `dynamics` (defined next to
their features and mounted here). Every key name is public interface. Unknown keys, wrong types,
out-of-range values and incompatible options raise `ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from .config_base import Section
from .errors import ConfigError
from .dynamics.config import DynamicsConfig, check_dynamics
from .meta.config import MetaConfig
from .model import PRESETS


class RunConfig(Section):
    """Where the run lives and how it is executed."""

    name: str = "run"
    dir: str = "runs/run"
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = Field(None, ge=1)  # torch intra-op threads on CPU (None: torch's default)
    cache_dir: str | None = None  # token/tokenizer cache (None: $METALM_CACHE or ~/.cache/metalm)
    progress: bool = True
    tensorboard: bool = False
    wandb: bool = False  # offline mode: nothing leaves the machine


class ModelConfig(Section):
    """A named preset plus overrides of its LlamaConfig fields, or any transformers config."""

    preset: str = "micro"
    hf_config: str | None = None  # path or Hub name of a transformers causal-LM config
    hidden_size: int | None = Field(None, gt=0)
    num_hidden_layers: int | None = Field(None, gt=0)
    num_attention_heads: int | None = Field(None, gt=0)
    num_key_value_heads: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    max_position_embeddings: int | None = Field(None, gt=0)
    rope_theta: float | None = Field(None, gt=0)
    tie_word_embeddings: bool | None = None
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="after")
    def _known_preset(self) -> "ModelConfig":
        if self.hf_config is None and self.preset not in PRESETS:
            raise ValueError(f"preset: unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        return self

    def overrides(self) -> dict[str, Any]:
        fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "max_position_embeddings", "rope_theta", "tie_word_embeddings")
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}

    def context_length(self) -> int | None:
        if self.hf_config is not None:
            return self.max_position_embeddings
        return self.max_position_embeddings or PRESETS[self.preset].max_position_embeddings


class DataConfig(Section):
    """Training/validation text and the tokenizer.

    `train` / `validation`: a path, directory or glob of .txt/.jsonl/.parquet files (or a list of
    them), `hf:NAME[:CONFIG][@SPLIT]` for a Hugging Face dataset, or `demo` for the generated demo set.
    Without `validation`, `val_fraction` of the training documents is held out.
    """

    train: str | list[str] = "demo"
    validation: str | list[str] | None = None
    val_fraction: float = Field(0.02, gt=0, lt=1)
    text_field: str = "text"
    txt_documents: Literal["blank_line", "file"] = "blank_line"
    tokenizer: str | None = None  # local dir or Hub name; None: train a byte-level BPE on `train`
    vocab_size: int = Field(8192, ge=260)
    tokenizer_sample_bytes: int = Field(20_000_000, gt=0)


class TrainConfig(Section):
    """The optimisation loop shared by vanilla and meta runs (the outer loop for meta steps)."""

    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)  # global sequences per optimizer step (all ranks, all micro-batches)
    seq_len: int = Field(128, ge=2)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0)  # 0: no clipping
    eval_every: int = Field(50, ge=0)  # 0: evaluate only before the first and after the last step
    eval_batches: int = Field(4, ge=1)
    save_every: int = Field(100, ge=0)  # 0: checkpoint only at the end
    keep_checkpoints: int = Field(0, ge=0)  # 0: keep all (post-hoc dynamics reads every checkpoint)
    log_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        return self


class Config(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    meta: MetaConfig = Field(default_factory=MetaConfig)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> "Config":
        ctx = self.model.context_length()
        if ctx is not None and self.train.seq_len > ctx:
            raise ValueError(
                f"train.seq_len {self.train.seq_len} exceeds the model's context "
                f"(max_position_embeddings {ctx}); lower train.seq_len or set model.max_position_embeddings"
            )
        try:
            check_dynamics(self.dynamics, self.train.seq_len, ctx)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def default_config() -> Config:
    return Config.model_validate({})


def _known_keys(model_cls: type[Section], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model_cls.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, Section):
            keys += _known_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _format_error(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        suggestion = difflib.get_close_matches(loc, _known_keys(Config), n=1)
        hint = f" (did you mean {suggestion[0]!r}?)" if suggestion else ""
        return f"unknown config key {loc!r}{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if isinstance(value, dict) or err["type"] == "value_error" else f" (got {value!r})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings → (key, YAML-parsed value)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def from_dict(tree: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_tree(path: str | Path | None, overrides: list[str] | None = None, what: str = "a config") -> dict[str, Any]:
    """The YAML mapping in `path` ({} for None) with the dotted overrides applied, not yet validated
    (run configs and experiment files share it)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{what.split()[-1]} file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: {what} must be a mapping of sections (run, model, data, train, ...)")
        tree = loaded
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    return tree


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    return from_dict(load_tree(path, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
