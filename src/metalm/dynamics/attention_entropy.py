"""Attention-head entropy (DESIGN 2.7): how spread out each head's causal attention is.

For layer ℓ and head h, the entropy at query position t is H_t = −Σ_{j≤t} a_tj log a_tj (nats),
which lies in [0, log(t+1)]; the read-out is its mean over probe sequences and positions, and
the mean of H_t / log(t+1) over positions t ≥ 1 (position 0 sees one key: always 0/0).

The probabilities come from a separate probe forward with the eager attention kernel (the only one
that materialises them); training itself keeps its fast kernel (the tests check the probabilities against an independent
computation from the queries and keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from .layers import attention_module, decoder_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
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
def _eager_probe(model: PreTrainedModel, input_ids: torch.Tensor, sink) -> None:
    handles = _attention_output_hooks(model, sink)
    try:
        with eager_attention(model):
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


def attention_entropy_by_layer(model: PreTrainedModel,
                               input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(entropy[heads], normalised entropy[heads]) per layer, from the model's own attention
    probabilities; each layer's L × L maps are reduced as soon as they are produced."""
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    _eager_probe(model, input_ids, lambda index, probs: results.__setitem__(index, head_entropy(probs)))
    return [results[i] for i in range(len(results))]


def attention_probs_by_layer(model: PreTrainedModel, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The model's own attention probabilities [B, H, L, L] per layer (eager kernel)."""
    results: dict[int, torch.Tensor] = {}
    _eager_probe(model, input_ids, lambda index, probs: results.__setitem__(index, probs.detach().clone()))
    return [results[i] for i in range(len(results))]
