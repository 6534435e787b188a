"""Meta-step cost of the dense SMLMT layout vs the window layout, next to an AR step (DESIGN 2.3).

At the paper's "tiny" dimensions (preset `tiny`: d 96, 12 layers, 12 heads / 4 KV heads) with a
byte-level BPE vocabulary of 8192 trained on ELTeC English, 32-way 4-shot 1-query token episodes:

- AR: a next-token step over 16 rows of 128 tokens;
- window: one episode of N·(K+Q) = 160 windows of 128 tokens, one labelled mask each;
- dense: one episode of 16 training rows of 128 tokens, up to K = 4 support and Q = 1 query masks
  per row (linear learned head, and the paper's 2-layer MLP head of width 256).

Each step is FOMAML with a head-only inner loop of 10 SGD steps, includes the AdamW update, and is
timed in one process, side by side: the arms take turns within every repeat (so load from other
processes on a shared machine falls on all of them alike); of `--repeats` after one warm-up, the
fastest wall time (the least disturbed by other load) and the medians of wall and CPU time are
kept. Reported per step: seconds, unique tokens and labelled positions, tokens/s and labelled
positions/s, and the cost per token relative to the AR step (from the fastest wall times).
Writes benchmarks/results/meta_layout.json.

    python benchmarks/meta_layout.py [--mb 2] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from common import ELTEC, machine, save_result
from metalm.data import token_store
from metalm.meta import MetaConfig, MetaTask
from metalm.model import build_model, describe
from metalm.tokenizer import train_tokenizer
from metalm.training.losses import next_token_loss

CORPUS = ELTEC / "train" / "train-00.txt"
ROWS, SEQ, VOCAB = 16, 128, 8192
EPISODE = dict(enabled=True, task="smlmt", smlmt_variant="token", n_way=32, k_shot=4, q_query=1, inner_steps=10,
               inner_lr=0.5, algorithm="fomaml", inner_params="head", band_min_count=20, band_skip_top=100)


def corpus(mb: float):
    docs = CORPUS.read_text(encoding="utf-8")[: int(mb * 2**20)].split("\n\n")[:-1]
    tok = train_tokenizer(docs, VOCAB)
    stream = token_store.concat(token_store.tokenize_documents(docs, tok), np.uint32)
    return tok, stream.tokens, stream.doc_offsets


def timed(fn, optimizer, i: int) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(i) and the optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    fn(i)
    optimizer.step()
    out = time.perf_counter() - wall, time.process_time() - cpu
    optimizer.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=2.0, help="MB of ELTeC English text to use")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/meta_layout.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tok, tokens, offsets = corpus(args.mb)
    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=len(tok))
    model.train()
    rng = np.random.default_rng(0)

    def batches(n: int) -> list[np.ndarray]:
        starts = rng.integers(0, len(tokens) - SEQ - 1, size=(n, ROWS))
        return [np.asarray(tokens[s[:, None] + np.arange(SEQ + 1)], dtype=np.int64) for s in starts]

    arms = {
        "window": MetaConfig(**EPISODE, window_len=SEQ),
        "dense": MetaConfig(**EPISODE, layout="dense"),
        "dense_mlp_head": MetaConfig(**EPISODE, layout="dense", head_layers=2, head_hidden=256),
    }
    n = args.repeats + 1
    rows = batches(n)
    params = list(model.parameters())
    ar_batches = [torch.from_numpy(b) for b in rows]
    steps = {"ar": (lambda i: next_token_loss(model, ar_batches[i]).backward(), torch.optim.AdamW(params, lr=1e-4))}
    results = {"ar": {"tokens_per_step": ROWS * SEQ, "labelled_positions_per_step": ROWS * SEQ}}
    for name, cfg in arms.items():
        task = MetaTask(cfg, tokens, offsets, tok, model, seed=0)
        episodes = [task.episodes(i, rows=rows[i]) for i in range(n)]
        steps[name] = (lambda i, task=task, episodes=episodes: task.meta_step(model, episodes[i]),
                       torch.optim.AdamW(params + task.extra_parameters(), lr=1e-4))
        labels = [sum(ep.support_labels.numel() + ep.query_labels.numel() for ep in b.episodes) for b in episodes]
        results[name] = {"tokens_per_step": episodes[0].n_tokens, "labelled_positions_per_step": statistics.median(labels),
                         "n_way": statistics.median(ep.n_way for b in episodes for ep in b.episodes)}
    times = {name: [] for name in steps}
    for i in range(n):  # the arms take turns; repeat 0 is warm-up
        for name, (fn, optimizer) in steps.items():
            t = timed(fn, optimizer, i)
            if i:
                times[name].append(t)
    for name, r in results.items():
        r["best_wall_seconds_per_step"] = min(w for w, _ in times[name])
        r["wall_seconds_per_step"] = statistics.median(w for w, _ in times[name])
        r["cpu_seconds_per_step"] = statistics.median(c for _, c in times[name])
        r["all_wall"] = [w for w, _ in times[name]]
        r["all_cpu"] = [c for _, c in times[name]]
    ar_per_token = results["ar"]["best_wall_seconds_per_step"] / results["ar"]["tokens_per_step"]
    for r in results.values():
        r["tokens_per_s"] = r["tokens_per_step"] / r["best_wall_seconds_per_step"]
        r["labelled_positions_per_s"] = r["labelled_positions_per_step"] / r["best_wall_seconds_per_step"]
        r["cost_per_token_vs_ar"] = r["best_wall_seconds_per_step"] / r["tokens_per_step"] / ar_per_token
    out = {"machine": machine(), "torch_threads": args.threads, "torch": torch.__version__,
           "model": describe(model, SEQ), "data": f"{CORPUS.name}, first {args.mb} MB, BPE vocabulary {len(tok)}",
           "episode": {k: v for k, v in EPISODE.items() if k != "enabled"}, "rows": ROWS, "seq_len": SEQ,
           "repeats": args.repeats, "results": results}
    save_result(args.out, out)
    print(f"{'':<16} {'best s':>7} {'median':>7} {'CPU s':>7} {'tokens':>7} {'labels':>7} {'N':>5} {'tokens/s':>9} "
          f"{'labels/s':>9} {'cost/token vs AR':>17}")
    for name, r in results.items():
        print(f"{name:<16} {r['best_wall_seconds_per_step']:>7.3f} {r['wall_seconds_per_step']:>7.3f} "
              f"{r['cpu_seconds_per_step']:>7.3f} {r['tokens_per_step']:>7} {r['labelled_positions_per_step']:>7.0f} "
              f"{r.get('n_way', '-'):>5} {r['tokens_per_s']:>9,.0f} {r['labelled_positions_per_s']:>9,.0f} "
              f"{r['cost_per_token_vs_ar']:>17.2f}")


if __name__ == "__main__":
    main()
