"""The `meta` config section, its model/data checks, and the hybrid schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from metalm.errors import ConfigError
from metalm.meta.config import MetaConfig, VocabStats, validate_meta
from metalm.training.step_plan import StepPlanner
from metalm.model import llama_config


def test_defaults_resolve_per_variant():
    cfg = MetaConfig()
    assert not cfg.enabled and cfg.resolved_head_init() == "proto" and cfg.resolved_pool() == "last"
    token = MetaConfig(smlmt_variant="token")
    assert token.resolved_head_init() == "learned" and token.resolved_pool() == "mask"
    lm = MetaConfig(task="lm")
    assert lm.resolved_head_init() is None and lm.resolved_pool() is None
    assert MetaConfig(k_shot=30, q_query=10, band_min_count=5).min_count() == 40


@pytest.mark.parametrize("fields,words", [
    ({"task": "lm", "pool": "mask"}, ["pool", "smlmt"]),
    ({"task": "lm", "head_init": "proto"}, ["head_init", "lm"]),
    ({"smlmt_variant": "sentence", "head_init": "learned"}, ["learned", "token"]),
    ({"smlmt_variant": "token", "pool": "last"}, ["pool", "token"]),
    ({"algorithm": "reptile", "inner_params": "head"}, ["reptile", "head_init"]),
    ({"algorithm": "reptile", "inner_params": "head", "smlmt_variant": "token", "head_init": "zero"}, ["reptile"]),
    ({"band_min_count": 50, "band_max_count": 10}, ["band_max_count"]),
    ({"k_shot": 10, "q_query": 10, "band_min_count": 5, "band_max_count": 15}, ["band_max_count", "k_shot"]),
    ({"n_way": 1}, ["n_way"]),
    ({"k_shot": 0}, ["k_shot"]),
    ({"q_query": 0}, ["q_query"]),
    ({"inner_steps": 0}, ["inner_steps"]),
    ({"inner_lr": 0.0}, ["inner_lr"]),
    ({"inner_n_layers": 0}, ["inner_n_layers"]),
    ({"episodes_per_step": 0}, ["episodes_per_step"]),
    ({"hybrid": 1.5}, ["hybrid"]),
    ({"weight": -0.1}, ["weight"]),
    ({"algorithm": "sgd"}, ["algorithm"]),
    ({"inner_params": "layers"}, ["inner_params"]),
    ({"schedule": "alternate"}, ["schedule"]),
    ({"nway": 5}, ["nway"]),
    ({"n_way": "5"}, ["n_way"]),
])
def test_invalid_sections_are_rejected(fields, words):
    with pytest.raises(ValidationError) as err:
        MetaConfig(**fields)
    text = str(err.value)
    for word in words:
        assert word in text


def test_valid_combinations_are_accepted():
    MetaConfig(algorithm="reptile", inner_params="head", smlmt_variant="token")  # learned head: outer updates
    MetaConfig(algorithm="reptile", inner_params="head+last_n_layers", head_init="zero")
    MetaConfig(task="lm", algorithm="reptile", inner_params="head")  # adapts the LM head, a model parameter
    MetaConfig(smlmt_variant="token", head_init="proto")
    MetaConfig(pool="mask", hybrid=1, weight=0)  # ints where floats are expected


def test_config_mounts_under_meta():
    from metalm.config import from_dict

    cfg = from_dict({"meta": {"enabled": True, "n_way": 3}})
    assert cfg.meta.n_way == 3
    with pytest.raises(ConfigError, match="meta"):
        from_dict({"meta": {"task": "lm", "pool": "mask"}})


def enabled(**kw) -> MetaConfig:
    return MetaConfig(enabled=True, **kw)


def test_validate_meta_against_the_model():
    nano = llama_config("nano", 300)
    validate_meta(enabled(inner_params="head+last_n_layers", inner_n_layers=2), nano)
    with pytest.raises(ConfigError, match="meta.inner_n_layers"):
        validate_meta(enabled(inner_params="head+last_n_layers", inner_n_layers=3), nano)
    with pytest.raises(ConfigError, match="meta.window_len"):
        validate_meta(enabled(window_len=512), nano)
    validate_meta(enabled(algorithm="maml", inner_params="all"), nano)
    small = llama_config("small")  # ~65M parameters: too large for exact second order through all of them
    with pytest.raises(ConfigError, match="meta.algorithm.*maml"):
        validate_meta(enabled(algorithm="maml", inner_params="all"), small)
    validate_meta(enabled(algorithm="maml", inner_params="head"), small)
    validate_meta(enabled(algorithm="fomaml", inner_params="all"), small)
    validate_meta(MetaConfig(window_len=100_000), nano)  # disabled: nothing to check


def test_validate_meta_against_the_data():
    nano = llama_config("nano", 300)
    validate_meta(enabled(n_way=5), nano, VocabStats("words", 5))
    with pytest.raises(ConfigError, match="meta.n_way.*4 candidate words"):
        validate_meta(enabled(n_way=5), nano, VocabStats("words", 4))
    with pytest.raises(ConfigError, match="meta.task=lm"):
        validate_meta(enabled(task="lm"), nano, VocabStats("documents", 0))
    validate_meta(enabled(task="lm", n_way=50), nano, VocabStats("documents", 1))  # n_way unused by LM tasks


def step_weights(step: int, seed: int, meta_cfg) -> tuple[float, float]:
    plan = StepPlanner(meta_cfg, seed, 1).plan(step)
    return plan.meta_weight, plan.ar_weight


def is_meta_step(step: int, seed: int, meta_cfg) -> bool:
    return StepPlanner(meta_cfg, seed, 1).plan(step).kind != "ar"


def test_interleave_is_exact_and_even():
    for h in (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 1.0):
        cfg = enabled(hybrid=h, schedule="interleave")
        flags = [is_meta_step(s, 0, cfg) for s in range(1000)]
        for n in (1, 7, 100, 1000):
            assert sum(flags[:n]) == math.floor(n * h)
        where = np.flatnonzero(flags)
        if where.size > 2:
            gaps = np.diff(where)
            assert gaps.max() - gaps.min() <= 1  # evenly spaced


def test_random_share_within_binomial_tolerance():
    n = 20_000
    for h in (0.1, 0.5, 0.9):
        cfg = enabled(hybrid=h, schedule="random")
        count = sum(is_meta_step(s, 3, cfg) for s in range(n))
        assert abs(count - n * h) < 5 * math.sqrt(n * h * (1 - h))
    cfg = enabled(hybrid=0.5, schedule="random")
    a = [is_meta_step(s, 1, cfg) for s in range(200)]
    assert a == [is_meta_step(s, 1, cfg) for s in range(200)]  # pure function of (seed, step)
    assert a != [is_meta_step(s, 2, cfg) for s in range(200)]
    assert a[50:] == [is_meta_step(s, 1, cfg) for s in range(50, 200)]  # resume mid-way: same decisions


def test_weighted_and_disabled():
    cfg = enabled(schedule="weighted", weight=0.3, hybrid=0.0)
    assert all(step_weights(s, 0, cfg) == pytest.approx((0.3, 0.7)) for s in range(20))
    assert all(is_meta_step(s, 0, cfg) for s in range(20))
    off = MetaConfig(enabled=False, hybrid=1.0)
    assert not any(is_meta_step(s, 0, off) for s in range(20))
    assert step_weights(0, 0, enabled(hybrid=1.0)) == (1.0, 0.0)
