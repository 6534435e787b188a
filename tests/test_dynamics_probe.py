"""dynamics_rows: every layer captured, values equal independent computations, training undisturbed."""

import copy
import json
from collections import Counter

import pytest
import torch

from metalm.dynamics.effective_rank import effective_rank
from metalm.dynamics.probe import dynamics_rows
from metalm.model import build_model

torch.set_num_threads(1)
RANK_KEYS = {"step", "group", "layer", "component", "erank", "per", "shape"}
ATTENTION_KEYS = {"step", "group", "layer", "head", "entropy", "entropy_norm"}


def make_model(layers: int = 2):
    torch.manual_seed(0)
    return build_model("nano", vocab_size=64, num_hidden_layers=layers)


def probe_ids(batch: int = 2, length: int = 16, seed: int = 1):
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def index(rows, group):
    return {(r["layer"], r["component"]): r for r in rows if r["group"] == group}


@pytest.mark.parametrize("layers", [2, 3])
def test_rows_cover_every_layer_and_component(layers):
    model = make_model(layers)
    rows = dynamics_rows(model, probe_ids(), step=7)
    counts = Counter(r["group"] for r in rows)
    assert counts == {"activations": layers + 2, "weights": 7 * layers + 2, "gradients": 7 * layers + 2, "attention": 4 * layers}
    acts = index(rows, "activations")
    assert sorted(acts) == sorted([(-1, "embed"), *[(i, "output") for i in range(layers)], (layers, "output")])
    assert set(index(rows, "weights")) == set(index(rows, "gradients"))
    expected_weights = {(-1, "embed"), (layers, "lm_head")} | {
        (i, c) for i in range(layers) for c in ("q", "k", "v", "o", "gate", "up", "down")
    }
    assert set(index(rows, "weights")) == expected_weights
    heads = {(r["layer"], r["head"]) for r in rows if r["group"] == "attention"}
    assert heads == {(i, h) for i in range(layers) for h in range(4)}
    for row in rows:
        assert row["step"] == 7
        assert set(row) == (ATTENTION_KEYS if row["group"] == "attention" else RANK_KEYS)
        if row["group"] != "attention":
            assert 0 < row["per"] <= 1 + 1e-12
            assert row["per"] == pytest.approx(row["erank"] / min(row["shape"]))
    json.loads(json.dumps(rows, allow_nan=False))
    # Shapes: tokens × d activations, out × in weights (GQA: k/v have 2 heads × 16).
    assert acts[(0, "output")]["shape"] == [32, 64]
    w = index(rows, "weights")
    assert w[(0, "k")]["shape"] == [32, 64] and w[(0, "gate")]["shape"] == [256, 64]
    assert w[(-1, "embed")]["shape"] == [64, 64] and w[(layers, "lm_head")]["shape"] == [64, 64]


def test_values_match_independent_computations():
    model = make_model()
    ids = probe_ids()
    rows = dynamics_rows(model, ids, step=0)
    reference = copy.deepcopy(model).eval()
    out = reference(input_ids=ids, labels=ids, output_hidden_states=True)
    out.loss.backward()
    hidden = out.hidden_states  # embeddings, output of layer 0, final-norm output
    acts = index(rows, "activations")
    assert acts[(-1, "embed")]["erank"] == pytest.approx(effective_rank(hidden[0].reshape(-1, 64)), rel=1e-6)
    assert acts[(0, "output")]["erank"] == pytest.approx(effective_rank(hidden[1].reshape(-1, 64)), rel=1e-6)
    assert acts[(2, "output")]["erank"] == pytest.approx(effective_rank(hidden[2].reshape(-1, 64)), rel=1e-6)
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    weights, grads = index(rows, "weights"), index(rows, "gradients")
    for (layer, component), row in weights.items():
        if component == "embed":
            param = reference.model.embed_tokens.weight
        elif component == "lm_head":
            param = reference.lm_head.weight
        else:
            param = reference.model.layers[layer].get_submodule(names[component]).weight
        assert row["erank"] == pytest.approx(effective_rank(param), rel=1e-9)
        assert grads[(layer, component)]["erank"] == pytest.approx(effective_rank(param.grad), rel=1e-5)


def test_training_state_untouched_and_deterministic():
    model = make_model()
    ids = probe_ids()
    model.train()
    marker = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        if i % 2 == 0:
            p.grad = torch.full_like(p, 0.5)
            marker[name] = p.grad.clone()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rng = torch.get_rng_state()
    first = dynamics_rows(model, ids, step=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.config._attn_implementation == "sdpa"
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])
        if name in marker:
            assert torch.equal(p.grad, marker[name])
        else:
            assert p.grad is None
    assert dynamics_rows(model, ids, step=3) == first
    model.eval()
    assert dynamics_rows(model, ids, step=3) == first and not model.training


def test_group_subsets_and_frozen_weights():
    model = make_model()
    ids = probe_ids()
    full = dynamics_rows(model, ids, step=1)
    only_acts = dynamics_rows(model, ids, step=1, groups=["activations"])
    assert {r["group"] for r in only_acts} == {"activations"}
    for a, b in zip(only_acts, [r for r in full if r["group"] == "activations"]):
        assert a["erank"] == pytest.approx(b["erank"], rel=1e-6)
    only_attention = dynamics_rows(model, ids, step=1, groups=["attention"])
    assert only_attention == [r for r in full if r["group"] == "attention"]
    model.model.embed_tokens.weight.requires_grad_(False)
    rows = dynamics_rows(model, ids, step=1, groups=["weights", "gradients"])
    assert (-1, "embed") in index(rows, "weights") and (-1, "embed") not in index(rows, "gradients")
    with pytest.raises(ValueError, match="unknown dynamics groups"):
        dynamics_rows(model, ids, step=1, groups=["logits"])
