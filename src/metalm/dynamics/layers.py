"""Where the decoder layers, attention modules and named weight matrices live in an HF causal LM.

Written for Llama-style models (`model.model.layers[i].self_attn.q_proj`, `.mlp.gate_proj`, ...);
other `transformers` decoders that use the same names (Mistral, Qwen2, Gemma, ...) work unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Leaf module name → component label of the dynamics rows, in display order.
COMPONENTS: dict[str, str] = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}
_ORDER = {label: i for i, label in enumerate(COMPONENTS.values())}


def backbone(model: nn.Module) -> nn.Module:
    """The base model holding `embed_tokens`, `layers` and the final `norm`."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return base if isinstance(base, nn.Module) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers, in order."""
    base = backbone(model)
    layers = getattr(base, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


def attention_module(layer: nn.Module) -> nn.Module:
    """The self-attention block of a decoder layer."""
    for name in ("self_attn", "attention", "attn"):
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"cannot find the self-attention module of {type(layer).__name__}")


def final_norm(model: nn.Module) -> nn.Module | None:
    """The normalisation applied after the last layer (its output feeds the LM head)."""
    return getattr(backbone(model), "norm", None)


def weight_matrices(model: PreTrainedModel) -> list[tuple[int, str, torch.Tensor]]:
    """(layer, component, weight) for every weight matrix: the input embedding (layer −1), the
    attention and MLP projections of each layer, and the LM head (layer num_layers). A tied LM head
    is listed under both names because it plays both roles."""
    layers = decoder_layers(model)
    embed = model.get_input_embeddings().weight
    assert isinstance(embed, torch.Tensor)  # an embedding's weight
    found: list[tuple[int, str, torch.Tensor]] = [(-1, "embed", embed)]
    for index, layer in enumerate(layers):
        in_layer = []
        for name, module in layer.named_modules():
            label = COMPONENTS.get(name.rsplit(".", 1)[-1])
            weight = getattr(module, "weight", None)
            if label is not None and isinstance(weight, torch.Tensor) and weight.ndim == 2:
                in_layer.append((index, label, weight))
        found.extend(sorted(in_layer, key=lambda item: _ORDER[item[1]]))
    found.append((len(layers), "lm_head", model.get_output_embeddings().weight))
    return found
