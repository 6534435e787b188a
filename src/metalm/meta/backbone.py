"""The backbone cut into a frozen lower part and an adapted upper part, so frozen layers run once.

The backbone is cut into a *lower* part, frozen during adaptation and run once per episode, and an
*upper* part whose parameters are adapted and which is re-run (functionally, with fast weights) on
the cached lower output at every inner step:

- `head`: lower = the whole backbone, upper = nothing — the inner loop touches only the head, on
  features computed once (the efficiency rule of DESIGN 2.4);
- `head+last_n_layers`: lower = embeddings + first L−n layers, upper = last n layers + final norm
  (Llama-style decoders, whose layers can be called one by one);
- `all`: lower = nothing, upper = the whole backbone.

FLOPs per token of each part follow DESIGN 2.5 exactly (`backbone_flops_per_token` = lower + upper).
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError
from ..model import backbone_flops_per_token
from .inner import Params
from .outer import outer_rule

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _base(model: PreTrainedModel) -> tuple[nn.Module, str]:
    """The backbone module and its parameter-name prefix in the full model (e.g. 'model.')."""
    base = model.base_model
    if base is model:
        raise ConfigError("meta: the model has no separate backbone (base_model) to read hidden states from")
    return base, model.base_model_prefix + "."


def head_parameter_names(model: PreTrainedModel) -> list[str]:
    """Names of the output (LM head) parameters; LM tasks adapt them as their head."""
    out = model.get_output_embeddings()
    ids = {id(p) for p in out.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def inner_parameter_names(model: PreTrainedModel, meta_cfg) -> list[str]:
    """Model parameters adapted in the inner loop (the SMLMT episode head is not a model parameter).

    LM tasks also adapt the model's LM head (their 'head')."""
    names = list(backbone_partition(model, meta_cfg).upper_names)
    if meta_cfg.task == "lm":
        names += [n for n in head_parameter_names(model) if n not in names]
    return names


def outer_parameter_names(model: PreTrainedModel, meta_cfg) -> list[str]:
    """Model parameters a meta step's outer gradient reaches (the learned head aside), in model order.

    Rules that backpropagate the query loss (FOMAML, MAML) reach the whole backbone — the query
    features are computed from it with a graph — and, for LM tasks, the LM head; Reptile reaches
    only θ₀'s entries, the parameters the inner loop adapts. A momentum control arm (DESIGN 2.4)
    zero-fills exactly these (and the learned head), so it differs from its meta arm only in the
    value of the meta gradient."""
    if not outer_rule(meta_cfg.algorithm).query_backward:
        reached = set(inner_parameter_names(model, meta_cfg))
    else:
        base, prefix = _base(model)
        reached = {prefix + n for n, _ in base.named_parameters()}
        if meta_cfg.task == "lm":
            reached.update(head_parameter_names(model))
    return [n for n, _ in model.named_parameters() if n in reached]


def _layer_flops_per_token(layer: nn.Module, seq_len: int, d_model: int) -> int:
    return 2 * sum(p.numel() for p in layer.parameters()) + 2 * seq_len * d_model


LLAMA_PARTS = ("embed_tokens", "layers", "norm", "rotary_emb")


def llama_parts(base: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    """(embed_tokens, layers, norm) of a Llama-style decoder `base`, typed."""
    embed, layers, norm = base.embed_tokens, base.layers, base.norm
    assert isinstance(embed, nn.Module) and isinstance(layers, nn.ModuleList) and isinstance(norm, nn.Module)
    return embed, layers, norm


@functools.cache
def _mask_takes_cache_position() -> bool:
    """transformers 5.0–5.x: `create_causal_mask(config, embeds, mask, cache_position, past_key_values,
    …)`; later releases dropped `cache_position` (the fourth parameter is then the cache)."""
    from transformers.masking_utils import create_causal_mask

    return "cache_position" in inspect.signature(create_causal_mask).parameters


def decoder_context(base: nn.Module, h: torch.Tensor) -> dict:
    """What each decoder layer takes besides its input: the causal mask, positions and rotary
    embeddings of rows `h` [B, L, d]. The mask is built without position ids: episode rows are never
    packed sequences, and transformers' packed-sequence check (given position ids and no mask) reads
    a device tensor on the host — a host sync per forward on CUDA."""
    from transformers.masking_utils import create_causal_mask

    position_ids = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    if _mask_takes_cache_position():
        mask = create_causal_mask(base.config, h, None, position_ids[0], None, position_ids=None)
    else:  # positionally: later releases name the fourth parameter (the cache) `cache` or `past_key_values`
        mask = create_causal_mask(base.config, h, None, None, position_ids=None)
    rotary = base.rotary_emb
    assert isinstance(rotary, nn.Module)  # a Llama-style decoder's submodule
    return {"attention_mask": mask, "position_ids": position_ids,
            "position_embeddings": rotary(h, position_ids=position_ids)}


class BackbonePartition:
    """Lower (run once, frozen) and upper (re-run with fast weights) parts of the backbone.

    `upper_names` are full model parameter names; `upper(params, x)` takes a dict keyed by them.
    `flops_per_token` and the `*_has_layers` flags tell the episode accounting (`meta.flops`) what
    each part costs.
    """

    upper_names: list[str]

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.base, self.prefix = _base(model)
        self.d_model = model.config.hidden_size

    def upper_parameters(self) -> Params:
        """The model parameters of the upper part (the adapted backbone parameters), by full name."""
        named = dict(self.model.named_parameters())
        return {n: named[n] for n in self.upper_names}

    def lower(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def upper(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flops_per_token(self, seq_len: int) -> tuple[int, int]:
        """(lower, upper) forward FLOPs per token at `seq_len`."""
        raise NotImplementedError

    @property
    def lower_has_layers(self) -> bool:
        return True

    @property
    def upper_has_layers(self) -> bool:
        return True


class HeadOnlyPartition(BackbonePartition):
    """ANIL: the whole backbone is frozen during adaptation; features are computed once."""

    upper_names: list[str] = []

    def lower(self, input_ids):
        if getattr(self.base.config, "model_type", None) != "llama":  # other decoders: their own forward
            return self.base(input_ids=input_ids, use_cache=False).last_hidden_state
        embed, layers, norm = llama_parts(self.base)
        h = embed(input_ids)  # LlamaModel.forward's steps, without its host sync
        ctx = decoder_context(self.base, h)
        for layer in layers:
            h = layer(h, **ctx)
        return norm(h)

    def upper(self, params, x):
        return x

    def flops_per_token(self, seq_len):
        return backbone_flops_per_token(self.model, seq_len), 0

    @property
    def upper_has_layers(self):
        return False


class FullPartition(BackbonePartition):
    """`all`: every backbone parameter is adapted; the backbone runs functionally every inner step."""

    def __init__(self, model):
        super().__init__(model)
        self.upper_names = [self.prefix + n for n, _ in self.base.named_parameters()]

    def lower(self, input_ids):
        return input_ids

    def upper(self, params, x):
        local = {n[len(self.prefix):]: v for n, v in params.items() if n.startswith(self.prefix)}
        return functional_call(self.base, local, (), {"input_ids": x, "use_cache": False}).last_hidden_state

    def flops_per_token(self, seq_len):
        return 0, backbone_flops_per_token(self.model, seq_len)

    @property
    def lower_has_layers(self):
        return False


class LastLayersPartition(BackbonePartition):
    """`head+last_n_layers` on a Llama-style decoder: the first L−n layers run once; the last n and
    the final norm re-run on their cached output with fast weights."""

    def __init__(self, model, n_upper: int):
        super().__init__(model)
        base = self.base
        missing = [attr for attr in LLAMA_PARTS if not hasattr(base, attr)]
        if missing:
            raise ConfigError("meta.inner_params: head+last_n_layers needs a Llama-style decoder "
                              f"(backbone without {missing[0]!r}); use head or all")
        self.embed, self.layers, self.norm = llama_parts(base)
        layers, norm = self.layers, self.norm
        self.n_layers = len(layers)
        if not 1 <= n_upper <= self.n_layers:
            raise ConfigError(f"meta.inner_n_layers: {n_upper} is not within 1..{self.n_layers}")
        self.first = self.n_layers - n_upper
        self.upper_names = [f"{self.prefix}layers.{i}.{n}" for i in range(self.first, self.n_layers)
                            for n, _ in layers[i].named_parameters()]
        self.upper_names += [f"{self.prefix}norm.{n}" for n, _ in norm.named_parameters()]

    def lower(self, input_ids):
        h = self.embed(input_ids)
        ctx = decoder_context(self.base, h)
        for layer in self.layers[: self.first]:
            h = layer(h, **ctx)
        return h

    def upper(self, params, x):
        ctx = decoder_context(self.base, x)
        h = x
        for i in range(self.first, self.n_layers):
            p = f"{self.prefix}layers.{i}."
            local = {n[len(p):]: v for n, v in params.items() if n.startswith(p)}
            h = functional_call(self.layers[i], local, (h,), ctx)
        p = f"{self.prefix}norm."
        return functional_call(self.norm, {n[len(p):]: v for n, v in params.items() if n.startswith(p)}, (h,))

    def flops_per_token(self, seq_len):
        upper = sum(_layer_flops_per_token(self.layers[i], seq_len, self.d_model)
                    for i in range(self.first, self.n_layers))
        upper += 2 * sum(p.numel() for p in self.norm.parameters())
        return backbone_flops_per_token(self.model, seq_len) - upper, upper

    @property
    def lower_has_layers(self):
        return self.first > 0


def backbone_partition(model: PreTrainedModel, meta_cfg) -> BackbonePartition:
    if meta_cfg.inner_params == "head":
        return HeadOnlyPartition(model)
    if meta_cfg.inner_params == "all":
        return FullPartition(model)
    return LastLayersPartition(model, meta_cfg.inner_n_layers)
