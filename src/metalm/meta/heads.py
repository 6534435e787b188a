"""Episode classifier heads: zero, ProtoMAML prototypes, and the persistent vocabulary-indexed head.

A head is a dict {"weight": [N, d], "bias": [N]}; logits = F·Wᵀ + b. An MLP head (the learned head
with `meta.head_layers` > 1) also holds hidden layers "hidden.i.weight" / "hidden.i.bias", applied
in order with a ReLU after each: x ← relu(x·W_iᵀ + b_i), then logits = x·Wᵀ + b.

- zero: W = 0, b = 0 (every class equally likely before adaptation);
- proto (Triantafillou et al. 2020, ProtoMAML): with c_k the mean support feature of class k,
  W_k = 2·c_k and b_k = −‖c_k‖², so logit_k = −‖f − c_k‖² + ‖f‖²: the softmax of the initial head
  equals a prototypical network's (squared Euclidean distance) — the linear form of the
  prototypes, not the plain prototypes W = c_k;
- learned (token variant): rows of a persistent V×d weight and V bias indexed by the episode's
  class token ids — a meta-learned initialisation carried across episodes and trained by the outer
  optimizer. It starts as a copy of the model's LM head weight (bias zero), so a model that already
  knows its tokens starts from its own output embeddings; it is not part of the exported model.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Head = dict[str, torch.Tensor]


def hidden_layer_keys(n_hidden: int) -> list[tuple[str, str]]:
    """(weight key, bias key) of each hidden layer of an MLP head, in order."""
    return [(f"hidden.{i}.weight", f"hidden.{i}.bias") for i in range(n_hidden)]


def head_logits(features: torch.Tensor, head: Head) -> torch.Tensor:
    """The head's logits in at least float32, also under bf16 autocast (which would run these matmuls,
    and so the episode's logits and loss, in bf16): the features and head are float32 already."""
    with torch.autocast(features.device.type, enabled=False):
        x = at_least_fp32(features)
        n_hidden = sum(1 for k in head if k.startswith("hidden.") and k.endswith(".weight"))
        for w, b in hidden_layer_keys(n_hidden):
            x = torch.relu(x @ at_least_fp32(head[w]).t() + at_least_fp32(head[b]))
        logits = x @ at_least_fp32(head["weight"]).t()
        bias = head.get("bias")
        return logits if bias is None else logits + at_least_fp32(bias)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half precision is upcast; float64 stays)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def zero_head(n_way: int, d_model: int, like: torch.Tensor) -> Head:
    return {"weight": torch.zeros(n_way, d_model, dtype=like.dtype, device=like.device),
            "bias": torch.zeros(n_way, dtype=like.dtype, device=like.device)}


def prototypes(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean feature of each class: [n_way, d] (differentiable in `features`)."""
    sums = torch.zeros(n_way, features.shape[-1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, labels, features)
    # Counted by index_add, not bincount: bincount sizes its output from labels.max(), a host sync on CUDA.
    counts = torch.zeros(n_way, dtype=features.dtype, device=features.device)
    counts = counts.index_add(0, labels, torch.ones_like(labels, dtype=features.dtype)).clamp_min(1)
    return sums / counts[:, None]


def proto_head(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> Head:
    c = prototypes(features, labels, n_way)
    return {"weight": 2 * c, "bias": -(c * c).sum(-1)}


class LearnedHead(nn.Module):
    """The persistent vocabulary-indexed head of the token variant (part of the checkpoint).

    Linear (`layers` = 1): a V×d weight and V bias, initialised from the model's LM head. MLP
    (`layers` > 1, the paper's code): `layers` − 1 hidden layers of `hidden` units with a ReLU
    after each (d → hidden → … → hidden), then a V×hidden output layer; nn.Linear's default
    initialisation from a generator seeded by `seed`. Only the output layer is vocabulary-indexed
    and sliced to the episode's classes; the hidden layers are shared by every episode."""

    def __init__(self, vocab_size: int, d_model: int, layers: int = 1, hidden: int = 256):
        super().__init__()
        widths = [d_model] + [hidden] * (layers - 1)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.weight = nn.Parameter(torch.zeros(vocab_size, widths[-1]))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    @classmethod
    def from_model(cls, model: PreTrainedModel, layers: int = 1, hidden: int = 256, seed: int = 0) -> "LearnedHead":
        out = model.get_output_embeddings().weight
        head = cls(out.shape[0], out.shape[1], layers, hidden)
        if layers > 1:
            gen = torch.Generator().manual_seed(int(seed))
            with torch.no_grad():
                for linear in [*head.hidden, head]:  # nn.Linear's default: U(±1/√fan_in), weight and bias
                    bound = linear.weight.shape[1] ** -0.5
                    linear.weight.uniform_(-bound, bound, generator=gen)
                    linear.bias.uniform_(-bound, bound, generator=gen)
        head = head.to(device=out.device, dtype=out.dtype)
        if layers == 1:
            with torch.no_grad():
                head.weight.copy_(out)
        return head

    @property
    def n_hidden(self) -> int:
        return len(self.hidden)

    def rows(self, class_ids: torch.Tensor) -> Head:
        """The episode's initial head: the hidden layers (if any) and the output rows of its N class
        token ids (gradients flow back to the persistent parameters)."""
        head: Head = {}
        for (wk, bk), layer in zip(hidden_layer_keys(self.n_hidden), self.hidden):
            assert isinstance(layer, nn.Linear)  # built so in __init__
            head[wk], head[bk] = layer.weight, layer.bias
        head["weight"] = self.weight.index_select(0, class_ids)
        head["bias"] = self.bias.index_select(0, class_ids)
        return head

    def parameter_of(self, key: str) -> tuple[nn.Parameter, bool]:
        """The persistent parameter behind episode-head entry `key`, and whether the entry is its rows
        of the episode's class ids (the output layer) rather than the whole parameter."""
        if key in ("weight", "bias"):
            return getattr(self, key), True
        _, i, name = key.split(".")
        return getattr(self.hidden[int(i)], name), False
