"""The inner loop (`adapt`): k steps of SGD or AdamW on the support loss over a dict of fast weights.

It is the same for every algorithm; what differs is only whether the steps keep their graph
(second order, MAML) and what the outer rule (`meta.outer`) does with the result.

First order: the steps run on detached copies; the result is returned as θ₀ + stopgrad(θ′ − θ₀), so
a backward of the query loss at θ′ lands ∇_θ′ L_Q on whatever θ₀ depends on (the model parameters,
the learned head, or the backbone features behind ProtoMAML prototypes) — FOMAML, and the
first-order ProtoMAML of Triantafillou et al. that keeps the gradient through the head's
initialisation. Second order: every step keeps its graph (`create_graph=True`), so the query
backward is the exact MAML gradient ∇_θ L_Q(θ′(θ)).

The support-loss gradients are taken with `torch.autograd.grad`, never `.backward()`: nothing from
the inner loop is ever accumulated in a parameter's `.grad`, which holds the outer gradient alone.

The inner AdamW keeps ε inside the square root (u = m̂ / √(v̂ + ε²)) so that it stays differentiable
where a gradient entry is exactly zero (second order); weight decay is decoupled: θ ← θ − α(u + λθ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Params = dict[str, torch.Tensor]
BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass
class InnerResult:
    """What the inner loop returns: θ′ twice (with and without the outer graph) and its statistics."""

    adapted: Params  # θ′ with the outer graph (see module docstring)
    adapted_detached: Params  # θ′ detached
    # Statistics: detached 0-dim tensors on the parameters' device (read on the host only when logged).
    loss_before: torch.Tensor
    acc_before: torch.Tensor
    grad_norm: torch.Tensor  # mean over inner steps of the global L2 norm of the support gradient


def adapt(
    params0: Params,
    loss_fn: Callable[[Params], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    second_order: bool = False,
) -> InnerResult:
    """Run `steps` inner updates of `params0` on `loss_fn(params) -> (loss, accuracy)`."""
    if second_order:
        # A fresh view per entry: the support gradient w.r.t. each entry must be its *partial*
        # derivative, even where one entry is computed from another (ProtoMAML's head from the
        # adapted layers' features); the views keep the graph back to θ.
        p = {k: v.view_as(v) if v.requires_grad else v.detach().requires_grad_() for k, v in params0.items()}
    else:
        p = {k: v.detach().clone().requires_grad_() for k, v in params0.items()}
    keys = list(p)
    m = {k: torch.zeros_like(v) for k, v in p.items()} if optimizer == "adamw" else None
    v2 = {k: torch.zeros_like(v) for k, v in p.items()} if optimizer == "adamw" else None
    norms = []
    loss_before = acc_before = None
    for t in range(1, steps + 1):
        loss, acc = loss_fn(p)
        if t == 1:
            loss_before, acc_before = loss.detach(), acc.detach()
        raw = torch.autograd.grad(loss, [p[k] for k in keys], create_graph=second_order, allow_unused=True)
        grads = [torch.zeros_like(p[k]) if g is None else g for k, g in zip(keys, raw)]
        sq_norm = sum((g.detach().float() ** 2).sum() for g in grads)
        assert isinstance(sq_norm, torch.Tensor)  # params0 is never empty
        norms.append(torch.sqrt(sq_norm))
        new = {}
        for k, g in zip(keys, grads):
            if optimizer == "adamw":
                assert m is not None and v2 is not None  # allocated for adamw
                m[k] = BETAS[0] * m[k] + (1 - BETAS[0]) * g
                v2[k] = BETAS[1] * v2[k] + (1 - BETAS[1]) * g * g
                update = (m[k] / (1 - BETAS[0] ** t)) / torch.sqrt(v2[k] / (1 - BETAS[1] ** t) + EPS * EPS)
            else:
                update = g
            if weight_decay:
                update = update + weight_decay * p[k]
            new[k] = p[k] - lr * update
        if second_order:
            p = new
        else:
            p = {k: x.detach().requires_grad_() for k, x in new.items()}
            if m is not None and v2 is not None:
                m = {k: x.detach() for k, x in m.items()}
                v2 = {k: x.detach() for k, x in v2.items()}
    detached = {k: x.detach() for k, x in p.items()}
    if second_order:
        adapted = p
    else:
        adapted = {k: params0[k] + (detached[k] - params0[k].detach()) for k in keys}
    assert loss_before is not None and acc_before is not None  # steps >= 1 (meta.inner_steps)
    return InnerResult(adapted, detached, loss_before, acc_before, torch.stack(norms).mean())
