"""Dense SMLMT episodes (`meta.layout: dense`), the MLP learned head, feature scaling, and window
episodes that must not change — each against an independent computation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_grads_close, grads, new_model
from helpers import make_docs, tokenized
from torch.func import functional_call

from metalm.errors import ConfigError, DataError
from metalm.meta import MetaConfig, MetaTask
from metalm.meta.dense import dense_episode
from metalm.meta.meta_step import run_episode
from metalm.model import backbone_flops_per_token

torch.set_num_threads(1)

SEQ = 40


@pytest.fixture(scope="module")
def corpus():
    return tokenized(make_docs(0))


def windows(tokens: np.ndarray, n: int, seed: int, width: int = SEQ + 1) -> np.ndarray:
    """`n` training windows of `width` tokens from random corpus offsets (as a training batch)."""
    starts = np.random.default_rng(seed).integers(0, len(tokens) - width, n)
    return np.asarray(tokens[starts[:, None] + np.arange(width)], dtype=np.int64)


def dense_cfg(**kw) -> MetaConfig:
    base = dict(enabled=True, task="smlmt", smlmt_variant="token", layout="dense", n_way=6, k_shot=3, q_query=1,
                band_min_count=10, band_skip_top=8, inner_steps=3, inner_lr=0.5)
    base.update(kw)
    return MetaConfig(**base)


def items(ep, part: str) -> list[tuple[int, int, int]]:
    return list(zip(getattr(ep, f"{part}_row").tolist(), getattr(ep, f"{part}_pos").tolist(),
                    getattr(ep, f"{part}_labels").tolist()))


# ---- dense episodes ---------------------------------------------------------------------------
def test_dense_episode_label_invariants(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = dense_cfg(episodes_per_step=2)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=3)
    band = set(task.sampler.occurrences.keys.tolist())
    mask = tok.mask_token_id
    for step in range(4):
        rows = windows(tokens, 16, seed=step)
        batch = task.episodes(step, rows=rows)
        assert batch.indices == [0, 1]
        for i, ep in zip(batch.indices, batch.episodes):
            raw = rows[i * 8:(i + 1) * 8, :SEQ]
            classes = ep.class_ids.tolist()
            assert ep.layout == "dense" and ep.support_ids is ep.query_ids and ep.support_ids.shape == (8, SEQ)
            assert len(set(classes)) == len(classes) == cfg.n_way and set(classes) <= band
            body = raw[:, 1:]
            need = cfg.k_shot + cfg.q_query
            ample = [t for t in band if (body == t).sum() >= need]
            if len(ample) >= cfg.n_way:  # classes occur at least K + Q times at labellable positions …
                assert all((body == c).sum() >= need for c in classes)
            else:  # … or, when too few do, all of those are classes and the rest occur at least twice
                assert set(ample) <= set(classes) and all((body == c).sum() >= 2 for c in classes)
            # the rows: every occurrence of every class token masked, nothing else changed
            expected = np.where(np.isin(raw, classes), mask, raw)
            assert ep.support_ids.numpy().tolist() == expected.tolist()
            assert not np.isin(ep.support_ids.numpy(), classes).any()
            support, query = items(ep, "support"), items(ep, "query")
            for r, p, label in support + query:  # only class occurrences are labelled, with their class
                assert 1 <= p < SEQ and raw[r, p] == classes[label] and ep.support_ids[r, p] == mask
            assert not {(r, p) for r, p, _ in support} & {(r, p) for r, p, _ in query}  # disjoint
            assert len(set(support)) == len(support) and len(set(query)) == len(query)
            assert max(np.bincount([r for r, _, _ in support], minlength=8)) <= cfg.k_shot  # per-row caps
            assert max(np.bincount([r for r, _, _ in query], minlength=8)) <= cfg.q_query
            assert torch.equal(ep.support_pos, ep.support_target) and torch.equal(ep.query_pos, ep.query_target)
            # labelled positions differ from row to row
            per_row = {r: sorted(p for rr, p, _ in support if rr == r) for r in range(8)}
            assert len({tuple(v) for v in per_row.values()}) > 4
            assert ep.n_tokens == 8 * SEQ


def test_dense_classes_balanced_when_rows_allow():
    # every row holds every class many times: the per-row caps bind, and the classes share them evenly
    rng = np.random.default_rng(0)
    candidates = np.zeros(40, dtype=bool)
    candidates[10:30] = True
    for seed in range(5):
        rows = rng.integers(10, 30, size=(8, 65))
        ep = dense_episode(rows, 64, candidates, 5, 3, 1, 99, np.random.default_rng(seed))
        s = np.bincount(ep.support_labels.numpy(), minlength=5)
        q = np.bincount(ep.query_labels.numpy(), minlength=5)
        assert s.sum() == 8 * 3 and q.sum() == 8 * 1
        assert s.max() - s.min() <= 1 and q.max() - q.min() <= 1
        assert np.bincount(ep.support_row.numpy(), minlength=8).tolist() == [3] * 8
        assert np.bincount(ep.query_row.numpy(), minlength=8).tolist() == [1] * 8


def test_dense_class_choice_prefers_ample_candidates():
    candidates = np.zeros(40, dtype=bool)
    candidates[10:30] = True
    rows = np.full((4, 33), 5)  # 5 is no candidate
    rows[:, 1:7] = [[10, 11, 12, 10, 11, 12]] * 4  # three candidates, 8 occurrences each (K + Q = 4)
    rows[0, 9] = rows[1, 9] = rows[2, 9] = 14  # three occurrences: fills the fourth class
    rows[0, 10] = rows[1, 10] = 15  # two occurrences: fills the fifth
    rows[0, 11], rows[0, 12] = 16, 17  # one occurrence each: never a class
    rows[0, 0] = rows[1, 0] = 18  # position 0 is not labellable: 18 does not count
    for seed in range(5):
        ep = dense_episode(rows, 32, candidates, 5, 2, 2, 99, np.random.default_rng(seed))
        assert sorted(ep.class_ids.tolist()) == [10, 11, 12, 14, 15]
        assert ep.support_ids[0, 11] == 16 and ep.support_ids[0, 0] == 18  # not classes: neither masked nor labelled
    ep = dense_episode(rows, 32, candidates, 6, 2, 2, 99, np.random.default_rng(0))
    assert ep.n_way == 5  # fewer than N occur twice: the episode uses those
    assert sorted(dense_episode(rows, 32, candidates, 3, 2, 2, 99, np.random.default_rng(0)).class_ids.tolist()) == [
        10, 11, 12]
    rows[:, 1:12] = 10
    with pytest.raises(DataError, match="meta.n_way"):
        dense_episode(rows, 32, candidates, 5, 2, 2, 99, np.random.default_rng(0))


def test_dense_episodes_are_pure_functions_split_over_ranks(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    task = MetaTask(dense_cfg(episodes_per_step=4), tokens, offsets, tok, model, seed=1)
    rows = windows(tokens, 16, seed=9)
    single = task.episodes(5, rows=rows, micro=1)
    ranks = [task.episodes(5, rank=r, world_size=2, rows=rows, micro=1) for r in range(2)]
    assert sorted(i for b in ranks for i in b.indices) == single.indices == [0, 1, 2, 3]
    by_index = {i: ep for b in ranks for i, ep in zip(b.indices, b.episodes)}
    for i, ep in zip(single.indices, single.episodes):
        for f in ("support_ids", "class_ids", "support_row", "support_pos", "query_row", "query_pos"):
            assert torch.equal(getattr(ep, f), getattr(by_index[i], f)), f
    again = MetaTask(dense_cfg(episodes_per_step=4), tokens, offsets, tok, model, seed=1).episode(5, 2, 1, rows[8:12])
    assert torch.equal(again.support_labels, single.episodes[2].support_labels)
    other = [task.episodes(5, rows=rows, micro=m).episodes[0] for m in (0, 2)]
    assert any(not torch.equal(o.class_ids, single.episodes[0].class_ids) for o in other)  # micro enters the seed
    with pytest.raises(ConfigError, match="episodes_per_step"):
        task.episodes(5, rows=rows[:15])
    with pytest.raises(ConfigError, match="rows"):
        task.episodes(5)


def test_dense_config_combinations():
    with pytest.raises(ValueError, match="dense"):
        MetaConfig(layout="dense")  # the sentence variant
    with pytest.raises(ValueError, match="head_init=learned"):
        MetaConfig(smlmt_variant="token", head_init="proto", head_layers=2)
    with pytest.raises(ValueError, match="head_hidden"):
        MetaConfig(smlmt_variant="token", head_hidden=64)
    with pytest.raises(ValueError, match="casefold"):
        MetaConfig(smlmt_variant="token", casefold=True)
    with pytest.raises(ValueError, match="meta.enabled"):
        MetaConfig(control="momentum")
    with pytest.raises(ValueError, match="meta.enabled"):
        MetaConfig(untouched="momentum")
    assert MetaConfig(enabled=True, control="skip", schedule="weighted").control == "skip"  # keeps its AR share
    cfg = MetaConfig(enabled=True, smlmt_variant="token", layout="dense", head_layers=3, head_hidden=32,
                     feature_scale="none", schedule="microbatch", control="momentum", untouched="momentum")
    assert cfg.resolved_head_hidden() == 32 and MetaConfig(head_layers=2, smlmt_variant="token").resolved_head_hidden() == 256


# ---- window episodes must not change ----------------------------------------------------------
WINDOW_FIELDS = ["support_ids", "query_ids", "class_ids", "support_origin", "query_origin", "support_pos", "query_pos",
                 "support_target", "query_target", "support_labels", "query_labels", "support_source", "query_source"]


def test_window_episodes_are_bit_identical_to_before_dense(corpus):
    """Token-variant window episodes hashed before the dense layout was added (same corpus, seed, steps)."""
    tok, tokens, offsets = corpus
    if hashlib.sha256(tokens.tobytes()).hexdigest()[:16] != "2b2f9d2771161639":
        pytest.skip("the tokenizer library tokenizes the test corpus differently: the recorded hash does not apply")
    model = new_model(tok)
    cfg = MetaConfig(enabled=True, task="smlmt", smlmt_variant="token", n_way=4, k_shot=3, q_query=2, window_len=24,
                     band_min_count=10, band_skip_top=8, episodes_per_step=2)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=5)
    h = hashlib.sha256()
    for step in (0, 3, 11):
        batch = task.episodes(step, rows=windows(tokens, 4, 0), micro=0)  # rows are ignored by this layout
        for ep in batch.episodes:
            for f in WINDOW_FIELDS:
                h.update(getattr(ep, f).numpy().astype(np.int64).tobytes())
    assert h.hexdigest() == "69b0eae2364af31e8377253f98dc7b25abdbd8a89c42bf56ec8608753440a3c5"
    assert not torch.equal(task.episode(3, 0, micro=1).support_ids, task.episode(3, 0).support_ids)


# ---- the meta step on dense episodes, and the MLP head ------------------------------------------
def naive_features(model, params, ids, rows, pos, scale):
    base = {n[len("model."):]: v for n, v in params.items() if n.startswith("model.")}
    h = functional_call(model.model, base, (), {"input_ids": ids, "use_cache": False}).last_hidden_state
    f = h[rows, pos]
    return f * h.shape[-1] ** -0.5 if scale else f


def mlp(x, head):
    n_hidden = len([k for k in head if k.startswith("hidden.") and k.endswith("weight")])
    for i in range(n_hidden):
        x = torch.relu(x @ head[f"hidden.{i}.weight"].t() + head[f"hidden.{i}.bias"])
    return x @ head["weight"].t() + head["bias"]


def head_entries(task, class_ids):
    """The learned head's entries as the episode sees them: hidden layers whole, output rows sliced."""
    named = dict(task.head.named_parameters())
    out = {k: v for k, v in named.items() if k.startswith("hidden.")}
    out["weight"], out["bias"] = named["weight"][class_ids], named["bias"][class_ids]
    return out


def naive_query_loss(model, task, ep, theta, head_theta, cfg):
    """L_Q after k SGD steps of the whole head on the support items (θ: model params, head params);
    the loss's value only (the adapted head carries no graph back to θ)."""
    scale = cfg.feature_scale == "inv_sqrt_d"
    ids = ep.support_ids
    fs = naive_features(model, theta, ids, ep.support_row, ep.support_pos, scale)
    fq = naive_features(model, theta, ids, ep.query_row, ep.query_pos, scale)
    head = {k: v[ep.class_ids] if k in ("weight", "bias") else v for k, v in head_theta.items()}
    fast = {k: v.detach().requires_grad_() for k, v in head.items()}
    for _ in range(cfg.inner_steps):
        loss = F.cross_entropy(mlp(fs.detach(), fast), ep.support_labels)
        g = torch.autograd.grad(loss, list(fast.values()))
        fast = {k: (v - cfg.inner_lr * gi).detach().requires_grad_() for (k, v), gi in zip(fast.items(), g)}
    return F.cross_entropy(mlp(fq, fast), ep.query_labels), fast


@pytest.mark.parametrize("head_layers,feature_scale", [(1, "inv_sqrt_d"), (3, "none")])
def test_dense_fomaml_gradient_matches_naive(corpus, head_layers, feature_scale):
    tok, tokens, offsets = corpus
    model = new_model(tok, torch.float64)
    extra = {"head_hidden": 16} if head_layers > 1 else {}
    cfg = dense_cfg(head_layers=head_layers, feature_scale=feature_scale, inner_lr=0.3 if feature_scale == "none" else 0.5,
                    **extra)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    task.head.double()
    ep = task.episodes(0, rows=windows(tokens, 8, 1)).episodes[0]
    model.zero_grad()
    task.head.zero_grad()
    stats = run_episode(model, ep, cfg, task.head)
    got = grads(model, task.head.named_parameters())

    # FOMAML: ∇_θ′ L_Q(θ′) — the query gradient at the adapted head, through the backbone's query features
    theta = dict(model.named_parameters())
    heads = dict(task.head.named_parameters())
    _, fast = naive_query_loss(model, task, ep, {n: p.detach() for n, p in theta.items()},
                               {n: p.detach() for n, p in heads.items()}, cfg)
    model.zero_grad()
    task.head.zero_grad()
    fq = naive_features(model, theta, ep.support_ids, ep.query_row, ep.query_pos, feature_scale == "inv_sqrt_d")
    adapted = {k: v.detach().requires_grad_() for k, v in fast.items()}
    loss = F.cross_entropy(mlp(fq, adapted), ep.query_labels)
    loss.backward()
    ref = grads(model)
    for k, v in adapted.items():  # θ′ = θ₀ + stopgrad(θ′ − θ₀): the query gradient lands on θ₀
        full = torch.zeros_like(heads[k])
        if k in ("weight", "bias"):
            full.index_add_(0, ep.class_ids, v.grad)
        else:
            full = v.grad
        ref[k] = full
    assert stats["meta_loss"] == pytest.approx(loss.item(), rel=1e-9)
    assert_grads_close(got, ref, rtol=1e-7, atol=1e-10)
    assert all(got[k].abs().sum() > 0 for k in heads)  # the outer gradient reaches every head parameter


def test_mlp_head_maml_gradient_equals_finite_differences(corpus, monkeypatch):
    from transformers.models.llama import modeling_llama

    def rmsnorm(self, x):  # float64 throughout for finite differences
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rmsnorm)
    tok, tokens, offsets = corpus
    model = new_model(tok, torch.float64)
    cfg = dense_cfg(algorithm="maml", head_layers=3, head_hidden=8, inner_steps=2, inner_lr=0.5, n_way=3, k_shot=2)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    task.head.double()
    ep = task.episodes(0, rows=windows(tokens, 4, 2)).episodes[0]
    model.zero_grad()
    task.head.zero_grad()
    run_episode(model, ep, cfg, task.head)
    g = grads(model, task.head.named_parameters())
    theta = {n: p.detach() for n, p in model.named_parameters()}
    heads = {n: p.detach() for n, p in task.head.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        v = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in {**theta, **heads}.items()}
        eps = 1e-6

        def f(sign, v=v, eps=eps):
            with torch.enable_grad():
                return naive_query_loss(model, task, ep, {n: theta[n] + sign * eps * v[n] for n in theta},
                                        {n: heads[n] + sign * eps * v[n] for n in heads}, cfg)[0]

        fd = (f(1) - f(-1)).item() / (2 * eps)
        analytic = sum((g[n] * v[n]).sum() for n in v).item()
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_mlp_head_reptile_moves_every_head_parameter(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok, torch.float64)
    cfg = dense_cfg(algorithm="reptile", head_layers=2, head_hidden=8, inner_steps=2, inner_lr=0.5)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    task.head.double()
    ep = task.episodes(0, rows=windows(tokens, 8, 3)).episodes[0]
    task.head.zero_grad()
    run_episode(model, ep, cfg, task.head)
    heads = {n: p.detach() for n, p in task.head.named_parameters()}
    _, fast = naive_query_loss(model, task, ep, {n: p.detach() for n, p in model.named_parameters()}, heads, cfg)
    for k, p in task.head.named_parameters():
        theta0 = heads[k][ep.class_ids] if k in ("weight", "bias") else heads[k]
        want = (theta0 - fast[k].detach()) / (cfg.inner_steps * cfg.inner_lr)
        got = p.grad[ep.class_ids] if k in ("weight", "bias") else p.grad
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-12)
        assert want.abs().max() > 0


def test_mlp_head_state_round_trip(corpus):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = dense_cfg(head_layers=3, head_hidden=12)
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=4)
    names = {n for n, _ in task.extra_named_parameters()}
    assert names == {"meta_head.weight", "meta_head.bias", "meta_head.hidden.0.weight", "meta_head.hidden.0.bias",
                     "meta_head.hidden.1.weight", "meta_head.hidden.1.bias"}
    assert task.head.weight.shape == (len(tok), 12) and task.head.hidden[0].weight.shape == (12, model.config.hidden_size)
    again = MetaTask(cfg, tokens, offsets, tok, model, seed=4)  # a seeded initialisation
    assert all(torch.equal(a, b) for a, b in zip(task.state_dict().values(), again.state_dict().values()))
    other = MetaTask(cfg, tokens, offsets, tok, model, seed=5)
    other.load_state_dict(task.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(task.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize("head_layers", [1, 2])
def test_dense_work_counts_every_labelled_position(corpus, head_layers):
    tok, tokens, offsets = corpus
    model = new_model(tok)
    cfg = dense_cfg(head_layers=head_layers, **({"head_hidden": 10} if head_layers > 1 else {}))
    task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
    ep = task.episodes(0, rows=windows(tokens, 8, 4)).episodes[0]
    work = run_episode(model, ep, cfg, task.head)["work"]
    d, n, k = model.config.hidden_size, ep.n_way, cfg.inner_steps
    head = 2 * d * n if head_layers == 1 else 2 * (d * 10 + 10 * n)  # per labelled position
    s, q = ep.support_labels.numel(), ep.query_labels.numel()
    tokens_in = 8 * SEQ
    backbone = backbone_flops_per_token(model, SEQ) * tokens_in  # one forward over the shared rows
    forward = backbone + (k + 1) * head * s + head * q
    backward = k * 2 * head * s + 2 * (head * q + backbone)
    assert (work.tokens, work.fwd_tokens, work.bwd_tokens) == (tokens_in, tokens_in, tokens_in)
    assert work.flops == forward + backward


def test_realised_episode_counts_by_hand():
    """A dense episode whose every assignment is forced: rows 0 and 2 hold token 10 twice (one query,
    one support each), row 1 holds 11 twice (one of each), rows 3 and 4 hold 12 once (query first:
    one query each, no support left). So 3 classes, support per class 2, 1, 0 (min 0, median 1) and
    5 query items — a "3-way 1-shot" configuration that realises a median of 1 shot."""
    rows = np.array([[1, 10, 10, 2, 2, 2], [1, 11, 11, 2, 2, 2], [1, 10, 10, 2, 2, 2], [1, 12, 2, 2, 2, 2],
                     [1, 2, 12, 2, 2, 2]])
    candidates = np.zeros(13, dtype=bool)
    candidates[[10, 11, 12]] = True
    for seed in range(5):
        ep = dense_episode(rows, 6, candidates, n_way=3, k_shot=1, q_query=1, mask_id=3,
                           rng=np.random.default_rng(seed))
        assert ep.realised() == {"episode_classes": 3.0, "episode_support_min": 0.0, "episode_support_median": 1.0,
                                 "episode_query_items": 5.0}
    # window layout: N classes, K support each, N·Q query items
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    window = dense_episode(rows, 6, candidates, 3, 1, 1, 3, np.random.default_rng(0))
    window.layout, window.support_labels, window.query_labels = "window", labels, torch.arange(3).repeat(4)
    assert window.realised() == {"episode_classes": 3.0, "episode_support_min": 2.0, "episode_support_median": 2.0,
                                 "episode_query_items": 12.0}
