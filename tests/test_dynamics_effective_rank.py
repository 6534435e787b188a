"""Effective rank (Roy & Vetterli 2007) against hand-computed values, and the dynamics config."""

import math

import pytest
import torch
from pydantic import ValidationError

from metalm.dynamics.config import DynamicsConfig, check_dynamics, probe_shape
from metalm.dynamics.effective_rank import effective_rank, proportional_effective_rank
from metalm.errors import ConfigError

torch.set_num_threads(1)


@pytest.mark.parametrize("n", [1, 3, 17])
def test_identity_has_full_effective_rank(n):
    assert effective_rank(torch.eye(n)) == pytest.approx(n, rel=1e-12)
    assert proportional_effective_rank(torch.eye(n)) == pytest.approx(1.0, rel=1e-12)


def test_rank_one_matrix_has_effective_rank_one():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(30, 1, generator=g, dtype=torch.float64)
    v = torch.randn(1, 12, generator=g, dtype=torch.float64)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-9)
    assert proportional_effective_rank(u @ v) == pytest.approx(1 / 12, abs=1e-9)
    # In float32 the product's rounding noise adds tiny singular values: still 1 to ~1e-5.
    assert effective_rank((u @ v).float()) == pytest.approx(1.0, abs=1e-5)


def test_diagonal_matrix_matches_hand_computation():
    # σ = (3, 2, 1, 0): p = (1/2, 1/3, 1/6), H = ½ln2 + ⅓ln3 + ⅙ln6, erank = e^H.
    m = torch.diag(torch.tensor([3.0, -2.0, 1.0, 0.0]))  # the sign of a diagonal entry is not a singular value's
    expected = math.exp(0.5 * math.log(2) + math.log(3) / 3 + math.log(6) / 6)
    assert effective_rank(m) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(2.7495, abs=1e-4)
    assert proportional_effective_rank(m) == pytest.approx(expected / 4, rel=1e-12)


def test_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=g))
    d = torch.diag(torch.tensor([5.0, 4.0, 0.5, 0.1, 0.0, 0.0], dtype=torch.float64))
    assert effective_rank(q @ d @ q.T) == pytest.approx(effective_rank(d), rel=1e-10)
    assert effective_rank(1e3 * d) == pytest.approx(effective_rank(d), rel=1e-12)


def test_zero_matrix_and_per_bounds():
    assert effective_rank(torch.zeros(4, 5)) == 0.0
    g = torch.Generator().manual_seed(2)
    for shape in [(50, 8), (8, 50), (16, 16)]:
        per = proportional_effective_rank(torch.randn(*shape, generator=g))
        assert 0 < per <= 1
        assert per > 0.5  # a Gaussian matrix is far from low rank


def test_non_matrix_rejected():
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.ones(2, 3, 4))


def test_config_defaults_and_bounds():
    cfg = DynamicsConfig()
    assert (cfg.every, cfg.probe_sequences, cfg.probe_seq_len, cfg.smoothing) == (50, 8, None, 5)
    assert cfg.groups == ["activations", "weights", "gradients", "attention"]
    assert probe_shape(cfg, 128) == (8, 128)
    assert probe_shape(DynamicsConfig(probe_seq_len=64, probe_sequences=2), 128) == (2, 64)
    for bad, key in [
        ({"every": -1}, "every"),
        ({"probe_sequences": 0}, "probe_sequences"),
        ({"probe_seq_len": 1}, "probe_seq_len"),
        ({"smoothing": 0}, "smoothing"),
        ({"groups": []}, "groups"),
        ({"groups": ["weights", "weights"]}, "groups"),
        ({"groups": ["logits"]}, "groups"),
        ({"unknown": 1}, "unknown"),
    ]:
        with pytest.raises(ValidationError, match=key):
            DynamicsConfig(**bad)


def test_cross_check_against_context():
    check_dynamics(DynamicsConfig(probe_seq_len=256), 128, 256)
    with pytest.raises(ConfigError, match="dynamics.probe_seq_len 512"):
        check_dynamics(DynamicsConfig(probe_seq_len=512), 128, 256)
    with pytest.raises(ConfigError, match="train.seq_len"):
        check_dynamics(DynamicsConfig(), 300, 256)
