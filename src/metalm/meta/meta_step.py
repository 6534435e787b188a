"""The meta step: run episodes (θ₀ → inner loop → query loss → outer rule) and sum their outer gradients.

`run_episode` takes one episode through the algorithm: it builds θ₀ (the adapted backbone part and
the head), adapts it on the support rows (`meta.inner.adapt`), evaluates the query rows and hands
the result to the algorithm's outer rule (`meta.outer`), which leaves the episode's outer gradient,
times `episode_weight`, in `.grad`. `MetaStep` does that for one rank's `EpisodeBatch`, and
`reduce_stats` merges every rank's statistics. The caller all-reduces the gradients, clips and
steps AdamW. The work each episode executed is computed from its shape by `meta.flops`.

Efficiency (DESIGN 2.4): the frozen lower part of the backbone (`meta.backbone`) runs once per
episode (support and query rows, never again; dense episodes, whose support and query items share
their rows, in one pass); the inner loop re-runs only the adapted upper part — nothing at all for
`inner_params=head`, where it works on the gathered support features alone (one feature per labelled
position, never a B×L×V logit tensor for SMLMT); the query loss flows back through the backbone
once. Support rows are run without a graph unless the outer gradient needs them (second order,
ProtoMAML).

Heads: the episode head's entries in θ₀ are "head.<key>" (`meta.heads`: "weight", "bias", and an
MLP learned head's "hidden.i.weight"/"hidden.i.bias"). The inner loop adapts every head entry — an
MLP head's hidden layers too, as the paper's code adapts its whole classifier head — and the outer
gradient reaches every learned-head parameter: the output rows of the episode's classes and the
hidden layers. The inner loop never writes `.grad` (`meta.inner`), so the head's gradient after a
meta step is the outer (query) gradient alone.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..accounting import Work
from .backbone import BackbonePartition, backbone_partition, head_parameter_names
from .episode import Episode
from .flops import EpisodeShape, PassCosts, episode_work
from .heads import LearnedHead, at_least_fp32, head_logits, proto_head, zero_head
from .inner import Params, adapt
from .outer import AdaptedEpisode, OuterRule, outer_rule
from .sampler import EpisodeBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HEAD_PREFIX = "head."  # the episode head's entries in θ₀
METRIC_KEYS = ("meta_loss", "support_loss_before", "support_acc_before", "support_loss_after",
               "support_acc_after", "query_acc", "inner_grad_norm")
EPISODE_KEYS = ("episode_classes", "episode_support_min", "episode_support_median", "episode_query_items")


def _ce_acc(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = at_least_fp32(logits)
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


class EpisodeRows:
    """What the model reads from an episode: the inputs, read-out positions and labels of its support
    and query rows. SMLMT items are labelled positions — one per row (window layout) or several per
    row, at (row, position) pairs, in rows that support and query share (dense layout); LM-task rows
    are inputs row[:-1] with next-token labels row[1:] at every position."""

    # each item's read-out position and row: SMLMT only (None for LM tasks)
    support_positions: torch.Tensor | None
    query_positions: torch.Tensor | None
    support_rows: torch.Tensor | None
    query_rows: torch.Tensor | None

    def __init__(self, model, episode: Episode, feature_scale: str = "inv_sqrt_d"):
        self.smlmt = episode.task == "smlmt"
        self.shared = episode.shared_rows
        self.scale = feature_scale == "inv_sqrt_d"
        if self.smlmt:
            assert episode.support_labels is not None and episode.query_labels is not None  # SMLMT items are labelled
            self.support_ids, self.query_ids = episode.support_ids, episode.query_ids
            self.support_labels, self.query_labels = episode.support_labels, episode.query_labels
            self.support_positions, self.query_positions = episode.support_pos, episode.query_pos
            self.support_rows, self.query_rows = episode.item_rows(True), episode.item_rows(False)
            n_classes = episode.n_way
            support_items, query_items = self.support_labels.numel(), self.query_labels.numel()
        else:
            self.support_ids, self.query_ids = episode.support_ids[:, :-1], episode.query_ids[:, :-1]
            self.support_labels = episode.support_ids[:, 1:].reshape(-1)
            self.query_labels = episode.query_ids[:, 1:].reshape(-1)
            self.support_positions = self.query_positions = self.support_rows = self.query_rows = None
            n_classes = model.get_output_embeddings().weight.shape[0]
            support_items, query_items = self.support_ids.numel(), self.query_ids.numel()
        self.n_classes = n_classes
        self.shape = EpisodeShape(seq_len=self.support_ids.shape[1], support_tokens=self.support_ids.numel(),
                                  query_tokens=self.query_ids.numel(), support_items=support_items,
                                  query_items=query_items, n_classes=n_classes, unique_tokens=episode.n_tokens,
                                  shared_rows=self.shared)

    def features(self, hidden: torch.Tensor, support: bool) -> torch.Tensor:
        """LM tasks: every position, as the LM head sees it. SMLMT: the hidden state at each item's
        (row, read-out position), divided by √d under `feature_scale: inv_sqrt_d` (the default):
        final-norm states have unit RMS, so features have unit norm and the classifier's logits stay
        O(1) at any width (raw, ProtoMAML's squared distances ~2d saturate the softmax and leave the
        inner loop nothing to do; one inner_lr fits every preset). `feature_scale: none` reads the
        raw states, as the paper's code does."""
        if not self.smlmt:
            return at_least_fp32(hidden.reshape(-1, hidden.shape[-1]))
        positions = self.support_positions if support else self.query_positions
        rows = self.support_rows if support else self.query_rows
        feats = at_least_fp32(hidden[rows, positions])
        return feats * feats.shape[-1] ** -0.5 if self.scale else feats


def run_episode(model, episode: Episode, meta_cfg, learned_head: LearnedHead | None = None,
                episode_weight: float = 1.0, partition: BackbonePartition | None = None,
                outer_gradient: bool = True) -> dict:
    """One episode of `meta_cfg.algorithm` (see the module docstring): its statistics (detached
    0-dim tensors, `METRIC_KEYS`) and `work`.

    `outer_gradient=False` (evaluation) adapts and measures only: no graph is kept for an outer
    gradient and nothing is written to `.grad`."""
    rule = outer_rule(meta_cfg.algorithm, outer_gradient)
    partition = partition or backbone_partition(model, meta_cfg)
    with rule.context():
        return _run_episode(model, episode, meta_cfg, learned_head, episode_weight, partition, rule)


def _run_episode(model, episode: Episode, meta_cfg, learned_head, episode_weight: float,
                 partition: BackbonePartition, rule: OuterRule) -> dict:
    rows = EpisodeRows(model, episode, meta_cfg.feature_scale)
    head_init = meta_cfg.resolved_head_init()
    k, lr = meta_cfg.inner_steps, meta_cfg.inner_lr
    outer_graph = contextlib.nullcontext if rule.query_backward else torch.no_grad

    # The frozen lower part: once per row.
    if rows.shared:  # dense: support and query items share their rows — one pass (support_in detaches it)
        with outer_graph():
            support_x = query_x = partition.lower(rows.query_ids)
    elif rule.support_graph(head_init):
        x = partition.lower(torch.cat([rows.support_ids, rows.query_ids]))
        support_x, query_x = x[: rows.support_ids.shape[0]], x[rows.support_ids.shape[0]:]
    else:
        with torch.no_grad():
            support_x = partition.lower(rows.support_ids)
        with outer_graph():
            query_x = partition.lower(rows.query_ids)

    params0, head_keys = _initial_params(model, episode, rows, partition, head_init, learned_head, support_x, rule)

    def head_of(p: Params) -> dict[str, torch.Tensor]:
        return {key: p[name] for key, name in head_keys.items()}

    support_in = support_x if rule.second_order else support_x.detach()
    if not partition.upper_has_layers:
        support_features = rows.features(support_in, support=True)  # head-only: computed once

        def support_loss(p):
            return _ce_acc(head_logits(support_features, head_of(p)), rows.support_labels)
    else:
        def support_loss(p):
            return _ce_acc(head_logits(rows.features(partition.upper(p, support_in), support=True), head_of(p)),
                           rows.support_labels)

    inner = adapt(params0, support_loss, k, lr, meta_cfg.inner_optimizer, meta_cfg.inner_weight_decay,
                  rule.second_order)
    with torch.no_grad():
        loss_after, acc_after = support_loss(inner.adapted_detached)
    with outer_graph():
        adapted = inner.adapted if rule.query_backward else inner.adapted_detached
        query_features = rows.features(partition.upper(adapted, query_x), support=False)
        loss_q, acc_q = _ce_acc(head_logits(query_features, head_of(adapted)), rows.query_labels)

    named = dict(model.named_parameters())

    def accumulate(name: str, grad: torch.Tensor) -> None:
        if name in named:
            _accumulate(named[name], grad)
        elif rows.smlmt and head_init == "learned":  # zero/proto heads are not parameters: nothing to update
            param, by_rows = learned_head.parameter_of(name[len(HEAD_PREFIX):])
            if by_rows:
                _accumulate_rows(param, episode.class_ids, grad)
            else:
                _accumulate(param, grad)

    rule.apply(AdaptedEpisode(params0, inner, loss_q, k, lr, accumulate), episode_weight)
    return {  # statistics as detached 0-dim tensors: no host sync per episode
        "meta_loss": loss_q.detach(), "query_acc": acc_q.detach(),
        "support_loss_before": inner.loss_before, "support_acc_before": inner.acc_before,
        "support_loss_after": loss_after, "support_acc_after": acc_after,
        "inner_grad_norm": inner.grad_norm,
        "work": episode_work(rows.shape, PassCosts.of(partition, rows.shape, head_hidden_widths(meta_cfg)), k, rule,
                             head_init),
    }


def head_hidden_widths(meta_cfg) -> tuple[int, ...]:
    """Widths of the episode head's hidden layers (none: a linear head)."""
    if meta_cfg.task != "smlmt" or meta_cfg.head_layers == 1:
        return ()
    return (meta_cfg.resolved_head_hidden(),) * (meta_cfg.head_layers - 1)


def _initial_params(model, episode: Episode, rows: EpisodeRows, partition: BackbonePartition, head_init, learned_head,
                    support_x: torch.Tensor, rule: OuterRule) -> tuple[Params, dict[str, str]]:
    """θ₀ — the upper backbone part and the head: the episode classifier (SMLMT) or the model's LM
    head (LM tasks) — and where the head's entries ("weight", "bias", "hidden.i.*") are in it."""
    keep = rule.query_backward
    upper0 = {n: (p if keep else p.detach()) for n, p in partition.upper_parameters().items()}
    if not rows.smlmt:
        named = dict(model.named_parameters())
        names = head_parameter_names(model)
        weight_key = next(n for n in names if named[n] is model.get_output_embeddings().weight)
        bias_key = next((n for n in names if n != weight_key), None)
        keys = {"weight": weight_key, **({"bias": bias_key} if bias_key else {})}
        return {**upper0, **{n: (named[n] if keep else named[n].detach()) for n in names}}, keys
    if head_init == "zero":
        like = at_least_fp32(support_x) if support_x.is_floating_point() else next(model.parameters())
        head0 = zero_head(rows.n_classes, partition.d_model, like)
    elif head_init == "proto":
        with contextlib.nullcontext() if keep else torch.no_grad():
            features = rows.features(partition.upper(upper0, support_x), support=True)
            head0 = proto_head(features, rows.support_labels, rows.n_classes)
    else:
        head0 = learned_head.rows(episode.class_ids)
        if not keep:
            head0 = {n: v.detach() for n, v in head0.items()}
    return {**upper0, **{HEAD_PREFIX + key: v for key, v in head0.items()}}, {key: HEAD_PREFIX + key for key in head0}


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


class MetaStep:
    """The meta step of one rank: runs its episodes and accumulates their weighted outer gradients."""

    def __init__(self, meta_cfg, model: PreTrainedModel, learned_head: LearnedHead | None = None):
        self.cfg = meta_cfg
        self.head = learned_head
        self.partition = backbone_partition(model, meta_cfg)

    def run(self, model: PreTrainedModel, batch: EpisodeBatch, loss_scale: float = 1.0,
            outer_gradient: bool = True, as_tensors: bool = False) -> dict:
        """Run this rank's episodes; accumulate loss_scale × (mean outer gradient) in `.grad`
        (`outer_gradient=False`: adapt and measure only, e.g. for few-shot evaluation).

        Pass the plain model (not a DDP wrapper): inner loops are local, and the caller averages
        the outer gradients of the model's and the learned head's parameters across ranks.
        Returns the mean statistics over this rank's episodes (floats; `as_tensors`: 0-dim float64
        tensors on the model's device, so a training step never waits for the device), `episodes`,
        and the summed `work`. SMLMT steps also return the realised episode (`EPISODE_KEYS`, see
        `Episode.realised`; means over the episodes, computed on the host where episodes are built)."""
        if self.partition.model is not model:
            self.partition = backbone_partition(model, self.cfg)
        device = next(model.parameters()).device
        episode_weight = loss_scale * batch.world_size / batch.global_count
        sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=device)
        work = Work()
        realised: dict[str, float] = {}
        for ep in batch.episodes:
            for key, value in ep.realised().items():
                realised[key] = realised.get(key, 0.0) + value / len(batch)
            stats = run_episode(model, ep.to(device), self.cfg, self.head, episode_weight, self.partition,
                                outer_gradient)
            sums += torch.stack([stats[key].double() for key in METRIC_KEYS])
            work += stats["work"]
        means = sums / max(1, len(batch))
        values = means.unbind() if as_tensors else means.tolist()
        return {**dict(zip(METRIC_KEYS, values)), **realised, "episodes": len(batch), "work": work}


def reduce_stats(stats: dict, all_reduce_sum, device: torch.device | str = "cpu") -> dict:
    """Global statistics of a meta step from every rank's `MetaStep.run` result (floats or tensors):
    metrics averaged over all episodes (0-dim float64 tensors on `device`, read on the host only when
    a row is logged), episodes and work summed (Python integers: the accounting stays on the host,
    computed from the episodes' shapes). `all_reduce_sum(tensor)` sums a tensor in place across
    ranks; None for a single process.

    The realised episode (EPISODE_KEYS, host floats from the built episodes) stays on the host for a
    single process; across processes its sums go to the device from pinned memory, are summed with
    the metrics and averaged over all episodes like them.

    Host syncs: none for a single process (given tensor statistics). Across processes, one per meta
    step: every rank's episode count and work, summed on the device, are read back on the host. The
    count, work and realised episode go to the device from pinned memory, without a sync; the metrics
    never leave it."""
    device = torch.device(device)
    n, w = stats["episodes"], stats["work"]
    realised = tuple(k for k in EPISODE_KEYS if k in stats)  # the same keys on every rank (one task)
    if all_reduce_sum is None:
        return {**{k: _float64(stats[k], device) for k in METRIC_KEYS}, **{k: stats[k] for k in realised},
                "episodes": n, "work": w}
    metrics = torch.stack([_float64(stats[k], device) * n for k in METRIC_KEYS])
    if realised:
        metrics = torch.cat([metrics, _to_device(torch.tensor([float(stats[k]) * n for k in realised],
                                                              dtype=torch.float64), device)])
    counts = _to_device(torch.tensor([n, w.tokens, w.fwd_tokens, w.bwd_tokens, w.flops], dtype=torch.int64), device)
    all_reduce_sum(metrics)
    all_reduce_sum(counts)
    n, *work = counts.tolist()  # the one host sync of a meta step across processes
    means = metrics / max(1, n)
    return {**dict(zip(METRIC_KEYS + realised, means.unbind())), "episodes": n, "work": Work(*work)}


def _float64(value, device: torch.device) -> torch.Tensor:
    """A statistic as a 0-dim float64 tensor on `device` (a Python float, from an evaluation's
    `MetaStep.run`, is copied there; a training step's device tensor stays where it is)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float64)
    return torch.tensor(value, dtype=torch.float64, device=device)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`: onto CUDA from pinned memory, asynchronously (a copy from pageable
    memory would wait for the device)."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)
