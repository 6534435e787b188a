"""The `meta` configuration section (DESIGN 2.3–2.4) and its checks against the model and data.

Field-level bounds and combinations that are wrong whatever the model are rejected by pydantic at
load time (`MetaConfig`, one rule function per concern); the rules against the training rows and a
preset's architecture are checked at load too (`metalm.config.Config`), those against the process
count before anything is read (`metalm.config.check_launch`). What only the data or a
`model.hf_config` architecture can tell (`validate_meta`) raises `ConfigError` once the model is
built and the occurrence index exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from ..config_base import Section
from ..errors import ConfigError

# Exact second-order MAML keeps the graph of every inner step of every adapted parameter: beyond
# this many adapted parameters it is impractical (memory), so `maml` is refused; use `fomaml`.
MAML_MAX_ADAPTED_PARAMS = 25_000_000
DEFAULT_HEAD_HIDDEN = 256


class MetaConfig(Section):
    """Meta-learned pretraining: the task, the inner/outer algorithm, the hybrid schedule.

    SMLMT candidate band: a word (sentence variant) or token id (token variant) is a class
    candidate when it occurs at least `max(band_min_count, k_shot + q_query)` times in the training
    corpus, at most `band_max_count` times (None: no cap), and is not among the `band_skip_top`
    most frequent units (function words / most frequent tokens). Special tokens and units without a
    letter or digit (punctuation, whitespace) are never candidates. A training corpus longer than
    `index_tokens` tokens is indexed over a seeded sample of that many tokens (regions of up to 2^16
    tokens, drawn by the run's seed; `meta.occurrences`): the counts — and so the band — are then
    occurrences in the sample, and episodes are cut from the sampled regions.

    `hybrid` is the share of optimizer steps that are meta steps under `schedule` random or
    interleave (under `microbatch`: the probability that a micro-batch is a meta micro-batch); under
    `weighted` every step optimises `weight`·L_meta + (1 − `weight`)·L_AR and `hybrid` is not used.

    Token-variant layouts (DESIGN 2.3): `window` — one labelled occurrence per row of `window_len`
    tokens, K support and Q query rows per class; `dense` (the paper's) — the episode's rows are
    training sequences of `train.seq_len` tokens and `k_shot` / `q_query` are the labelled support /
    query positions *per row* (`window_len` is not used).
    """

    enabled: bool = Field(False, description="run meta-learned pretraining (meta steps next to next-token steps)")
    task: Literal["smlmt", "lm"] = Field("smlmt", description="episode kind: SMLMT classification or LM tasks "
                                         "(one document or group per episode, next-token loss)")
    smlmt_variant: Literal["sentence", "token"] = Field(
        "sentence", description="SMLMT classes: whole words masked in text windows (sentence) or token ids (token)")
    algorithm: Literal["fomaml", "maml", "reptile"] = Field(
        "fomaml", description="outer gradient: first-order MAML, exact second-order MAML, or Reptile")
    inner_params: Literal["head", "head+last_n_layers", "all"] = Field(
        "head", description="parameters the inner loop adapts: the head only (ANIL), the head and the last n "
        "layers, or everything")
    inner_n_layers: int = Field(1, ge=1, description="n of head+last_n_layers")
    inner_steps: int = Field(10, ge=1, description="inner-loop steps k per episode")
    inner_lr: float = Field(0.5, gt=0, description="inner learning rate α; 0.5 suits head-only loops (unit-norm "
                            "SMLMT features), adapting layers wants ~0.01")
    inner_optimizer: Literal["sgd", "adamw"] = Field("sgd", description="inner-loop optimizer")
    inner_weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay, in the inner loop only")
    n_way: int = Field(5, ge=2, description="N: classes per SMLMT episode")
    k_shot: int = Field(4, ge=1, description="K: support items per class in the window layout; in the dense "
                        "layout a cap on labelled support positions per row (the shots a class gets depend on "
                        "the rows: metrics rows record the realised episode); LM tasks: support sequences")
    q_query: int = Field(4, ge=1, description="Q: query items per class in the window layout; in the dense layout "
                         "a cap on labelled query positions per row; LM tasks: query sequences")
    episodes_per_step: int = Field(1, ge=1, description="global meta batch (all ranks) of one optimizer step")
    head_init: Literal["zero", "proto", "learned"] | None = Field(
        None, description="SMLMT episode head initialisation; null: learned (token variant), proto (sentence)")
    pool: Literal["last", "mask"] | None = Field(
        None, description="SMLMT read-out position; null: last (sentence); the token variant reads the mask")
    window_len: int = Field(64, ge=4, description="tokens per SMLMT window / per LM-task sequence")
    band_min_count: int = Field(20, ge=1, description="SMLMT candidates occur at least max(this, k_shot + q_query) "
                                "times in the corpus (in its index sample, see index_tokens)")
    band_max_count: int | None = Field(None, ge=1, description="SMLMT candidates occur at most this many times "
                                       "(null: no cap)")
    band_skip_top: int = Field(100, ge=0, description="the most frequent units excluded from SMLMT candidates")
    index_tokens: int = Field(16_000_000, ge=1024, description="SMLMT occurrence index: built over a seeded sample of "
                              "this many training tokens (the whole corpus when smaller); band counts are over it")
    hybrid: float = Field(0.5, ge=0, le=1, description="share of optimizer steps that are meta steps "
                          "(schedule random or interleave)")
    schedule: Literal["random", "interleave", "weighted", "microbatch"] = Field(
        "interleave", description="which steps are meta steps: seeded random draw, evenly interleaved, every "
        "step weighted (weight·L_meta + (1 − weight)·L_AR), or per micro-batch (the paper's: each micro-batch "
        "is meta with probability hybrid, gradients summed into one optimizer step)")
    weight: float = Field(0.5, ge=0, le=1, description="λ of the weighted schedule")
    layout: Literal["window", "dense"] = Field(
        "window", description="token-variant episode rows: one labelled occurrence per window_len-token window "
        "(window), or training rows of train.seq_len tokens with up to k_shot support and q_query query "
        "positions labelled per row (dense, the paper's)")
    head_layers: int = Field(1, ge=1, description="layers of the persistent learned head: 1 = linear; more = an "
                             "MLP (ReLU hidden layers of head_hidden units, as the paper's code) whose "
                             "vocabulary-indexed output layer is sliced to the episode's classes")
    head_hidden: int | None = Field(None, ge=1, description="hidden width of the MLP learned head (head_layers > 1; "
                                    f"null: {DEFAULT_HEAD_HIDDEN})")
    casefold: bool = Field(False, description="sentence variant: case variants of a word are one class (Arm = arm)")
    feature_scale: Literal["inv_sqrt_d", "none"] = Field(
        "inv_sqrt_d", description="SMLMT features read by the episode head: final hidden states scaled by "
        "1/sqrt(d) (unit norm), or unscaled (as the paper's code, whose inner_lr 0.01 acts on raw states)")
    untouched: Literal["freeze", "momentum"] = Field(
        "freeze", description="parameters a meta step does not reach (e.g. the LM head): no gradient, AdamW "
        "leaves them and their state alone (freeze), or a zero gradient, AdamW moves them by momentum (momentum)")
    control: Literal["none", "momentum", "skip"] = Field(
        "none", description="control arm: meta steps on the same schedule do no meta work and apply a zero "
        "gradient to exactly the parameters the meta work reaches, the others treated as untouched says "
        "(momentum), or nothing (skip); none: the real meta arm")

    @model_validator(mode="after")
    def _combinations(self) -> MetaConfig:
        """Combinations that mean nothing whatever the model, checked per concern (the keys stay one
        flat `meta` section): the episode task, the episode head, the algorithm, the SMLMT band, the
        schedule."""
        for check in (_task_rules, _head_rules, _algorithm_rules, _band_rules, _schedule_rules):
            check(self)
        return self

    def per_micro_batch(self) -> bool:
        """Whether the schedule decides per micro-batch (`microbatch`): a unit of meta work is then
        one micro-batch's rows, not the whole step's."""
        return self.schedule == "microbatch"

    def resolved_head_hidden(self) -> int:
        """Hidden width of the MLP learned head (head_layers > 1)."""
        return self.head_hidden if self.head_hidden is not None else DEFAULT_HEAD_HIDDEN

    def resolved_head_init(self) -> str | None:
        """The head initialisation actually used (None for LM tasks)."""
        if self.task == "lm":
            return None
        if self.head_init is not None:
            return self.head_init
        return "learned" if self.smlmt_variant == "token" else "proto"

    def resolved_pool(self) -> str | None:
        if self.task == "lm":
            return None
        if self.smlmt_variant == "token":
            return "mask"
        return self.pool or "last"

    def min_count(self) -> int:
        return max(self.band_min_count, self.k_shot + self.q_query)


# -- the cross-field rules of `MetaConfig`, one function per concern (each raises ValueError) ---------
def _task_rules(c: MetaConfig) -> None:
    """Episode task, SMLMT variant, layout, read-out position and casefolding."""
    if c.layout == "dense" and (c.task != "smlmt" or c.smlmt_variant != "token"):
        raise ValueError("layout='dense' labels token occurrences inside training rows: it needs task=smlmt "
                         "and smlmt_variant=token (remove meta.layout or set meta.smlmt_variant=token)")
    if c.casefold and (c.task != "smlmt" or c.smlmt_variant != "sentence"):
        raise ValueError("casefold merges case variants of sentence-variant class words: it needs task=smlmt "
                         "and smlmt_variant=sentence (token classes are token ids)")
    if c.task == "lm":
        if c.pool is not None:
            raise ValueError(f"pool={c.pool!r} applies to SMLMT episodes only; LM tasks have no pooled "
                             "read-out (remove meta.pool or set meta.task=smlmt)")
        if c.head_init is not None:
            raise ValueError(f"head_init={c.head_init!r} applies to SMLMT only; LM tasks adapt the "
                             "model's own LM head (remove meta.head_init)")
        return
    if c.smlmt_variant == "sentence" and c.head_init == "learned":
        raise ValueError("head_init='learned' needs classes with a fixed identity (a vocabulary-indexed "
                         "head): use smlmt_variant=token, or head_init zero/proto for the sentence variant")
    if c.smlmt_variant == "token" and c.pool == "last":
        raise ValueError("pool='last' does not apply to smlmt_variant=token: each masked position is "
                         "classified at its own hidden state (remove meta.pool)")


def _head_rules(c: MetaConfig) -> None:
    """The persistent learned head's shape."""
    if c.head_layers > 1 and c.resolved_head_init() != "learned":
        raise ValueError(f"head_layers={c.head_layers} shapes the persistent learned head: it needs "
                         "head_init=learned (smlmt_variant=token); zero and proto heads are linear")
    if c.head_hidden is not None and c.head_layers == 1:
        raise ValueError("head_hidden applies to an MLP learned head only: set meta.head_layers > 1 or remove "
                         "meta.head_hidden")


def _algorithm_rules(c: MetaConfig) -> None:
    """The inner/outer algorithm against what the inner loop adapts."""
    if (c.task == "smlmt" and c.algorithm == "reptile" and c.inner_params == "head"
            and c.resolved_head_init() in ("zero", "proto")):
        raise ValueError(f"algorithm=reptile with inner_params=head and head_init={c.resolved_head_init()!r} "
                         "updates nothing: the adapted head is not a model parameter; use head_init=learned "
                         "(token variant) or adapt layers (inner_params head+last_n_layers / all)")


def _band_rules(c: MetaConfig) -> None:
    """The SMLMT frequency band."""
    if c.band_max_count is not None and c.band_max_count < c.min_count():
        raise ValueError(f"band_max_count {c.band_max_count} is below the minimum count {c.min_count()} "
                         "(max(band_min_count, k_shot + q_query)): the band is empty")


def _schedule_rules(c: MetaConfig) -> None:
    """What meta steps do (control arms, untouched parameters) needs meta steps."""
    if not c.enabled and (c.control != "none" or c.untouched != "freeze"):
        key = "control" if c.control != "none" else "untouched"
        raise ValueError(f"{key}={getattr(c, key)!r} changes what meta steps do, but meta.enabled is false: "
                         "there are no meta steps (set meta.enabled=true, or remove meta." + key + ")")


@dataclass(frozen=True)
class VocabStats:
    """What the data offers an episode sampler: candidate classes (SMLMT) or task units (LM)."""

    unit: str  # "words", "tokens", "documents" or "groups"
    n_candidates: int


def adapted_parameter_count(meta_cfg: MetaConfig, model_config) -> int:
    """Parameters adapted in the inner loop (episode head excluded), counted on a meta-device model."""
    import torch
    from transformers import AutoModelForCausalLM

    from .backbone import inner_parameter_names

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    names = set(inner_parameter_names(model, meta_cfg))
    return sum(p.numel() for n, p in model.named_parameters() if n in names)


def validate_meta(meta_cfg: MetaConfig, model_config, vocab_stats: VocabStats | None = None) -> None:
    """Checks that need the model (a transformers config, or a model) or the data; raises ConfigError."""
    if not meta_cfg.enabled:
        return
    model_config = getattr(model_config, "config", model_config)
    layers = getattr(model_config, "num_hidden_layers", None)
    if meta_cfg.inner_params == "head+last_n_layers":
        if layers is not None and meta_cfg.inner_n_layers > layers:
            raise ConfigError(f"meta.inner_n_layers: {meta_cfg.inner_n_layers} exceeds the model's "
                              f"{layers} layers")
        if getattr(model_config, "model_type", None) not in LLAMA_LIKE:
            raise ConfigError(f"meta.inner_params: head+last_n_layers needs a Llama-style decoder "
                              f"({', '.join(sorted(LLAMA_LIKE))}); got model_type "
                              f"{getattr(model_config, 'model_type', None)!r}; use head or all")
    ctx = getattr(model_config, "max_position_embeddings", None)
    if ctx is not None and meta_cfg.window_len > ctx and meta_cfg.layout == "window":
        raise ConfigError(f"meta.window_len: {meta_cfg.window_len} exceeds the model's context {ctx}")
    if meta_cfg.algorithm == "maml" and meta_cfg.inner_params != "head":
        count = adapted_parameter_count(meta_cfg, model_config)
        if count > MAML_MAX_ADAPTED_PARAMS:
            raise ConfigError(
                f"meta.algorithm: exact second-order maml with inner_params={meta_cfg.inner_params} would adapt "
                f"{count / 1e6:.1f}M parameters (limit {MAML_MAX_ADAPTED_PARAMS / 1e6:.0f}M); use fomaml, or "
                "inner_params=head / head+last_n_layers with fewer layers, or a smaller preset")
    if vocab_stats is not None:
        if meta_cfg.task == "smlmt" and meta_cfg.n_way > vocab_stats.n_candidates:
            raise ConfigError(
                f"meta.n_way: {meta_cfg.n_way} exceeds the {vocab_stats.n_candidates} candidate "
                f"{vocab_stats.unit} in the frequency band (meta.band_min_count={meta_cfg.band_min_count}, "
                f"band_max_count={meta_cfg.band_max_count}, band_skip_top={meta_cfg.band_skip_top}, "
                f"at least k_shot + q_query = {meta_cfg.k_shot + meta_cfg.q_query} occurrences)")
        if meta_cfg.task == "lm" and vocab_stats.n_candidates < 1:
            raise ConfigError(
                f"meta.task=lm: no {vocab_stats.unit[:-1]} holds k_shot + q_query = "
                f"{meta_cfg.k_shot + meta_cfg.q_query} non-overlapping sequences of window_len + 1 = "
                f"{meta_cfg.window_len + 1} tokens; lower meta.window_len, k_shot or q_query")


# Decoders whose backbone is embed_tokens → layers[i] → norm with rotary position embeddings, so the
# last n layers can be re-run alone on cached hidden states (meta.backbone.LastLayersPartition).
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "olmo2"})
