"""FOMAML, second-order MAML and Reptile on one episode (DESIGN 2.4).

Each function takes (model, episode, meta_cfg, learned_head, loss_scale), runs the inner loop on the
support rows, and leaves the episode's *outer* gradient, multiplied by `loss_scale`, accumulated in
the `.grad` of the model parameters (and of the learned head): the caller sums episodes, all-reduces
across ranks, clips and steps AdamW. It returns the episode's statistics and the work it executed.

- FOMAML: outer gradient ∇_θ′ L_Q(θ′), applied to θ (see `inner.adapt`);
- MAML: exact ∇_θ L_Q(θ′(θ)) through every inner step (second order);
- Reptile: outer gradient (θ − θ′)/(k·α); the query rows are only evaluated (statistics).

Efficiency (DESIGN 2.4): the frozen lower part of the backbone runs once per episode (support and
query rows, never again); the inner loop re-runs only the adapted upper part — nothing at all for
`inner_params=head`, where it works on the gathered support features alone (one row per item,
never a B×L×V logit tensor for SMLMT); the query loss flows back through the backbone once. Support
rows are run without a graph unless the outer gradient needs them (second order, ProtoMAML).

Work accounting (DESIGN 2.5), every executed pass included: FLOPs of the backbone parts from
`backbone_flops_per_token` split per layer, of the heads from `head_flops`; backward = 2 × forward;
a second-order backward through an inner step costs 2 × (its forward + backward) = 6 × its forward.
`fwd_tokens` / `bwd_tokens` count tokens × forward / backward traversals of at least one
transformer layer (head-only inner steps traverse none).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..accounting import Work
from ..model import head_flops
from .backbone import Split, head_parameter_names, make_split
from .episode import Episode
from .heads import LearnedHead, head_logits, proto_head, zero_head
from .inner import adapt


class _Tally:
    def __init__(self):
        self.fwd_flops = self.bwd_flops = self.fwd_tokens = self.bwd_tokens = 0

    def forward(self, flops: int, tokens: int, layers: bool) -> None:
        self.fwd_flops += int(flops)
        self.fwd_tokens += int(tokens) if layers else 0

    def backward(self, forward_flops: int, tokens: int, layers: bool) -> None:
        self.bwd_flops += 2 * int(forward_flops)
        self.bwd_tokens += int(tokens) if layers else 0

    def work(self, unique_tokens: int) -> Work:
        return Work(tokens=unique_tokens, fwd_tokens=self.fwd_tokens, bwd_tokens=self.bwd_tokens,
                    flops=self.fwd_flops + self.bwd_flops)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision activations are upcast; float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _ce_acc(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = _fp32(logits)
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


class _Rows:
    """Inputs, read-out and labels of an episode's support and query rows."""

    def __init__(self, model, ep: Episode):
        self.smlmt = ep.task == "smlmt"
        if self.smlmt:
            self.s_in, self.q_in = ep.support_ids, ep.query_ids
            self.ys, self.yq = ep.support_labels, ep.query_labels
            self.ps, self.pq = ep.support_pos, ep.query_pos
            self.n_out = ep.n_way
            self.n_s, self.n_q = self.s_in.shape[0], self.q_in.shape[0]
        else:
            self.s_in, self.q_in = ep.support_ids[:, :-1], ep.query_ids[:, :-1]
            self.ys, self.yq = ep.support_ids[:, 1:].reshape(-1), ep.query_ids[:, 1:].reshape(-1)
            self.n_out = model.get_output_embeddings().weight.shape[0]
            self.n_s, self.n_q = self.s_in.numel(), self.q_in.numel()
        self.seq = self.s_in.shape[1]
        self.tok_s, self.tok_q = self.s_in.numel(), self.q_in.numel()

    def read(self, hidden: torch.Tensor, support: bool) -> torch.Tensor:
        """LM tasks: every position, as the LM head sees it. SMLMT: the read-out position of each
        row, divided by √d: final-norm states have unit RMS, so features have unit norm and the
        classifier's logits stay O(1) at any width (raw, ProtoMAML's squared distances ~2d saturate
        the softmax and leave the inner loop nothing to do; one inner_lr fits every preset)."""
        if not self.smlmt:
            return _fp32(hidden.reshape(-1, hidden.shape[-1]))
        pos = self.ps if support else self.pq
        feats = _fp32(hidden[torch.arange(hidden.shape[0], device=hidden.device), pos])
        return feats * feats.shape[-1] ** -0.5


def run_episode(model, ep: Episode, meta_cfg, learned_head: LearnedHead | None = None, loss_scale: float = 1.0,
                split: Split | None = None, outer_gradient: bool = True) -> dict:
    """One episode of `meta_cfg.algorithm`; see the module docstring.

    `outer_gradient=False` (evaluation) adapts and measures only: no graph is kept for an outer
    gradient and nothing is written to `.grad`."""
    if meta_cfg.algorithm == "maml" and outer_gradient:
        # Fused attention kernels have no double backward: second order runs attention as plain math.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return _run_episode(model, ep, meta_cfg, learned_head, loss_scale, split, outer_gradient)
    return _run_episode(model, ep, meta_cfg, learned_head, loss_scale, split, outer_gradient)


def _run_episode(model, ep: Episode, meta_cfg, learned_head, loss_scale, split, outer_gradient) -> dict:
    algorithm = meta_cfg.algorithm
    reptile, second = algorithm == "reptile", algorithm == "maml" and outer_gradient
    no_graph = reptile or not outer_gradient  # the outer gradient needs no graph (Reptile) or none at all
    split = split or make_split(model, meta_cfg)
    rows = _Rows(model, ep)
    init = meta_cfg.resolved_head_init()
    k, lr = meta_cfg.inner_steps, meta_cfg.inner_lr
    d = model.config.hidden_size
    lower_pt, upper_pt = split.flops_per_token(rows.seq)
    hf = head_flops(d, rows.n_out)
    lo_layers, up_layers = split.lower_has_layers, split.upper_has_layers
    tally = _Tally()
    outer_ctx = torch.no_grad if no_graph else contextlib.nullcontext
    support_graph = not no_graph and (second or init == "proto")

    # Frozen lower part: once per row.
    if support_graph:
        x = split.lower(torch.cat([rows.s_in, rows.q_in]))
        xs, xq = x[: rows.s_in.shape[0]], x[rows.s_in.shape[0]:]
    else:
        with torch.no_grad():
            xs = split.lower(rows.s_in)
        with outer_ctx():
            xq = split.lower(rows.q_in)
    tally.forward(lower_pt * (rows.tok_s + rows.tok_q), rows.tok_s + rows.tok_q, lo_layers)

    named = dict(model.named_parameters())
    upper0 = {n: (p.detach() if no_graph else p) for n, p in split.parameters().items()}

    # The head θ₀: the episode classifier (SMLMT) or the model's LM head (LM tasks).
    if rows.smlmt:
        wkey, bkey = "head.weight", "head.bias"
        if init == "zero":
            head0 = zero_head(rows.n_out, d, _fp32(xs) if xs.is_floating_point() else next(model.parameters()))
        elif init == "proto":
            with outer_ctx():
                f0 = rows.read(split.upper(upper0, xs), support=True)
                head0 = proto_head(f0, rows.ys, rows.n_out)
            tally.forward(upper_pt * rows.tok_s, rows.tok_s, up_layers)
        else:
            head0 = learned_head.rows(ep.class_ids)
            if no_graph:
                head0 = {n: v.detach() for n, v in head0.items()}
        params0 = {**upper0, wkey: head0["weight"], bkey: head0["bias"]}
    else:
        names = head_parameter_names(model)
        wkey = next(n for n in names if named[n] is model.get_output_embeddings().weight)
        bkey = next((n for n in names if n != wkey), None)
        params0 = {**upper0, **{n: (named[n].detach() if no_graph else named[n]) for n in names}}

    def head_of(p):
        return {"weight": p[wkey], **({"bias": p[bkey]} if bkey else {})}

    xs_in = xs if second else xs.detach()
    if not up_layers:
        fs = rows.read(xs_in, support=True)  # head-only: the support features, computed once

        def support_loss(p):
            return _ce_acc(head_logits(fs, head_of(p)), rows.ys)
    else:
        def support_loss(p):
            return _ce_acc(head_logits(rows.read(split.upper(p, xs_in), support=True), head_of(p)), rows.ys)

    inner_fwd = upper_pt * rows.tok_s + hf * rows.n_s
    res = adapt(params0, support_loss, k, lr, meta_cfg.inner_optimizer, meta_cfg.inner_weight_decay, second)
    for _ in range(k):
        tally.forward(inner_fwd, rows.tok_s, up_layers)
        tally.backward(inner_fwd, rows.tok_s, up_layers)

    with torch.no_grad():
        loss_after, acc_after = support_loss(res.final)
    tally.forward(inner_fwd, rows.tok_s, up_layers)

    query_fwd = upper_pt * rows.tok_q + hf * rows.n_q
    with outer_ctx():
        adapted = res.final if no_graph else res.params
        loss_q, acc_q = _ce_acc(head_logits(rows.read(split.upper(adapted, xq), support=False), head_of(adapted)), rows.yq)
    tally.forward(query_fwd, rows.tok_q, up_layers)

    if outer_gradient and reptile:
        scale = loss_scale / (k * lr)
        for n, p in params0.items():
            delta = (p - res.final[n]) * scale
            if n in named:
                _accumulate(named[n], delta)
            elif rows.smlmt and init == "learned":  # zero/proto heads are not parameters: nothing to update
                _accumulate_rows(learned_head.weight if n == wkey else learned_head.bias, ep.class_ids, delta)
    elif outer_gradient:
        (loss_q * loss_scale).backward()
        layers = lo_layers or up_layers
        tally.backward(query_fwd + lower_pt * rows.tok_q, rows.tok_q, layers)
        if support_graph:
            s_flops = lower_pt * rows.tok_s + (upper_pt * rows.tok_s if init == "proto" and rows.smlmt else 0)
            tally.backward(s_flops, rows.tok_s, lo_layers or (up_layers and init == "proto" and rows.smlmt))
        if second:
            for _ in range(k):
                tally.backward(3 * inner_fwd, 2 * rows.tok_s, up_layers)

    return {
        "meta_loss": float(loss_q.detach()), "query_acc": float(acc_q),
        "support_loss_before": res.loss_before, "support_acc_before": res.acc_before,
        "support_loss_after": float(loss_after), "support_acc_after": float(acc_after),
        "inner_grad_norm": res.grad_norm, "work": tally.work(ep.n_tokens),
    }


def _accumulate(param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    grad = grad.to(param.dtype)
    if param.grad is None:
        param.grad = grad.clone()
    else:
        param.grad.add_(grad)


def _accumulate_rows(param: torch.nn.Parameter, rows: torch.Tensor, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    param.grad.index_add_(0, rows, grad.to(param.dtype))


def fomaml(model, ep: Episode, meta_cfg, learned_head=None, loss_scale: float = 1.0) -> dict:
    return run_episode(model, ep, meta_cfg.model_copy(update={"algorithm": "fomaml"}), learned_head, loss_scale)


def maml(model, ep: Episode, meta_cfg, learned_head=None, loss_scale: float = 1.0) -> dict:
    return run_episode(model, ep, meta_cfg.model_copy(update={"algorithm": "maml"}), learned_head, loss_scale)


def reptile(model, ep: Episode, meta_cfg, learned_head=None, loss_scale: float = 1.0) -> dict:
    return run_episode(model, ep, meta_cfg.model_copy(update={"algorithm": "reptile"}), learned_head, loss_scale)
