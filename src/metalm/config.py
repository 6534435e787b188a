"""Typed run configuration: YAML file + dotted command-line overrides, validated once at load.

Sections: `run`, `model`, `data`, `train` (defined here) and `meta`, `dynamics` (defined next to
their features and mounted here). Every key name is public interface. Unknown keys, wrong types,
out-of-range values and incompatible options raise `ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config_base import Section, describe_fields, format_validation_error
from .dynamics.config import DynamicsConfig, check_dynamics
from .errors import ConfigError
from .meta.config import MetaConfig
from .presets import PRESETS


class RunConfig(Section):
    """Where the run lives and how it is executed."""

    name: str = Field("run", description="run name (shown in logs and reports)")
    dir: str = Field("runs/run", description="run directory: config, metrics, checkpoints (an existing run resumes, also after a move)")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and episodes")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (null: torch's default)")
    cache_dir: str | None = Field(None, description="token/tokenizer cache (null: $METALM_CACHE or ~/.cache/metalm)")
    progress: bool = Field(True, description="show a progress bar")
    tensorboard: bool = Field(False, description="also write TensorBoard event files")
    wandb: bool = Field(False, description="also log to Weights & Biases, offline mode: nothing leaves the machine")
    compile: Literal["auto"] | bool = Field(
        "auto", description="torch.compile the next-token step: true, false, or auto (on for CUDA, off for CPU)")
    dist_timeout_s: int = Field(
        7200, gt=0, description="under torchrun: seconds a process waits in a collective, e.g. for rank 0 to "
        "tokenize a new corpus (about 300 s per GB) before the process group fails (default 2 h)")
    peak_tflops: float | None = Field(
        None, gt=0, description="peak TFLOP/s of one device for the mfu column (null: a table of common GPUs' bf16 "
        "peaks on CUDA, no mfu on CPU)")


class ModelConfig(Section):
    """A named preset plus overrides of its LlamaConfig fields, or any transformers config."""

    preset: str = Field("micro", description=f"named model size: {', '.join(PRESETS)}")
    hf_config: str | None = Field(None, description="path or Hub name of a transformers causal-LM config (replaces preset)")
    hidden_size: int | None = Field(None, gt=0, description="override of the preset's d_model")
    num_hidden_layers: int | None = Field(None, gt=0, description="override of the preset's layer count")
    num_attention_heads: int | None = Field(None, gt=0, description="override of the preset's attention heads")
    num_key_value_heads: int | None = Field(None, gt=0, description="override of the preset's key/value heads (GQA)")
    intermediate_size: int | None = Field(None, gt=0, description="override of the preset's FFN width")
    max_position_embeddings: int | None = Field(None, gt=0, description="override of the preset's context length")
    rope_theta: float | None = Field(None, gt=0, description="override of the preset's RoPE base")
    tie_word_embeddings: bool | None = Field(None, description="override: share input and output embeddings")
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel of transformers")

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

    train: str | list[str] = Field("demo", description="training text: path, dir, glob, hf:NAME[:CONFIG][@SPLIT] or demo (or a list)")
    validation: str | list[str] | None = Field(None, description="validation text, as train (null: hold out val_fraction)")
    val_fraction: float = Field(0.02, gt=0, lt=1, description="share of training documents held out without validation")
    text_field: str = Field("text", description="the text column of .jsonl/.parquet files and Hub datasets")
    txt_documents: Literal["blank_line", "file"] = Field("blank_line", description="a .txt document ends at a blank line, or is the whole file")
    tokenizer: str | None = Field(None, description="local dir or Hub name (null: train a byte-level BPE on train)")
    vocab_size: int = Field(8192, ge=260, description="vocabulary of a trained tokenizer")
    tokenizer_sample_bytes: int = Field(20_000_000, gt=0, description="bytes of training text a tokenizer is trained on")
    token_field: str = Field("input_ids", description="the token-id column of pretokenized .parquet/.jsonl/.arrow "
                             "records and Hub datasets (read as tokens, not tokenized; needs data.tokenizer)")
    bin_dtype: Literal["auto", "uint16", "uint32", "int32", "int64"] = Field(
        "auto", description="element type of flat .bin token files (auto: uint16 when the vocabulary fits, else uint32)")
    max_tokens: int | None = Field(None, ge=1, description="read sources only until this many tokens: the "
                                   "document that crosses the budget is cut, so train + held-out hold exactly this many "
                                   "(null: everything)")
    num_proc: int | None = Field(None, ge=1, description="tokenization processes (null: all cores)")

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _data_spec(cls, value: Any) -> Any:
        """A source spec is text: say what one looks like (YAML reads `hf:` or `a: b` as a mapping)."""
        from .data.sources import check_spec

        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                check_spec(item)
        return value


class TrainConfig(Section):
    """The optimisation loop shared by vanilla and meta runs (the outer loop for meta steps)."""

    steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="global sequences per optimizer step (all ranks, all micro-batches)")
    seq_len: int = Field(128, ge=2, description="tokens per training sequence")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a share of lr")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warm-up")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clipping (0: no clipping)")
    eval_every: int = Field(50, ge=0, description="validation every N steps (0: only before the first and after the last step)")
    eval_batches: int = Field(4, ge=1, description="validation batches per evaluation")
    save_every: int = Field(100, ge=0, description="checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = Field(0, ge=0, description="checkpoints kept (0: all; post-hoc dynamics reads every checkpoint)")
    log_every: int = Field(10, ge=1, description="metrics line every N steps")
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a non-finite loss or gradient norm: stop the run (status diverged), or skip the step")
    max_skipped_steps: int = Field(10, ge=1, description="with on_nonfinite=skip: the most steps skipped in a row (one more stops the run)")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        return self


class Config(Section):
    """A whole run: every section, every key (`describe_config()` lists them)."""

    run: RunConfig = Field(default_factory=RunConfig, description=RunConfig.__doc__)
    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    train: TrainConfig = Field(default_factory=TrainConfig, description=TrainConfig.__doc__)
    meta: MetaConfig = Field(default_factory=MetaConfig, description=MetaConfig.__doc__)
    dynamics: DynamicsConfig = Field(default_factory=DynamicsConfig, description=DynamicsConfig.__doc__)

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
        if self.meta.enabled:
            self._meta_against_train_and_model(ctx)
        return self

    def _meta_against_train_and_model(self, ctx: int | None) -> None:
        """The meta section against the training rows and a preset's architecture (known at load;
        a `model.hf_config` architecture is checked once it is read, `meta.config.validate_meta`)."""
        m, t = self.meta, self.train
        if m.layout == "dense":
            per_micro = m.per_micro_batch()
            rows = t.batch_size // t.grad_accum if per_micro else t.batch_size
            if rows % m.episodes_per_step:
                where = "micro-batch (train.batch_size / train.grad_accum" if per_micro else "step (train.batch_size"
                raise ValueError(f"meta.episodes_per_step: {m.episodes_per_step} does not divide the {rows} rows of "
                                 f"a meta {where}); layout=dense splits them into equal episodes: choose a divisor "
                                 f"of {rows}")
        if self.model.hf_config is not None:
            return
        layers = self.model.num_hidden_layers or PRESETS[self.model.preset].num_hidden_layers
        if m.inner_params == "head+last_n_layers" and m.inner_n_layers > layers:
            raise ValueError(f"meta.inner_n_layers: {m.inner_n_layers} exceeds the model's {layers} layers")
        if ctx is not None and m.layout == "window" and m.window_len > ctx:
            raise ValueError(f"meta.window_len: {m.window_len} exceeds the model's context {ctx}")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def launch_world_size() -> int:
    """The number of processes of this launch (torchrun sets WORLD_SIZE; 1 otherwise)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={raw!r} in the environment is not a process count") from None


def check_launch(cfg: Config, world_size: int | None = None) -> None:
    """The rules that need the number of processes (None: this launch's, `launch_world_size`),
    checked before anything is read or written; raises ConfigError."""
    world = launch_world_size() if world_size is None else world_size
    t, m = cfg.train, cfg.meta
    per_micro = t.batch_size // t.grad_accum
    if per_micro % world:
        raise ConfigError(f"train.batch_size {t.batch_size} / grad_accum {t.grad_accum} = {per_micro} sequences per "
                          f"micro-batch is not divisible by the {world} processes")
    if m.enabled and m.episodes_per_step < world:
        raise ConfigError(f"meta.episodes_per_step: {m.episodes_per_step} is fewer than the {world} processes; "
                          "every process needs at least one episode per meta step")


def default_config() -> Config:
    return Config.model_validate({})


def describe_config() -> str:
    """Every config key with its type, default and description, one per line (`metalm train --help`)."""
    return describe_fields(Config)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` (e.g. `train.lr`) in a settings tree, creating sections on the way."""
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


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as a float (YAML 1.2) rather than as a string (YAML 1.1),
    and refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, Hashable) and key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {first[key] + 1} and "
                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
                if isinstance(key, Hashable):
                    first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """`key.sub=value` strings → (key, YAML-parsed value)."""
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = _yaml_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def from_dict(tree: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config)) from None


def load_tree(path: str | Path | None, overrides: list[str] | None = None, what: str = "a config") -> dict[str, Any]:
    """The YAML mapping in `path` ({} for None) with the dotted overrides applied, not yet validated
    (run configs and experiment files share it)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{what.split()[-1]} file not found: {path}")
        try:
            loaded = _yaml_load(path.read_text(encoding="utf-8"))
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
        set_dotted(tree, key, value)
    return tree


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    return from_dict(load_tree(path, overrides))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
