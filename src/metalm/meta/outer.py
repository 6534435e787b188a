"""The outer-gradient rules (DESIGN 2.4), one per algorithm, chosen by name from `OUTER_RULES`.

A rule says what the outer gradient of an adapted episode is and writes it, times the episode's
weight, into the `.grad` of what θ₀ came from (model parameters, learned head rows):

- FOMAML: ∇_θ′ L_Q(θ′), applied to θ — the query loss's backward through the first-order θ′;
- MAML: the exact ∇_θ L_Q(θ′(θ)) — the same backward, through inner steps that kept their graph;
- Reptile: (θ − θ′)/(k·α); the query rows are only evaluated (statistics);
- `MEASURE_ONLY` (evaluation): no outer gradient at all.

Besides `apply`, a rule declares what the episode must keep a graph for (`query_backward`,
`support_graph`, `second_order`); the episode runner (`meta.meta_step`) and the accounting
(`meta.flops`) read these declarations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .inner import InnerResult, Params


@dataclass
class AdaptedEpisode:
    """An episode after its inner loop, as the outer rule sees it."""

    initial: Params  # θ₀: the adapted entries (model parameters and the head) before the inner loop
    inner: InnerResult
    query_loss: torch.Tensor  # L_Q(θ′), with the outer graph where the rule keeps one
    inner_steps: int
    inner_lr: float
    accumulate: Callable[[str, torch.Tensor], None]  # adds a gradient to the `.grad` behind θ₀'s entry


class OuterRule:
    """How an algorithm turns an adapted episode into an outer gradient (subclass per algorithm)."""

    query_backward = True  # the outer gradient is the query loss's backward: θ₀ and the query pass keep a graph
    second_order = False  # the inner steps keep their graph (create_graph)

    def support_graph(self, head_init: str | None) -> bool:
        """Whether the outer gradient flows through the support rows' backbone features: second order,
        or ProtoMAML, whose initial head is computed from them."""
        return self.query_backward and (self.second_order or head_init == "proto")

    def context(self):
        """Context the whole episode runs in."""
        return contextlib.nullcontext()

    def apply(self, episode: AdaptedEpisode, episode_weight: float) -> None:
        raise NotImplementedError


class FOMAML(OuterRule):
    """∇_θ′ L_Q(θ′): the query backward through θ₀ + stopgrad(θ′ − θ₀) (see `meta.inner`)."""

    def apply(self, episode, episode_weight):
        (episode.query_loss * episode_weight).backward()


class MAML(FOMAML):
    """∇_θ L_Q(θ′(θ)): the same backward, through inner steps that kept their graph."""

    second_order = True

    def context(self):
        # Fused attention kernels have no double backward: second order runs attention as plain math.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)


class Reptile(OuterRule):
    """(θ₀ − θ′)/(k·α), written into every θ₀ entry's `.grad`; the query rows are only measured."""

    query_backward = False

    def apply(self, episode, episode_weight):
        scale = episode_weight / (episode.inner_steps * episode.inner_lr)
        for name, theta0 in episode.initial.items():
            episode.accumulate(name, (theta0 - episode.inner.adapted_detached[name]) * scale)


class MeasureOnly(OuterRule):
    """Adapt and measure (evaluation): nothing keeps a graph, nothing is written to `.grad`."""

    query_backward = False

    def apply(self, episode, episode_weight):
        pass


OUTER_RULES: dict[str, OuterRule] = {"fomaml": FOMAML(), "maml": MAML(), "reptile": Reptile()}
MEASURE_ONLY = MeasureOnly()


def outer_rule(algorithm: str, outer_gradient: bool = True) -> OuterRule:
    """The rule of `meta.algorithm`, or `MEASURE_ONLY` when no outer gradient is wanted."""
    return OUTER_RULES[algorithm] if outer_gradient else MEASURE_ONLY
