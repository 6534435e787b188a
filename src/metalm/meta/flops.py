"""The work of one episode (DESIGN 2.5), computed from its shape alone — no algorithm code runs here.

Inputs: the episode's shape (tokens and classified items of its support and query rows), what each
part of the backbone costs per token and whether it holds transformer layers (`PassCosts`, from
`meta.backbone`), the number of inner steps, the outer rule (`meta.outer`) and the head
initialisation. Every pass the episode executes is counted:

- the frozen lower part, once over every support and query row (dense layout: once over the rows,
  which support and query share);
- ProtoMAML: the upper part once over the support rows, for the prototypes;
- each inner step: a forward and a backward of the upper part and head on the support rows, and
  one more forward after the last step (the support statistics after adaptation);
- the query rows through the upper part and head;
- an outer gradient that is the query loss's backward: back through the upper and lower parts for
  the query rows; for the support rows too where the outer graph runs through them (ProtoMAML's
  prototypes, or second order) — with shared rows the lower part's backward is that one pass;
  second order adds, per inner step, a backward through that step's forward and backward:
  2 × (forward + backward) = 6 × its forward.

The head's cost is per classified item (a labelled position: many per row in the dense layout):
2·(d·h + (layers − 2)·h² + h·N) for an MLP head of hidden width h, 2·d·N for a linear one.

Backward = 2 × forward FLOPs. `fwd_tokens` / `bwd_tokens` count tokens × forward / backward
traversals of at least one transformer layer (head-only inner steps traverse none); `tokens`
counts the unique training tokens the episode consumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from ..accounting import Work
from ..model import head_flops


@dataclass(frozen=True)
class EpisodeShape:
    """How much an episode's rows hold, as the model sees them."""

    seq_len: int  # tokens per row (model inputs)
    support_tokens: int
    query_tokens: int
    support_items: int  # items the head classifies: labelled positions (SMLMT) or all positions (LM tasks)
    query_items: int
    n_classes: int  # classifier outputs: N (SMLMT) or the vocabulary (LM tasks)
    unique_tokens: int  # training tokens the episode consumed (`Episode.n_tokens`)
    shared_rows: bool = False  # support and query items in the same rows (dense layout): one lower pass


@dataclass(frozen=True)
class PassCosts:
    """Forward FLOPs of the backbone parts per token and of the head per item, at the episode's shape."""

    lower_per_token: int
    upper_per_token: int
    head_per_item: int
    lower_has_layers: bool
    upper_has_layers: bool

    @classmethod
    def of(cls, partition, shape: EpisodeShape, head_hidden: tuple[int, ...] = ()) -> "PassCosts":
        """From a `meta.backbone.BackbonePartition`; `head_hidden`: widths of an MLP head's hidden layers."""
        lower, upper = partition.flops_per_token(shape.seq_len)
        return cls(lower, upper, mlp_head_flops(partition.d_model, head_hidden, shape.n_classes),
                   partition.lower_has_layers, partition.upper_has_layers)


def mlp_head_flops(d_model: int, hidden: tuple[int, ...], n_outputs: int) -> int:
    """Forward FLOPs per item of a head d_model → hidden… → n_outputs (linear when `hidden` is empty)."""
    widths = [d_model, *hidden]
    return sum(head_flops(a, b) for a, b in pairwise(widths)) + head_flops(widths[-1], n_outputs)


class _Tally:
    def __init__(self):
        self.fwd_flops = self.bwd_flops = self.fwd_tokens = self.bwd_tokens = 0

    def forward(self, flops: int, tokens: int, layers: bool) -> None:
        self.fwd_flops += int(flops)
        self.fwd_tokens += int(tokens) if layers else 0

    def backward(self, forward_flops: int, tokens: int, layers: bool) -> None:
        self.bwd_flops += 2 * int(forward_flops)
        self.bwd_tokens += int(tokens) if layers else 0


def episode_work(shape: EpisodeShape, costs: PassCosts, inner_steps: int, rule, head_init: str | None) -> Work:
    """Work of one episode run under the outer rule `rule` (a `meta.outer.OuterRule`)."""
    s, c = shape, costs
    proto = head_init == "proto"
    lower_s, lower_q = c.lower_per_token * s.support_tokens, c.lower_per_token * s.query_tokens
    upper_s = c.upper_per_token * s.support_tokens
    inner_fwd = upper_s + c.head_per_item * s.support_items  # one support pass of the adapted part
    query_fwd = c.upper_per_token * s.query_tokens + c.head_per_item * s.query_items
    up = c.upper_has_layers
    shared = s.shared_rows
    t = _Tally()
    if shared:  # one pass over the rows that support and query share
        t.forward(lower_q, s.query_tokens, c.lower_has_layers)
    else:
        t.forward(lower_s + lower_q, s.support_tokens + s.query_tokens, c.lower_has_layers)
    if proto:
        t.forward(upper_s, s.support_tokens, up)
    for _ in range(inner_steps):
        t.forward(inner_fwd, s.support_tokens, up)
        t.backward(inner_fwd, s.support_tokens, up)
    t.forward(inner_fwd, s.support_tokens, up)  # support statistics after adaptation
    t.forward(query_fwd, s.query_tokens, up)
    if rule.query_backward:
        t.backward(query_fwd + lower_q, s.query_tokens, c.lower_has_layers or up)
        if rule.support_graph(head_init):
            if shared:  # the lower part's backward over the rows is the query's, above
                t.backward(upper_s if proto else 0, s.support_tokens if up and proto else 0, up and proto)
            else:
                t.backward(lower_s + (upper_s if proto else 0), s.support_tokens,
                           c.lower_has_layers or (up and proto))
        if rule.second_order:
            for _ in range(inner_steps):
                t.backward(3 * inner_fwd, 2 * s.support_tokens, up)
    return Work(tokens=s.unique_tokens, fwd_tokens=t.fwd_tokens, bwd_tokens=t.bwd_tokens,
                flops=t.fwd_flops + t.bwd_flops)
