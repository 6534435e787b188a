"""Episode classifier heads: zero, ProtoMAML prototypes, and the persistent vocabulary-indexed head.

A head is a dict {"weight": [N, d], "bias": [N]}; logits = F·Wᵀ + b.

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

import torch
from torch import nn

Head = dict[str, torch.Tensor]


def head_logits(features: torch.Tensor, head: Head) -> torch.Tensor:
    logits = features @ head["weight"].t()
    bias = head.get("bias")
    return logits if bias is None else logits + bias


def zero_head(n_way: int, d_model: int, like: torch.Tensor) -> Head:
    return {"weight": torch.zeros(n_way, d_model, dtype=like.dtype, device=like.device),
            "bias": torch.zeros(n_way, dtype=like.dtype, device=like.device)}


def prototypes(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean feature of each class: [n_way, d] (differentiable in `features`)."""
    sums = torch.zeros(n_way, features.shape[-1], dtype=features.dtype, device=features.device)
    sums = sums.index_add(0, labels, features)
    counts = torch.bincount(labels, minlength=n_way).clamp_min(1).to(features.dtype)
    return sums / counts[:, None]


def proto_head(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> Head:
    c = prototypes(features, labels, n_way)
    return {"weight": 2 * c, "bias": -(c * c).sum(-1)}


class LearnedHead(nn.Module):
    """The persistent vocabulary-indexed head of the token variant (part of the checkpoint)."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab_size, d_model))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    @classmethod
    def from_model(cls, model: nn.Module) -> "LearnedHead":
        out = model.get_output_embeddings().weight
        head = cls(out.shape[0], out.shape[1]).to(device=out.device, dtype=out.dtype)
        with torch.no_grad():
            head.weight.copy_(out)
        return head

    def rows(self, class_ids: torch.Tensor) -> Head:
        """The episode's initial head: the rows of its N class token ids (gradients flow back)."""
        return {"weight": self.weight.index_select(0, class_ids), "bias": self.bias.index_select(0, class_ids)}
