"""`meta.untouched`, `meta.control` and the `microbatch` schedule (DESIGN 2.4), each checked against an
independent computation of what AdamW must do."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import (assert_processes_match, assert_same_run, interrupt_and_resume, tiny_overrides,
                      train_one_and_two_processes, train_tiny)
from metalm.config import load_config
from metalm.meta.outer import FOMAML
from metalm.training import faults
from metalm.training.step_plan import StepPlanner
from metalm.run_dir import read_jsonl
from metalm.trainer import Trainer

META = {"meta.enabled": "true", "meta.smlmt_variant": "token", "meta.head_init": "learned", "meta.band_min_count": 5,
        "meta.band_skip_top": 10, "meta.window_len": 16, "meta.n_way": 3, "meta.k_shot": 2, "meta.q_query": 2,
        "meta.inner_steps": 2, "meta.inner_lr": 0.5, "meta.schedule": "interleave", "meta.hybrid": 0.5}


def trainer_at_first_meta_step(tmp_path, corpus, **extra) -> tuple[Trainer, int]:
    """A prepared trainer that has taken the next-token steps before its first meta step (so AdamW
    has momentum to replay), and that step's index."""
    cfg = load_config(None, tiny_overrides(corpus, tmp_path / "run", **{**META, **extra}))
    trainer = Trainer.build(cfg)
    step = 0
    while trainer.kind_of(step) == "ar" or step == 0:
        trainer.step(step)
        step += 1
    return trainer, step


def snapshot(trainer: Trainer):
    params = {n: p.detach().clone() for n, p in trainer.trainable}
    state = copy.deepcopy(trainer.optimizer.state_dict()["state"])
    return params, state


def test_skip_control_leaves_weights_and_optimizer_state_unchanged(tmp_path, corpus_dir):
    trainer, step = trainer_at_first_meta_step(tmp_path, corpus_dir, **{"meta.control": "skip"})
    assert trainer.kind_of(step) == "control"
    before, state = snapshot(trainer)
    r = trainer.step(step)
    kind, fields, work = r.kind, r.fields, r.work
    assert kind == "control" and fields == {"control": "skip"} and work.tokens == work.flops == 0
    after, state_after = snapshot(trainer)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert state.keys() == state_after.keys()
    for i in state:
        assert all(torch.equal(state[i][k], state_after[i][k]) for k in state[i])


def test_momentum_control_applies_adamws_zero_gradient_update(tmp_path, corpus_dir):
    trainer, step = trainer_at_first_meta_step(tmp_path, corpus_dir, **{"meta.control": "momentum"})
    before, _ = snapshot(trainer)
    states = {n: {k: v.clone() for k, v in trainer.optimizer.state[p].items()} for n, p in trainer.trainable}
    decay = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    r = trainer.step(step)
    kind, fields, work, lr = r.kind, r.fields, r.work, r.lr
    assert kind == "control" and fields == {"control": "momentum"} and work.flops == 0
    (beta1, beta2), eps = trainer.optimizer.defaults["betas"], trainer.optimizer.defaults["eps"]
    moved = 0
    for name, p in trainer.trainable:
        if name == "lm_head.weight":  # not reached by the meta work: frozen, as the arm's `untouched: freeze`
            assert torch.equal(p.detach(), before[name])
            assert all(torch.equal(v, trainer.optimizer.state[p][k]) for k, v in states[name].items())
            continue
        s = states[name] or {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p), "step": 0}
        m, v, k = beta1 * s["exp_avg"], beta2 * s["exp_avg_sq"], float(s["step"]) + 1
        expected = before[name] * (1 - lr * decay[id(p)])
        expected = expected - lr * (m / (1 - beta1 ** k)) / ((v / (1 - beta2 ** k)).sqrt() + eps)
        assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7), name
        moved += not torch.equal(p.detach(), before[name])
    # Replay (and weight decay) move every reached parameter but the meta head's bias, which no step has
    # reached before (no momentum, no decay).
    assert moved == len(trainer.trainable) - 2 and not states["meta_head.bias"]


def test_freeze_leaves_parameters_the_meta_loss_does_not_reach(tmp_path, corpus_dir, monkeypatch):
    trainer, step = trainer_at_first_meta_step(tmp_path, corpus_dir, **{"meta.untouched": "freeze"})
    assert trainer.kind_of(step) == "meta"
    lm_head = dict(trainer.model.named_parameters())["lm_head.weight"]
    before, _ = snapshot(trainer)
    head_state = {k: v.clone() for k, v in trainer.optimizer.state[lm_head].items()}
    grads: list = []
    monkeypatch.setattr(faults, "after_gradients", lambda step, model: grads.append(lm_head.grad))
    r = trainer.step(step)
    monkeypatch.setattr(faults, "after_gradients", None)
    assert grads == [None] and r.kind == "meta" and "meta_loss" in r.fields and r.work.flops > 0
    assert torch.equal(lm_head.detach(), before["lm_head.weight"])
    assert all(torch.equal(head_state[k], trainer.optimizer.state[lm_head][k]) for k in head_state)
    reached = [n for n, p in trainer.trainable if not torch.equal(p.detach(), before[n])]
    assert "meta_head.weight" in reached and any(n.startswith("model.layers") for n in reached)
    # `momentum` (the old behaviour) moves the LM head on the same step:
    trainer, step = trainer_at_first_meta_step(tmp_path / "m", corpus_dir, **{"meta.untouched": "momentum"})
    head = dict(trainer.model.named_parameters())["lm_head.weight"]
    before = head.detach().clone()
    trainer.step(step)
    assert not torch.equal(head.detach(), before)


def test_microbatch_share_converges_and_is_pure():
    cfg = load_config(None, ["meta.enabled=true", "meta.schedule=microbatch", "meta.hybrid=0.3"]).meta
    four, two = StepPlanner(cfg, 7, 4), StepPlanner(cfg, 7, 2)
    draws = [m for step in range(2000) for m in four.plan(step).micro_meta]
    assert abs(sum(draws) / len(draws) - 0.3) < 0.02
    assert four.plan(123) == StepPlanner(cfg, 7, 4).plan(123)
    assert four.plan(123).micro_meta[:2] == two.plan(123).micro_meta  # micro m's draw is its own
    kinds = {four.plan(s).kind for s in range(200)}
    assert kinds == {"ar", "meta", "mixed"}  # the kind follows the one draw per micro-batch
    assert all((p.kind == "meta") == all(p.micro_meta) for p in map(four.plan, range(200)))


MICRO = {**META, "meta.schedule": "microbatch", "train.grad_accum": 2, "train.steps": 8, "meta.episodes_per_step": 2}


def test_microbatch_runs_resume_exactly(tmp_path, corpus_dir, monkeypatch):
    def run(name):
        return train_tiny(corpus_dir, tmp_path / name, **MICRO)

    assert run("full") == 0
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")[1:]
    assert {r["step_kind"] for r in rows} >= {"mixed"}
    interrupt_and_resume(monkeypatch, lambda: run("resumed"), at_step=6)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


def test_microbatch_two_processes_match_one(tmp_path, corpus_dir):
    one, two = train_one_and_two_processes(tmp_path, corpus_dir, **{**MICRO, "train.steps": 4, "train.eval_every": 2})
    assert_processes_match(one, two, ("loss", "val_loss", "meta_loss", "query_acc"))


def test_token_accounting_counts_each_training_row_once(tmp_path, corpus_dir):
    """Dense episodes consume training rows: a meta micro-batch's rows count as consumed tokens, and a
    weighted step's dense episodes reuse the next-token rows (counted once)."""
    dense = {"meta.layout": "dense", "meta.k_shot": 1, "meta.q_query": 1, "meta.n_way": 2, "meta.episodes_per_step": 1,
             "train.steps": 3, "train.eval_every": 3, "train.save_every": 3}
    for name, extra in (("weighted", {"meta.schedule": "weighted", "meta.weight": 0.5}),
                        ("micro", {"meta.schedule": "microbatch", "train.grad_accum": 2})):
        assert train_tiny(corpus_dir, tmp_path / name, **{**META, **dense, **extra}) == 0
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        assert [r["tokens"] for r in rows] == [0, 4 * 32, 8 * 32, 12 * 32], name  # batch 4 × seq 32 per step
        # every meta step's row records the realised episode: at most one query item per row (q_query 1)
        # in the episode's rows (weighted: the whole batch of 4; microbatch: a micro-batch of 2)
        metas = [r for r in rows[1:] if r["step_kind"] != "ar"]
        assert metas and all(1 <= r["episode_classes"] <= 2 and r["episode_support_min"] <= r["episode_support_median"]
                             and 1 <= r["episode_query_items"] <= {"weighted": 4, "micro": 2}[name] for r in metas)


# ---- a control arm is its meta arm with the meta gradient's value changed (DESIGN 2.4) -------------
def lockstep(tmp_path, corpus, arm: dict, control: dict, steps: int = 8) -> set[str]:
    """Train the meta arm and its control side by side; after every optimizer step both hold
    bit-identical weights and optimizer state. Returns the step kinds the arm went through."""
    runs = [Trainer.build(load_config(None, tiny_overrides(corpus, tmp_path / name, **{**META, **extra})))
            for name, extra in (("arm", arm), ("control", control))]
    kinds = set()
    for step in range(steps):
        for trainer in runs:
            trainer.step(step)
        kinds.add(runs[0].kind_of(step))
        (a, a_state), (c, c_state) = (snapshot(t) for t in runs)
        assert a.keys() == c.keys()
        for n in a:
            assert torch.equal(a[n], c[n]), f"step {step} ({kinds}): {n} differs"
        assert a_state.keys() == c_state.keys(), f"step {step}: optimizer state of different parameters"
        for i in a_state:
            assert a_state[i].keys() == c_state[i].keys()
            assert all(torch.equal(a_state[i][k], c_state[i][k]) for k in a_state[i]), f"step {step}: state {i}"
    return kinds


SCHEDULES = {"interleave": {}, "random": {"meta.schedule": "random"},
             "weighted": {"meta.schedule": "weighted", "meta.weight": 0.3},
             "microbatch": {"meta.schedule": "microbatch", "train.grad_accum": 2}}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("untouched", ["freeze", "momentum"])
def test_momentum_control_is_the_meta_arm_with_a_zero_meta_gradient(tmp_path, corpus_dir, monkeypatch, schedule,
                                                                      untouched):
    """The meta arm's query loss scaled by zero (a zero outer gradient on everything it reaches) and
    its momentum control end every step identical: weights and AdamW state (the old control
    zero-filled the LM head too, which a `freeze` arm's meta step leaves alone)."""
    monkeypatch.setattr(FOMAML, "apply", lambda self, episode, weight: (episode.query_loss * (0.0 * weight)).backward())
    arm = {**SCHEDULES[schedule], "meta.untouched": untouched}
    kinds = lockstep(tmp_path, corpus_dir, arm, {**arm, "meta.control": "momentum"})
    assert kinds == {"weighted": {"mixed"}, "microbatch": {"ar", "meta", "mixed"}}.get(schedule, {"ar", "meta"})


def test_skip_control_is_the_meta_arm_without_a_meta_gradient(tmp_path, corpus_dir, monkeypatch):
    """Under `microbatch`: the meta work writing no gradient at all (an all-meta step then updates
    nothing; a mixed step is its next-token micro-batches alone) is the skip control."""
    monkeypatch.setattr(FOMAML, "apply", lambda self, episode, weight: None)
    arm = SCHEDULES["microbatch"]
    assert lockstep(tmp_path, corpus_dir, arm, {**arm, "meta.control": "skip"}) == {"ar", "meta", "mixed"}


def test_reached_parameters_are_what_a_meta_step_writes(tmp_path, corpus_dir, monkeypatch):
    """`MetaTask.reached_parameters` (what a momentum control zero-fills) against the `.grad`s a real
    meta step leaves, for several algorithms and inner loops."""
    for name, extra in (("fomaml", {}), ("reptile", {"meta.algorithm": "reptile"}),
                        ("reptile_last", {"meta.algorithm": "reptile", "meta.inner_params": "head+last_n_layers",
                                          "meta.inner_lr": 0.01}),
                        ("lm", {"meta.task": "lm", "meta.smlmt_variant": "sentence", "meta.head_init": "null"})):
        trainer, step = trainer_at_first_meta_step(tmp_path / name, corpus_dir, **extra)
        wrote: set[str] = set()
        monkeypatch.setattr(faults, "after_gradients",
                            lambda step, model, t=trainer: wrote.update(n for n, p in t.trainable if p.grad is not None))
        trainer.step(step)
        reached = {id(p) for p in trainer.meta.reached_parameters(trainer.model)}
        assert {n for n, p in trainer.trainable if id(p) in reached} == wrote, name
        assert ("lm_head.weight" in wrote) == (name == "lm"), name
