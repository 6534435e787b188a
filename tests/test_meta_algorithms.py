"""Meta-learning algorithms against independent (naive) references: FOMAML, MAML, Reptile, the
head-only fast path, ProtoMAML heads, accounting, rank-split equivalence and the learned head state."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_grads_close, grads, make_docs, new_model, tokenized
from torch.func import functional_call

from metalm.errors import ConfigError
from metalm.meta import MetaConfig, MetaTask, reduce_stats
from metalm.meta.backbone import LastLayersPartition, backbone_partition, inner_parameter_names
from metalm.meta.flops import PassCosts, episode_work
from metalm.meta.meta_step import EPISODE_KEYS, METRIC_KEYS, EpisodeRows, run_episode
from metalm.meta.outer import outer_rule
from metalm.meta.heads import head_logits, proto_head
from metalm.model import backbone_flops_per_token, head_flops

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus():
    return tokenized(make_docs(1, n_docs=40))


def cfg_of(**kw) -> MetaConfig:
    base = dict(enabled=True, task="smlmt", smlmt_variant="sentence", n_way=3, k_shot=2, q_query=2, window_len=12,
                band_min_count=8, band_skip_top=5, inner_steps=3, inner_lr=0.05)
    base.update(kw)
    return MetaConfig(**base)


# ---- naive references: the backbone is re-run in full, functionally, wherever it is needed ----
def hidden(model, params, ids):
    base = {n[len("model."):]: v for n, v in params.items() if n.startswith("model.")}
    return functional_call(model.model, base, (), {"input_ids": ids, "use_cache": False}).last_hidden_state


def read(h, pos):  # the SMLMT classifier reads final hidden states scaled by 1/√d
    return h[torch.arange(h.shape[0]), pos] / h.shape[-1] ** 0.5


def naive_inner(loss_fn, fast, steps, lr, optimizer="sgd", create_graph=False):
    """Plain k-step SGD/Adam (ε inside the root, as documented) on a dict of tensors."""
    if create_graph:  # independent variables (partial derivatives), with the graph back to θ
        fast = {k: v.view_as(v) if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
    else:
        fast = {k: v.detach().clone().requires_grad_() for k, v in fast.items()}
    m = {k: torch.zeros_like(v) for k, v in fast.items()}
    v2 = {k: torch.zeros_like(v) for k, v in fast.items()}
    for t in range(1, steps + 1):
        g = torch.autograd.grad(loss_fn(fast), list(fast.values()), create_graph=create_graph, allow_unused=True)
        g = [torch.zeros_like(x) if gi is None else gi for x, gi in zip(fast.values(), g)]
        new = {}
        for (k, x), gi in zip(fast.items(), g):
            if optimizer == "adamw":
                m[k] = 0.9 * m[k] + 0.1 * gi
                v2[k] = 0.999 * v2[k] + 0.001 * gi * gi
                gi = (m[k] / (1 - 0.9 ** t)) / torch.sqrt(v2[k] / (1 - 0.999 ** t) + 1e-16)
            new[k] = x - lr * gi
        fast = new if create_graph else {k: x.detach().requires_grad_() for k, x in new.items()}
        if not create_graph:
            m = {k: x.detach() for k, x in m.items()}
            v2 = {k: x.detach() for k, x in v2.items()}
    return fast


def query_loss_after_adaptation(model, theta, ep, cfg, create_graph=False):
    """L_Q(θ′(θ)) computed naively from a full parameter dict θ (zero or proto head)."""
    names = inner_parameter_names(model, cfg)
    n = ep.n_way
    if cfg.resolved_head_init() == "proto":
        head0 = proto_head(read(hidden(model, theta, ep.support_ids), ep.support_pos), ep.support_labels, n)
    else:
        d = model.config.hidden_size
        dtype = theta["lm_head.weight"].dtype
        head0 = {"weight": torch.zeros(n, d, dtype=dtype), "bias": torch.zeros(n, dtype=dtype)}
    fast0 = {**{k: theta[k] for k in names}, "head.weight": head0["weight"], "head.bias": head0["bias"]}

    def support_loss(fast):
        h = hidden(model, {**theta, **fast}, ep.support_ids)
        return F.cross_entropy(head_logits(read(h, ep.support_pos), {"weight": fast["head.weight"],
                                                                      "bias": fast["head.bias"]}), ep.support_labels)

    fast = naive_inner(support_loss, fast0, cfg.inner_steps, cfg.inner_lr, cfg.inner_optimizer, create_graph)
    h = hidden(model, {**theta, **fast}, ep.query_ids)
    head = {"weight": fast["head.weight"], "bias": fast["head.bias"]}
    return F.cross_entropy(head_logits(read(h, ep.query_pos), head), ep.query_labels), fast


# ---- tests -------------------------------------------------------------------------------------
def test_last_layers_partition_reproduces_the_backbone(corpus):
    tok, _, _ = corpus
    model = new_model(tok)
    ids = torch.randint(0, len(tok), (3, 10))
    partition = LastLayersPartition(model, 1)
    out = partition.upper(partition.upper_parameters(), partition.lower(ids))
    torch.testing.assert_close(out, model.model(input_ids=ids).last_hidden_state)


@pytest.mark.parametrize("inner_params,optimizer", [("head+last_n_layers", "sgd"), ("all", "adamw")])
def test_fomaml_gradient_is_query_gradient_at_adapted_parameters(corpus, inner_params, optimizer):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(inner_params=inner_params, head_init="zero", inner_optimizer=optimizer, inner_lr=0.01)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(3)
    model.zero_grad()
    stats = run_episode(model, ep, cfg)
    got = grads(model)

    theta = {n: p.detach() for n, p in model.named_parameters()}
    _, adapted = query_loss_after_adaptation(model, theta, ep, cfg)
    ref = copy.deepcopy(model)
    ref.zero_grad()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in adapted:
                p.copy_(adapted[n])
    h = ref.model(input_ids=ep.query_ids).last_hidden_state
    head = {"weight": adapted["head.weight"], "bias": adapted["head.bias"]}
    loss = F.cross_entropy(head_logits(read(h, ep.query_pos), head), ep.query_labels)
    loss.backward()
    assert stats["meta_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert any(n in adapted and (adapted[n] - theta[n]).abs().max() > 1e-6 for n in theta)  # the loop moved θ
    assert_grads_close(got, grads(ref), rtol=2e-3, atol=2e-6)


@pytest.mark.parametrize("inner_params,head_init,optimizer", [
    ("head", "proto", "sgd"), ("head+last_n_layers", "proto", "sgd"), ("all", "proto", "sgd"),
    ("head+last_n_layers", "zero", "adamw")])
def test_maml_equals_finite_differences(corpus, monkeypatch, inner_params, head_init, optimizer):
    from transformers.models.llama import modeling_llama

    def rmsnorm(self, x):  # the stock norm computes in float32; float64 throughout for finite differences
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rmsnorm)
    tok, tokens, offsets = corpus
    model = new_model(tok, torch.float64)
    cfg = cfg_of(algorithm="maml", inner_params=inner_params, head_init=head_init, inner_optimizer=optimizer,
                 inner_steps=2, inner_lr=0.5 if optimizer == "sgd" else 0.01, n_way=2, k_shot=2, q_query=1,
                 window_len=8)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(1)
    model.zero_grad()
    run_episode(model, ep, cfg)
    g = grads(model)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in theta.items()}
        # Adam's m/√v is nearly a sign function where a gradient entry is tiny: it needs a tiny step
        eps = 1e-6 if optimizer == "sgd" else 1e-10
        with torch.enable_grad():
            plus = query_loss_after_adaptation(model, {n: theta[n] + eps * v[n] for n in theta}, ep, cfg)[0]
            minus = query_loss_after_adaptation(model, {n: theta[n] - eps * v[n] for n in theta}, ep, cfg)[0]
        fd = (plus - minus).item() / (2 * eps)
        analytic = sum((g[n] * v[n]).sum() for n in theta).item()
        assert analytic == pytest.approx(fd, rel=1e-5 if optimizer == "sgd" else 1e-4, abs=1e-8)
    # and the first-order gradient is measurably different from the exact one
    model.zero_grad()
    run_episode(model, ep, cfg.model_copy(update={"algorithm": "fomaml"}))
    assert max((grads(model)[n] - g[n]).abs().max().item() for n in g) > 1e-6


def test_reptile_update_is_parameter_difference(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(smlmt_variant="token", algorithm="reptile", inner_params="head+last_n_layers", head_init="learned",
                 inner_lr=0.1)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(2)
    head = task.head
    with torch.no_grad():
        head.weight.add_(0.05 * torch.randn_like(head.weight))
    model.zero_grad()
    run_episode(model, ep, cfg, head, episode_weight=1.0)
    got = grads(model, task.extra_named_parameters())

    theta = {n: p.detach() for n, p in model.named_parameters()}
    names = inner_parameter_names(model, cfg)
    rows = ep.class_ids
    fast0 = {**{n: theta[n] for n in names}, "head.weight": head.weight[rows].detach(),
             "head.bias": head.bias[rows].detach()}

    def support_loss(fast):
        h = hidden(model, {**theta, **fast}, ep.support_ids)
        return F.cross_entropy(head_logits(read(h, ep.support_pos), {"weight": fast["head.weight"],
                                                                      "bias": fast["head.bias"]}), ep.support_labels)

    fast = naive_inner(support_loss, fast0, cfg.inner_steps, cfg.inner_lr)
    k_alpha = cfg.inner_steps * cfg.inner_lr
    for n in theta:
        expected = (theta[n] - fast[n]) / k_alpha if n in names else torch.zeros_like(theta[n])
        torch.testing.assert_close(got[n], expected, rtol=1e-3, atol=1e-5)
    assert got[names[0]].abs().max() > 0
    w = torch.zeros_like(head.weight).index_add_(0, rows, (fast0["head.weight"] - fast["head.weight"]) / k_alpha)
    torch.testing.assert_close(got["meta_head.weight"], w, rtol=1e-3, atol=1e-5)
    others = torch.ones(head.weight.shape[0], dtype=torch.bool)
    others[rows] = False
    assert got["meta_head.weight"][others].abs().max() == 0


@pytest.mark.parametrize("variant,head_init,algorithm", [
    ("sentence", "proto", "fomaml"), ("sentence", "zero", "fomaml"), ("token", "learned", "fomaml"),
    ("sentence", "proto", "maml"), ("token", "learned", "maml")])
def test_head_only_fast_path_equals_naive_path(corpus, variant, head_init, algorithm):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(smlmt_variant=variant, head_init=head_init, algorithm=algorithm, inner_params="head",
                 inner_steps=4, inner_lr=0.02)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    head = task.head
    if head is not None:
        with torch.no_grad():
            head.weight.add_(0.1 * torch.randn_like(head.weight))
    ep = task.episode(5)
    model.zero_grad()
    if head is not None:
        head.zero_grad()
    stats = run_episode(model, ep, cfg, head)
    got = grads(model, task.extra_named_parameters())

    ref = copy.deepcopy(model)
    ref_head = copy.deepcopy(head)
    ref.zero_grad()
    second = algorithm == "maml"
    features = lambda ids, pos: read(ref.model(input_ids=ids).last_hidden_state, pos)  # noqa: E731
    if head_init == "proto":
        head0 = proto_head(features(ep.support_ids, ep.support_pos), ep.support_labels, ep.n_way)
    elif head_init == "learned":
        head0 = {"weight": ref_head.weight[ep.class_ids], "bias": ref_head.bias[ep.class_ids]}
    else:
        head0 = {"weight": torch.zeros(ep.n_way, 64), "bias": torch.zeros(ep.n_way)}

    def support_loss(h):  # naive: the backbone runs again at every inner step
        f = features(ep.support_ids, ep.support_pos)
        return F.cross_entropy(head_logits(f if second else f.detach(), h), ep.support_labels)

    fast = naive_inner(support_loss, head0, cfg.inner_steps, cfg.inner_lr, create_graph=second)
    if not second:
        fast = {k: head0[k] + (fast[k] - head0[k].detach()) for k in fast}
    loss = F.cross_entropy(head_logits(features(ep.query_ids, ep.query_pos), fast), ep.query_labels)
    loss.backward()
    assert stats["meta_loss"] == pytest.approx(loss.item(), rel=1e-5)
    extra = [(f"meta_head.{n}", p) for n, p in ref_head.named_parameters()] if ref_head is not None else []
    assert_grads_close(got, grads(ref, extra), rtol=1e-3, atol=1e-6)
    if head is not None:  # the learned head holds the query gradient of the episode's rows only
        others = torch.ones(head.weight.shape[0], dtype=torch.bool)
        others[ep.class_ids] = False
        assert got["meta_head.weight"][others].abs().max() == 0 and got["meta_head.weight"].abs().max() > 0


def test_support_gradient_does_not_leak_into_the_learned_head(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(smlmt_variant="token", inner_params="head", inner_steps=1, inner_lr=1e-30)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    run_episode(model, ep, cfg, task.head)
    # with a vanishing inner step θ′ = θ: the outer gradient is ∇L_Q(θ) alone, with no ∇L_S added
    rows = {"weight": task.head.weight[ep.class_ids], "bias": task.head.bias[ep.class_ids]}
    f = read(model.model(input_ids=ep.query_ids).last_hidden_state, ep.query_pos).detach()
    gq = torch.autograd.grad(F.cross_entropy(head_logits(f, rows), ep.query_labels), rows["weight"])[0]
    torch.testing.assert_close(task.head.weight.grad[ep.class_ids], gq)


def test_proto_head_is_class_prototypes():
    torch.manual_seed(0)
    feats = torch.randn(12, 5)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2, 2, 0])
    head = proto_head(feats, labels, 3)
    protos = torch.stack([feats[labels == k].mean(0) for k in range(3)])
    torch.testing.assert_close(head["weight"], 2 * protos)
    torch.testing.assert_close(head["bias"], -(protos ** 2).sum(-1))
    queries = torch.randn(7, 5)
    dist = torch.cdist(queries, protos) ** 2
    torch.testing.assert_close(head_logits(queries, head).softmax(-1), (-dist).softmax(-1))


def test_accounting_matches_hand_computation(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(head_init="zero", inner_params="head", inner_steps=5)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    work = run_episode(model, ep, cfg)["work"]
    n, k, q, w, steps = 3, 2, 2, 12, 5
    bb, hf = backbone_flops_per_token(model, w), head_flops(64, n)
    rows = n * (k + q)
    fwd = bb * rows * w + steps * hf * n * k + hf * n * k + hf * n * q  # backbone once; inner; after; query
    bwd = 2 * steps * hf * n * k + 2 * (bb * n * q * w + hf * n * q)  # inner steps; query through backbone
    assert (work.tokens, work.fwd_tokens, work.bwd_tokens, work.flops) == (rows * w, rows * w, n * q * w, fwd + bwd)

    cfg = cfg_of(head_init="zero", inner_params="head+last_n_layers", inner_steps=5)
    work = run_episode(model, ep, cfg)["work"]
    layer = 2 * sum(p.numel() for p in model.model.layers[1].parameters()) + 2 * w * 64 + 2 * 64  # + final norm
    lower = bb - layer
    inner = layer * n * k * w + hf * n * k
    fwd = lower * rows * w + steps * inner + inner + layer * n * q * w + hf * n * q
    bwd = 2 * steps * inner + 2 * (bb * n * q * w + hf * n * q)
    assert work.flops == fwd + bwd
    assert (work.fwd_tokens, work.bwd_tokens) == (rows * w + (steps + 1) * n * k * w + n * q * w,
                                                  steps * n * k * w + n * q * w)


# (tokens, fwd_tokens, bwd_tokens, flops) of one episode of the `nano` model (cfg_of: 3-way 2-shot 2 queries,
# 12-token windows, 3 inner steps; LM tasks: 2 + 2 rows of 16 tokens), as the accounting inside the episode
# runner produced them before it moved to `meta.flops`. None: evaluation (no outer gradient).
WORK = {
    ("sentence/proto", "head"): {"fomaml": (144, 144, 144, 107801856), "maml": (144, 144, 144, 107843328),
                                 None: (144, 144, 0, 35949312)},
    ("sentence/proto", "head+last_n_layers"): {"fomaml": (144, 576, 360, 197657856), "maml": (144, 576, 792, 359440128),
                                               "reptile": (144, 576, 216, 125805312), None: (144, 576, 216, 125805312)},
    ("sentence/proto", "all"): {"fomaml": (144, 432, 360, 287421696), "maml": (144, 432, 792, 610778880),
                                "reptile": (144, 432, 216, 215569152), None: (144, 432, 216, 215569152)},
    ("sentence/zero", "head"): {"fomaml": (144, 144, 72, 71877888), "maml": (144, 144, 144, 107843328),
                                None: (144, 144, 0, 35949312)},
    ("sentence/zero", "head+last_n_layers"): {"fomaml": (144, 504, 288, 152748288), "maml": (144, 504, 792, 332483328),
                                              "reptile": (144, 504, 216, 116819712), None: (144, 504, 216, 116819712)},
    ("sentence/zero", "all"): {"fomaml": (144, 360, 288, 233535744), "maml": (144, 360, 720, 556892928),
                               "reptile": (144, 360, 216, 197607168), None: (144, 360, 216, 197607168)},
    ("token/learned", "head"): {"fomaml": (144, 144, 72, 71877888), "maml": (144, 144, 144, 107843328),
                                "reptile": (144, 144, 0, 35949312), None: (144, 144, 0, 35949312)},
    ("token/learned", "head+last_n_layers"): {"fomaml": (144, 504, 288, 152748288), "maml": (144, 504, 792, 332483328),
                                              "reptile": (144, 504, 216, 116819712), None: (144, 504, 216, 116819712)},
    ("token/learned", "all"): {"fomaml": (144, 360, 288, 233535744), "maml": (144, 360, 720, 556892928),
                               "reptile": (144, 360, 216, 197607168), None: (144, 360, 216, 197607168)},
    ("lm", "head"): {"fomaml": (64, 64, 32, 48037888), "maml": (64, 64, 64, 86188032),
                     "reptile": (64, 64, 0, 29548544), None: (64, 64, 0, 29548544)},
    ("lm", "head+last_n_layers"): {"fomaml": (64, 224, 128, 84127744), "maml": (64, 224, 352, 186437632),
                                   "reptile": (64, 224, 96, 65638400), None: (64, 224, 96, 65638400)},
    ("lm", "all"): {"fomaml": (64, 160, 128, 120180736), "maml": (64, 160, 320, 286584832),
                    "reptile": (64, 160, 96, 101691392), None: (64, 160, 96, 101691392)},
}


@pytest.mark.parametrize("kind,inner_params", list(WORK))
def test_episode_work_from_shape_matches_recorded_accounting(corpus, kind, inner_params):
    """`episode_work` reproduces the recorded numbers from the episode's shape alone, and a run
    episode reports the same."""
    tok, tokens, offsets = corpus
    model = new_model(tok)
    if kind == "lm":
        cfg = MetaConfig(enabled=True, task="lm", k_shot=2, q_query=2, window_len=16, inner_steps=3, inner_lr=0.05,
                         inner_params=inner_params)
    else:
        variant, head_init = kind.split("/")
        cfg = cfg_of(smlmt_variant=variant, head_init=head_init, inner_params=inner_params)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    shape = EpisodeRows(model, ep).shape
    costs = PassCosts.of(backbone_partition(model, cfg), shape)
    for algorithm, expected in WORK[kind, inner_params].items():
        rule = outer_rule(algorithm or "fomaml", outer_gradient=algorithm is not None)
        work = episode_work(shape, costs, cfg.inner_steps, rule, cfg.resolved_head_init())
        assert (work.tokens, work.fwd_tokens, work.bwd_tokens, work.flops) == expected, algorithm
    ran = run_episode(model, ep, cfg.model_copy(update={"algorithm": "maml"}), task.head)["work"]
    assert (ran.tokens, ran.fwd_tokens, ran.bwd_tokens, ran.flops) == WORK[kind, inner_params]["maml"]


def test_rank_split_equals_single_process(corpus):
    tok, tokens, offsets = corpus
    cfg = cfg_of(smlmt_variant="token", inner_params="head+last_n_layers", episodes_per_step=4)
    model = new_model(tok)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=4)
    stats = task.meta_step(model, task.episodes(9), loss_scale=0.5)
    single = grads(model, task.extra_named_parameters())
    ranks, rank_stats = [], []
    for r in range(2):
        m = new_model(tok)
        t = MetaTask(cfg, tokens, offsets, tok, m, seed=4)
        rank_stats.append(t.meta_step(m, t.episodes(9, rank=r, world_size=2), loss_scale=0.5))
        ranks.append(grads(m, t.extra_named_parameters()))
    averaged = {n: (ranks[0][n] + ranks[1][n]) / 2 for n in single}  # what the all-reduce (mean) produces
    assert_grads_close(single, averaged, rtol=1e-4, atol=1e-7)

    def fake_all_reduce(tensor):  # sum over the two simulated ranks
        other, n = rank_stats[1], rank_stats[1]["episodes"]
        if tensor.dtype == torch.float64:  # the metrics and the realised episode × episodes
            tensor += torch.tensor([other[k] * n for k in METRIC_KEYS + EPISODE_KEYS], dtype=tensor.dtype)
        else:  # the episode count and the work
            tensor += torch.tensor([n] + [getattr(other["work"], f) for f in ("tokens", "fwd_tokens", "bwd_tokens", "flops")])

    merged = reduce_stats(rank_stats[0], fake_all_reduce)
    assert merged["episodes"] == 4 and merged["work"] == stats["work"]
    for key in METRIC_KEYS + EPISODE_KEYS:  # the realised episode too (window layout: N-way, K support per class, N·Q query)
        assert merged[key] == pytest.approx(stats[key], rel=1e-5)
    assert [stats[k] for k in EPISODE_KEYS] == [cfg.n_way, cfg.k_shot, cfg.k_shot, cfg.n_way * cfg.q_query]


def test_episode_weight_scales_the_outer_gradient(corpus):
    tok, tokens, offsets = corpus
    cfg = cfg_of(head_init="proto")
    model = new_model(tok)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    run_episode(model, ep, cfg, episode_weight=1.0)
    full = grads(model)
    model.zero_grad()
    run_episode(model, ep, cfg, episode_weight=0.25)
    assert_grads_close({n: g / 4 for n, g in full.items()}, grads(model), rtol=1e-5, atol=1e-9)


def test_learned_head_state_round_trip(corpus):
    tok, tokens, offsets = corpus
    cfg = cfg_of(smlmt_variant="token")
    model = new_model(tok)
    a = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    assert torch.equal(a.head.weight, model.lm_head.weight) and a.head.bias.abs().max() == 0
    with torch.no_grad():
        a.head.weight.mul_(3)
    b = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.head.weight, b.head.weight)
    assert sorted(a.state_dict()) == ["meta_head.bias", "meta_head.weight"]
    assert [p for p in b.extra_parameters()] == [b.head.weight, b.head.bias]
    with pytest.raises(ConfigError):
        b.load_state_dict({})
    sentence = MetaTask(cfg_of(), tokens, offsets, tok, model, seed=0)
    assert sentence.extra_parameters() == [] and sentence.state_dict() == {}


def test_lm_task_meta_step(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = MetaConfig(enabled=True, task="lm", k_shot=2, q_query=2, window_len=16, inner_steps=2, inner_lr=0.1)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    stats = run_episode(model, ep, cfg)
    # head-only on an LM task adapts the LM head: FOMAML gradient = ∇ L_Q at the adapted LM head
    theta = {n: p.detach() for n, p in model.named_parameters()}
    fs = model.model(input_ids=ep.support_ids[:, :-1]).last_hidden_state.reshape(-1, 64).detach()

    def support_loss(fast):
        return F.cross_entropy(fs @ fast["w"].t(), ep.support_ids[:, 1:].reshape(-1))

    fast = naive_inner(support_loss, {"w": theta["lm_head.weight"]}, 2, 0.1)
    ref = copy.deepcopy(model)
    ref.zero_grad()
    with torch.no_grad():
        ref.lm_head.weight.copy_(fast["w"])
    loss = F.cross_entropy(ref(input_ids=ep.query_ids[:, :-1]).logits.reshape(-1, len(tok)),
                           ep.query_ids[:, 1:].reshape(-1))
    loss.backward()
    assert stats["meta_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert stats["support_loss_after"] < stats["support_loss_before"]
    assert_grads_close(grads(model), grads(ref), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("variant,head_init,inner_params", [
    ("sentence", "proto", "head"), ("token", "learned", "head"), ("sentence", "zero", "head+last_n_layers")])
def test_frozen_layers_run_once_per_row(corpus, variant, head_init, inner_params):
    """Efficiency rule: ten inner steps, yet every row passes the frozen layers exactly once."""
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(smlmt_variant=variant, head_init=head_init, inner_params=inner_params, inner_steps=10)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episode(0)
    rows = []
    hook = model.model.layers[0].register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        run_episode(model, ep, cfg, task.head)
    finally:
        hook.remove()
    assert sum(rows) == ep.support_ids.shape[0] + ep.query_ids.shape[0]


def test_evaluation_mode_writes_no_gradient(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = cfg_of(smlmt_variant="token")
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    batch = task.episodes(0)
    measured = task.meta_step(model, batch, outer_gradient=False)
    assert all(p.grad is None for p in list(model.parameters()) + task.extra_parameters())
    trained = task.meta_step(model, batch)
    for key in ("meta_loss", "query_acc", "support_acc_before", "support_acc_after"):
        assert measured[key] == pytest.approx(trained[key], rel=1e-5)
    assert measured["work"].bwd_tokens < trained["work"].bwd_tokens


@pytest.mark.parametrize("hidden", [0, 1])
def test_head_logits_are_float32_under_bf16_autocast(hidden):
    """Under the trainer's bf16 autocast the episode head's logits stay float32: the same numbers as
    without autocast (they used to come out of a bf16 matmul)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 16, generator=gen)
    head = {"weight": torch.randn(3, 8 if hidden else 16, generator=gen), "bias": torch.randn(3, generator=gen)}
    if hidden:
        head.update({"hidden.0.weight": torch.randn(8, 16, generator=gen), "hidden.0.bias": torch.randn(8, generator=gen)})
    plain = head_logits(features, head)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = head_logits(features.bfloat16(), head)  # bf16 activations, as the backbone gives them
        same = head_logits(features, head)
    assert cast.dtype == same.dtype == torch.float32
    assert torch.equal(same, plain)
    assert torch.equal(cast, head_logits(features.bfloat16().float(), head))
