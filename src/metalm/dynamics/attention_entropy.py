"""Attention-head entropy (DESIGN 2.7): how spread out each head's causal attention is.

For layer ℓ and head h, the entropy at query position t is H_t = −Σ_{j≤t} a_tj log a_tj (nats),
which lies in [0, log(t+1)]; the read-out is its mean over probe sequences and positions, and
the mean of H_t / log(t+1) over positions t ≥ 1 (position 0 sees one key: always 0/0).

The probabilities come from a separate probe forward with the eager attention kernel (the only one
that materialises them); training itself keeps its fast kernel. `attention_probs_from_qk` rebuilds
them from the queries and keys as an independent check.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layers import attention_module, decoder_layers


def head_entropy(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy, normalised entropy), each of shape [heads], from causal attention probabilities
    of shape [batch, heads, L, L] (query × key). Keys after the query are ignored even if nonzero."""
    if probs.ndim != 4 or probs.shape[-1] != probs.shape[-2]:
        raise ValueError(f"attention probabilities must be [batch, heads, L, L], got {tuple(probs.shape)}")
    batch, heads, length, _ = probs.shape
    if length < 2:
        raise ValueError("attention entropy needs sequences of at least 2 tokens")
    visible = torch.ones(length, length, dtype=torch.bool, device=probs.device).tril()
    norm = torch.log(torch.arange(1, length + 1, dtype=torch.float64, device=probs.device))
    total = torch.zeros(heads, dtype=torch.float64, device=probs.device)
    total_norm = torch.zeros_like(total)
    for seq in probs:  # one sequence at a time bounds the float64 copy to heads × L × L
        a = seq.to(torch.float64).masked_fill(~visible, 0.0)
        per_position = -torch.special.xlogy(a, a).sum(-1)  # [heads, L]
        total += per_position.sum(-1)
        total_norm += (per_position[:, 1:] / norm[1:]).sum(-1)
    return total / (batch * length), total_norm / (batch * (length - 1))


def causal_attention_probs(query: torch.Tensor, key: torch.Tensor, scaling: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scaling + causal mask) in float64, queries [B, H, L, d] and keys
    [B, H_kv, L, d] (grouped-query attention: each key head serves H / H_kv query heads)."""
    heads, kv_heads = query.shape[1], key.shape[1]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key heads")
    key = key.repeat_interleave(heads // kv_heads, dim=1)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = query.to(torch.float64) @ key.to(torch.float64).transpose(-1, -2) * scaling
    length = scores.shape[-1]
    future = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(future, -math.inf).softmax(-1)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily switch an HF model to the eager attention kernel, restoring it afterwards."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _attention_output_hooks(model: nn.Module, sink) -> list:
    handles = []
    for index, layer in enumerate(decoder_layers(model)):

        def hook(module, args, output, index=index):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(f"layer {index}: the attention module returned no probabilities")
            sink(index, weights)

        handles.append(attention_module(layer).register_forward_hook(hook))
    return handles


@torch.no_grad()
def _eager_probe(model: nn.Module, input_ids: torch.Tensor, sink) -> None:
    handles = _attention_output_hooks(model, sink)
    try:
        with eager_attention(model):
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


def attention_entropy_by_layer(model: nn.Module, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(entropy[heads], normalised entropy[heads]) per layer, from the model's own attention
    probabilities; each layer's L × L maps are reduced as soon as they are produced."""
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    _eager_probe(model, input_ids, lambda index, probs: results.__setitem__(index, head_entropy(probs)))
    return [results[i] for i in range(len(results))]


def attention_probs_by_layer(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The model's own attention probabilities [B, H, L, L] per layer (eager kernel)."""
    results: dict[int, torch.Tensor] = {}
    _eager_probe(model, input_ids, lambda index, probs: results.__setitem__(index, probs.detach().clone()))
    return [results[i] for i in range(len(results))]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def attention_probs_from_qk(model: nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Attention probabilities [B, H, L, L] per layer rebuilt from each layer's input: q and k
    projections, rotary position embedding (the cos/sin the model passes in), grouped-query key
    sharing, causal softmax. Works with any attention kernel; Llama-style attention only."""
    captured: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}
    handles = []
    for index, layer in enumerate(decoder_layers(model)):

        def pre_hook(module, args, kwargs, index=index):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            captured[index] = (hidden.detach(), kwargs["position_embeddings"])

        handles.append(attention_module(layer).register_forward_pre_hook(pre_hook, with_kwargs=True))
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    probs = []
    for index, layer in enumerate(decoder_layers(model)):
        attn = attention_module(layer)
        hidden, (cos, sin) = captured[index]
        batch, length, _ = hidden.shape
        head_dim = attn.head_dim
        q = attn.q_proj(hidden).view(batch, length, -1, head_dim).transpose(1, 2)
        k = attn.k_proj(hidden).view(batch, length, -1, head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        probs.append(causal_attention_probs(q, k, attn.scaling))
    return probs
