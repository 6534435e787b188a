"""Attention-head entropy: closed-form cases, and the model's own probabilities against an
independent computation from the weights (q, k projections, RoPE, grouped-query heads)."""

import math

import pytest
import torch

from metalm.dynamics.attention_entropy import (
    attention_entropy_by_layer,
    attention_probs_by_layer,
    head_entropy,
)
from metalm.model import build_model

torch.set_num_threads(1)
L = 12


def uniform_causal(batch: int, heads: int, length: int) -> torch.Tensor:
    visible = torch.ones(length, length).tril()
    return (visible / visible.sum(-1, keepdim=True)).expand(batch, heads, length, length).clone()


def test_uniform_attention_has_entropy_log_t_plus_one():
    probs = uniform_causal(3, 2, L)
    a = probs[0, 0].double()
    per_position = -(torch.special.xlogy(a, a)).sum(-1)
    assert torch.allclose(per_position, torch.log(torch.arange(1, L + 1, dtype=torch.float64)))
    entropy, normalised = head_entropy(probs)
    expected = sum(math.log(t + 1) for t in range(L)) / L
    assert torch.allclose(entropy, torch.full((2,), expected, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(normalised, torch.ones(2, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("target", ["first", "self"])
def test_one_hot_attention_has_zero_entropy(target):
    probs = torch.zeros(2, 3, L, L)
    for t in range(L):
        probs[..., t, 0 if target == "first" else t] = 1.0
    entropy, normalised = head_entropy(probs)
    assert torch.equal(entropy, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(normalised, torch.zeros(3, dtype=torch.float64))


def test_hand_computed_mixture_and_future_keys_ignored():
    # Position 0: [1]; position 1: [½, ½]; position 2: [½, ¼, ¼]. Garbage above the diagonal
    # (a kernel without a causal mask) must not count.
    a = torch.tensor([[1.0, 9.0, 9.0], [0.5, 0.5, 9.0], [0.5, 0.25, 0.25]]).view(1, 1, 3, 3)
    h1, h2 = math.log(2), 1.5 * math.log(2)
    entropy, normalised = head_entropy(a)
    assert entropy.item() == pytest.approx((0 + h1 + h2) / 3, rel=1e-12)
    assert normalised.item() == pytest.approx((h1 / math.log(2) + h2 / math.log(3)) / 2, rel=1e-12)


def sharpened_nano() -> torch.nn.Module:
    """nano (4 heads sharing 2 key heads) with enlarged q/k weights so attention is far from uniform."""
    torch.manual_seed(0)
    model = build_model("nano", vocab_size=64)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(12)
            layer.self_attn.k_proj.weight.mul_(12)
    return model


def manual_probs(model, input_ids, rope: bool = True) -> list[torch.Tensor]:
    """From the weights alone: RMS-normed layer input → q, k; RoPE with θ from the config; key head
    h // (H / H_kv) for query head h; softmax(q·k/√d) over keys j ≤ t."""
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // heads
    theta = cfg.rope_parameters["rope_theta"]
    with torch.no_grad():
        inputs = model(input_ids=input_ids, output_hidden_states=True).hidden_states  # [i] = input of layer i
        pos = torch.arange(input_ids.shape[1], dtype=torch.float64)
        angles = pos[:, None] / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)[None]
        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

        def rotate(x):
            x1, x2 = x[..., : d // 2], x[..., d // 2 :]
            return x * cos + torch.cat([-x2, x1], -1) * sin if rope else x

        out = []
        for i, layer in enumerate(model.model.layers):
            x = layer.input_layernorm(inputs[i]).double()
            b, n, _ = x.shape
            q = (x @ layer.self_attn.q_proj.weight.double().T).view(b, n, heads, d).transpose(1, 2)
            k = (x @ layer.self_attn.k_proj.weight.double().T).view(b, n, kv_heads, d).transpose(1, 2)
            q, k = rotate(q), rotate(k)
            k = k[:, [h // (heads // kv_heads) for h in range(heads)]]
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
            out.append(scores.softmax(-1))
    return out


def test_model_attention_matches_direct_computation_from_q_k():
    model = sharpened_nano()
    ids = torch.randint(0, 64, (3, L), generator=torch.Generator().manual_seed(1))
    expected = manual_probs(model, ids)
    own = attention_probs_by_layer(model, ids)
    entropies = attention_entropy_by_layer(model, ids)
    assert len(own) == len(entropies) == model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"  # the probe's eager switch was undone
    for layer, (p_own, p_manual) in enumerate(zip(own, expected)):
        assert p_own.shape == (3, 4, L, L)
        assert torch.allclose(p_own.double(), p_manual, atol=1e-5), layer
        entropy, normalised = entropies[layer]
        want_entropy, want_normalised = head_entropy(p_manual)
        assert torch.allclose(entropy, want_entropy, atol=1e-5)
        assert torch.allclose(normalised, want_normalised, atol=1e-5)
        assert normalised.max() < 0.9  # sharpened: far from uniform, so the comparison has teeth
        assert not torch.allclose(entropy[0], entropy[1], atol=1e-3)  # heads differ
    # Without RoPE the probabilities differ: the agreement above depends on positions being handled.
    no_rope = manual_probs(model, ids, rope=False)
    assert (no_rope[0] - expected[0]).abs().max() > 1e-2


def test_entropy_restores_eager_and_training_state():
    model = sharpened_nano()
    model.train()
    model.set_attn_implementation("eager")
    ids = torch.randint(0, 64, (2, L), generator=torch.Generator().manual_seed(2))
    attention_entropy_by_layer(model, ids)
    assert model.config._attn_implementation == "eager" and model.training


def test_too_short_sequences_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        head_entropy(torch.ones(1, 1, 1, 1))
