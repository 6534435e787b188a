"""Llama-style decoder presets, model construction and the FLOPs formula of DESIGN 2.5.

Models are plain `transformers.LlamaForCausalLM` (RMSNorm, RoPE, SwiGLU, grouped-query
attention) so every checkpoint loads with `AutoModelForCausalLM.from_pretrained`. Any other
`transformers` causal-LM config may be used instead through `hf_config`.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from .errors import ConfigError
from .presets import PRESETS, Preset


def llama_config(preset: str | Preset, vocab_size: int | None = None, **overrides: Any) -> LlamaConfig:
    """The `LlamaConfig` of a preset, with `vocab_size` and any LlamaConfig field overridden."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"model.preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    fields = asdict(replace(preset, vocab_size=vocab_size or preset.vocab_size))
    fields.pop("note")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    defaults = dict(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
                    attention_bias=False, mlp_bias=False, attention_dropout=0.0, initializer_range=0.02,
                    use_cache=False)
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise ConfigError(
            f"model: hidden_size {fields['hidden_size']} is not divisible by num_attention_heads "
            f"{fields['num_attention_heads']}"
        )
    if fields["num_attention_heads"] % fields["num_key_value_heads"]:
        raise ConfigError(
            f"model: num_attention_heads {fields['num_attention_heads']} is not divisible by "
            f"num_key_value_heads {fields['num_key_value_heads']}"
        )
    return LlamaConfig(**{**defaults, **fields})


def build_model(
    preset: str | Preset = "nano",
    vocab_size: int | None = None,
    *,
    hf_config: str | None = None,
    special_token_ids: dict[str, int] | None = None,
    attn_implementation: str = "sdpa",
    **overrides: Any,
) -> PreTrainedModel:
    """A freshly initialised causal LM: a preset Llama, or any `transformers` config (`hf_config`).

    Initialisation uses the global torch RNG: seed it first for reproducible weights.
    """
    if hf_config:
        try:
            config = AutoConfig.from_pretrained(hf_config)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model.hf_config: cannot load {hf_config!r}: {exc}") from None
        if vocab_size:
            config.vocab_size = vocab_size
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
    else:
        config = llama_config(preset, vocab_size, **overrides)
    for name, token_id in (special_token_ids or {}).items():
        setattr(config, f"{name}_token_id", token_id)
    config._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise ConfigError("model.hf_config: the model has no output embeddings (not a causal LM)")
    return model


def parameter_counts(model: PreTrainedModel) -> dict[str, int]:
    """Total parameters and non-embedding parameters (input embedding and LM head excluded)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    embedding_params = sum(p.numel() for p in model.parameters() if id(p) in embedding)
    return {"total": total, "non_embedding": total - embedding_params}


def backbone_flops_per_token(model: PreTrainedModel, seq_len: int) -> int:
    """Forward matmul FLOPs per token of the backbone alone (no output head), DESIGN 2.5:
    2 × non-embedding parameters + attention 2 × layers × seq × d."""
    cfg = model.config
    return 2 * parameter_counts(model)["non_embedding"] + 2 * cfg.num_hidden_layers * seq_len * cfg.hidden_size


def head_flops(d_model: int, n_outputs: int) -> int:
    """Forward FLOPs per position of a linear head d_model → n_outputs (LM head or classifier)."""
    return 2 * d_model * n_outputs


def forward_flops_per_token(model: PreTrainedModel, seq_len: int) -> int:
    """Forward matmul FLOPs per token of a next-token step: backbone + LM head 2 × d × vocab.
    Backward costs twice the forward."""
    cfg = model.config
    return backbone_flops_per_token(model, seq_len) + head_flops(cfg.hidden_size, cfg.vocab_size)


def describe(model: PreTrainedModel, seq_len: int) -> str:
    """One line with parameter counts and FLOPs per token, printed at the start of a run."""
    counts = parameter_counts(model)
    fwd = forward_flops_per_token(model, seq_len)
    return (
        f"model: {counts['total'] / 1e6:.2f}M parameters ({counts['non_embedding'] / 1e6:.2f}M non-embedding), "
        f"{fwd / 1e6:.1f} MFLOPs/token forward, {3 * fwd / 1e6:.1f} MFLOPs/token forward+backward at seq {seq_len}"
    )


def is_llama(model: torch.nn.Module) -> bool:
    return isinstance(model, LlamaForCausalLM)
