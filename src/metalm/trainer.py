"""The training loop: one short loop for vanilla and meta-learned pretraining.

Each optimizer step is either a next-token (AR) step or a meta step (chosen by
`metalm.meta.schedule`); the loop applies AdamW with the shared LR schedule, accounts the work,
evaluates the fixed validation set, records learning dynamics, checkpoints atomically, and resumes
exactly from the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .accounting import Work, ar_work
from .config import Config, save_config
from .data import PackedSequences, TrainBatches, cache_root, evenly_spaced, prepare_corpus, validation_batches
from .distributed import Dist, init_distributed, shutdown
from .dynamics.config import probe_shape
from .dynamics.phases import format_phase_readout
from .dynamics.probe import dynamics_rows
from .dynamics.readout import write_readout
from .dynamics.rows import DYNAMICS_FILE as DYNAMICS, PROBE_FILE, append_rows
from .errors import ConfigError
from .model import build_model, describe, forward_flops_per_token
from .run_log import RunLog, read_jsonl, read_status, truncate_after, write_json_atomic
from .schedule import lr_at
from .tokenizer import load_tokenizer, special_token_ids


# Config keys that change how a run is executed or displayed, not what it computes.
EXECUTION_KEYS = {("run", "progress"), ("run", "threads"), ("run", "cache_dir"), ("run", "tensorboard"),
                  ("run", "wandb"), ("run", "device")}


@dataclass
class Counters:
    """Cumulative accounting, saved in every checkpoint."""

    step: int = 0
    work: Work = field(default_factory=Work)
    time: float = 0.0
    meta_steps: int = 0
    kinds_logged: list[str] = field(default_factory=list)  # step kinds already logged in this log interval


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast_context(cfg: Config, device: torch.device):
    use_bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def config_differences(saved: dict, current: dict) -> list[str]:
    diffs = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section) or {}, current.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if (section, key) not in EXECUTION_KEYS and a.get(key) != b.get(key):
                diffs.append(f"{section}.{key}: {a.get(key)!r} → {b.get(key)!r}")
    return diffs


def next_token_loss(model: torch.nn.Module, windows: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of predicting windows[:, 1:] from windows[:, :-1] (fp32 logits)."""
    logits = model(input_ids=windows[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), windows[:, 1:].reshape(-1), reduction=reduction)


def decay_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included), none on norms and biases."""
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Owns a run: data, model, optimizer, counters, run directory; `run()` trains to the end."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_dir = Path(cfg.run.dir)
        self.device = resolve_device(cfg.run.device)
        if cfg.run.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.run.threads)
        self.dist: Dist = init_distributed(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        t = cfg.train
        per_micro = t.batch_size // t.grad_accum
        if per_micro % self.dist.world_size:
            raise ConfigError(
                f"train.batch_size {t.batch_size} / grad_accum {t.grad_accum} = {per_micro} sequences per "
                f"micro-batch is not divisible by the {self.dist.world_size} processes"
            )
        self.per_rank = per_micro // self.dist.world_size

    # -- set-up ---------------------------------------------------------------------------------
    def finished(self) -> bool:
        status = read_status(self.run_dir)
        return bool(status and status.get("state") == "finished" and (self.run_dir / "final").is_dir())

    def check_same_config(self) -> None:
        import yaml

        saved_path = self.run_dir / "config.yaml"
        if not saved_path.is_file():
            return
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        diffs = config_differences(saved, self.cfg.to_dict())
        if diffs:
            raise ConfigError(
                f"run directory {self.run_dir} holds a run with a different config ({'; '.join(diffs[:3])}"
                f"{' …' if len(diffs) > 3 else ''}); resume it with its own config or choose another run.dir"
            )

    def prepare(self) -> None:
        cfg = self.cfg
        saved_tok = self.run_dir / "tokenizer"
        tokenizer = load_tokenizer(saved_tok) if (saved_tok / "tokenizer.json").is_file() else None
        # Rank 0 tokenizes (and trains the tokenizer) into the cache; the others then read it.
        self.corpus = self.dist.main_first(lambda: prepare_corpus(cfg.data, cfg.run.cache_dir, tokenizer))
        self.tokenizer = self.corpus.tokenizer
        t = cfg.train
        self.train_seqs = PackedSequences(self.corpus.train, t.seq_len, "data.train")
        self.batches = TrainBatches(self.train_seqs, t.batch_size, cfg.run.seed)
        self.val_batches = validation_batches(PackedSequences(self.corpus.validation, t.seq_len, "data.validation"),
                                              t.batch_size, t.eval_batches)
        self.probe = self.probe_batch()

        torch.manual_seed(cfg.run.seed)
        self.model = build_model(
            cfg.model.preset, len(self.tokenizer), hf_config=cfg.model.hf_config,
            special_token_ids=special_token_ids(self.tokenizer),
            attn_implementation=cfg.model.attn_implementation, **cfg.model.overrides(),
        ).to(self.device)
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        if ctx is not None and t.seq_len > ctx:
            raise ConfigError(f"train.seq_len {t.seq_len} exceeds the model's context {ctx}")
        self.fwd_flops = forward_flops_per_token(self.model, t.seq_len)
        self.meta = self.build_meta_task()
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self.meta is not None:
            self.trainable += self.meta.extra_named_parameters()
        self.optimizer = torch.optim.AdamW(
            decay_groups(self.trainable, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
        )
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.counters = Counters()

    def probe_batch(self) -> torch.Tensor:
        """The fixed held-out batch of the learning-dynamics probes (DESIGN 2.7): sequences spread
        evenly over the validation text, the same for every run on the same data."""
        n, length = probe_shape(self.cfg.dynamics, self.cfg.train.seq_len)
        seqs = PackedSequences(self.corpus.validation, length - 1, "data.validation (dynamics probe)")
        return torch.from_numpy(seqs.gather(evenly_spaced(len(seqs), n)))

    def record_dynamics(self, step: int, log: RunLog) -> None:
        """Append the dynamics rows of the current weights (rank 0; not counted as training time)."""
        if self.dist.is_main:
            rows = dynamics_rows(self.model, self.probe, step, self.cfg.dynamics.groups)
            append_rows(self.run_dir / DYNAMICS, rows)
            log.dynamics(rows, self.run_dir / DYNAMICS)

    def build_meta_task(self):
        """The meta-learning task of a meta run (None for vanilla); rank 0 builds the occurrence
        index into the cache first, the others then read it."""
        if not self.cfg.meta.enabled:
            return None
        from .meta import MetaTask

        def build():
            return MetaTask(self.cfg.meta, self.corpus.train.tokens, self.corpus.train.doc_offsets, self.tokenizer,
                            self.model, seed=self.cfg.run.seed, cache_dir=cache_root(self.cfg.run.cache_dir) / "meta")

        return self.dist.main_first(build)

    def create_run_dir(self) -> None:
        """Write the run's fixed inputs (config, tokenizer, data description) once."""
        if not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.yaml").is_file():
            save_config(self.cfg, self.run_dir / "config.yaml")
        if not (self.run_dir / "tokenizer" / "tokenizer.json").is_file():
            self.tokenizer.save_pretrained(self.run_dir / "tokenizer")
        if not (self.run_dir / PROBE_FILE).is_file():
            save_file({"input_ids": self.probe.contiguous()}, str(self.run_dir / PROBE_FILE))
        write_json_atomic(self.run_dir / "data.json", self.corpus.info)

    def restore(self) -> None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return
        step, path = latest
        ckpt.load_weights(self.model, path)
        if self.meta is not None:
            self.meta.load_state_dict(ckpt.load_extra(path))
        state = ckpt.load_state(path)
        self.optimizer.load_state_dict(state["optimizer"])
        c = state["counters"]
        self.counters = Counters(step=int(c["step"]), work=Work(**{k: int(v) for k, v in c["work"].items()}),
                                 time=float(c["time"]), meta_steps=int(c.get("meta_steps", 0)),
                                 kinds_logged=[str(k) for k in c.get("kinds_logged", [])])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        if self.dist.is_main:
            truncate_after(self.run_dir / "metrics.jsonl", step)
            truncate_after(self.run_dir / DYNAMICS, step)
        self.dist.barrier()
        if self.dist.is_main:
            print(f"resuming {self.run_dir} from step {step}")

    def save(self) -> None:
        if not self.dist.is_main:
            return
        c = self.counters
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        state = {"optimizer": self.optimizer.state_dict(), "rng": rng,
                 "counters": {"step": c.step, "work": c.work.as_dict(), "time": c.time, "meta_steps": c.meta_steps,
                              "kinds_logged": list(c.kinds_logged)}}
        extra = self.meta.state_dict() if self.meta is not None else None
        ckpt.save_checkpoint(self.run_dir, c.step, self.model, state, extra)
        ckpt.prune(self.run_dir, self.cfg.train.keep_checkpoints)

    # -- steps ----------------------------------------------------------------------------------
    def rank_rows(self, batch: np.ndarray, micro: int) -> torch.Tensor:
        per_micro = self.per_rank * self.dist.world_size
        start = micro * per_micro + self.dist.rank * self.per_rank
        return torch.from_numpy(batch[start:start + self.per_rank]).to(self.device)

    def ar_step(self, step: int, scale: float = 1.0) -> tuple[float, Work]:
        """Forward/backward of the step's global batch (this rank's slices), gradients scaled by
        `scale` (the next-token share of a weighted hybrid step); returns the mean loss."""
        batch = self.batches.batch(step)
        accum = self.cfg.train.grad_accum
        net = self.ddp or self.model
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for micro in range(accum):
            sync = self.ddp is None or micro == accum - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with autocast_context(self.cfg, self.device):
                    loss = next_token_loss(net, self.rank_rows(batch, micro))
                (loss * (scale / accum)).backward()
            total += loss.detach().double()
        total = self.dist.all_reduce_sum(total) / (accum * self.dist.world_size)
        return float(total), ar_work(batch.shape[0] * self.cfg.train.seq_len, self.fwd_flops)

    def train_step(self, step: int) -> tuple[str, dict, Work]:
        """Gradients of optimizer step `step`: next-token, meta, or both (weighted hybrid).

        Returns the step kind, the row fields it measured, and the work it executed."""
        meta_w, ar_w = self.meta.step_weights(step) if self.meta is not None else (0.0, 1.0)
        fields: dict = {}
        work = Work()
        if ar_w:
            fields["loss"], ar = self.ar_step(step, scale=ar_w)
            work += ar
        if meta_w:
            from .meta import reduce_stats

            batch = self.meta.episodes(step, self.dist.rank, self.dist.world_size)
            stats = self.meta.meta_step(self.model, batch, loss_scale=meta_w)
            # Parameters the meta loss does not reach (e.g. the LM head) get an explicit zero gradient,
            # so AdamW treats them alike whatever the process count (momentum still applies).
            for _, p in self.trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            # Inner loops are local; only the outer gradient is averaged across processes (next-token
            # gradients, already averaged by DDP and identical on every rank, are unchanged by this).
            self.dist.average_gradients([p for _, p in self.trainable])
            stats = reduce_stats(stats, self.dist.all_reduce_sum, self.device)
            work += stats.pop("work")
            fields.update(stats)
        kind = "mixed" if meta_w and ar_w else ("meta" if meta_w else "ar")
        return kind, fields, work

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean next-token loss on the fixed validation batches (token-weighted)."""
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for i, batch in enumerate(self.val_batches):
            if i % self.dist.world_size != self.dist.rank:
                continue
            windows = torch.from_numpy(batch).to(self.device)
            with autocast_context(self.cfg, self.device):
                nll = next_token_loss(self.model, windows, reduction="sum")
            sums[0] += nll.double()
            sums[1] += windows[:, 1:].numel()
        self.dist.all_reduce_sum(sums)
        self.model.train()
        return float(sums[0] / sums[1])

    def optimizer_step(self, step: int) -> tuple[float, float]:
        lr = lr_at(step, self.cfg.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr, grad_norm

    # -- the loop -------------------------------------------------------------------------------
    def is_boundary(self, step: int, every: int) -> bool:
        return step == self.cfg.train.steps or (every > 0 and step % every == 0)

    def run(self) -> Path:
        cfg, t = self.cfg, self.cfg.train
        self.check_same_config()
        if self.finished():
            if self.dist.is_main:
                print(f"run {self.run_dir} already finished (step {t.steps}); nothing to do")
            return self.run_dir
        self.prepare()
        self.create_run_dir()
        self.restore()
        log = RunLog(self.run_dir, cfg, enabled=self.dist.is_main)
        try:
            self._loop(log)
            self.dist.barrier()  # every rank's collectives are done before the group is torn down
        except KeyboardInterrupt:
            log.status("interrupted", self.counters.step, t.steps)
            raise
        except BaseException:
            log.status("failed", self.counters.step, t.steps)
            raise
        finally:
            log.close()
            self.release_ddp()
            shutdown(self.dist)
        return self.run_dir

    def release_ddp(self) -> None:
        """Free DDP's reducer while the process group is still registered. Otherwise the reducer
        holds the group's last reference and destroys it holding the GIL, and gloo's worker threads,
        which need the GIL to free their finished work's tensors, can never be joined: a hang at
        exit (seen with torch 2.13 on CPU)."""
        if self.ddp is not None:
            self.ddp = None
            gc.collect()

    def _loop(self, log: RunLog) -> None:
        cfg, t, c = self.cfg, self.cfg.train, self.counters
        main = self.dist.is_main
        if main:
            print(describe(self.model, t.seq_len))
            print(f"data: {len(self.corpus.train):,} training tokens ({self.corpus.train.n_docs:,} documents, "
                  f"{len(self.train_seqs):,} sequences of {t.seq_len}), {len(self.corpus.validation):,} validation tokens"
                  + ("  [synthetic DEMO data]" if self.corpus.info.get("demo") else ""))
        log.status("running", c.step, t.steps)
        every = cfg.dynamics.every
        if c.step == 0:
            log.row({"step": 0, **c.work.as_dict(), "time": 0.0, "val_loss": self.evaluate()})
            if every:
                self.record_dynamics(0, log)
        self.model.train()
        bar = tqdm(total=t.steps, initial=c.step, unit="step", dynamic_ncols=True,
                   disable=not (main and cfg.run.progress), desc=cfg.run.name)
        while c.step < t.steps:
            step = c.step
            started = time.perf_counter()
            kind, fields, work = self.train_step(step)
            lr, grad_norm = self.optimizer_step(step)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - started
            c.step += 1
            c.work += work
            c.time += elapsed
            c.meta_steps += kind != "ar"
            row = {"step": c.step, "step_kind": kind, **fields, "lr": lr, "grad_norm": grad_norm,
                   **c.work.as_dict(), "time": c.time}
            if self.meta is not None:
                row["meta_steps"] = c.meta_steps
            evaluate = self.is_boundary(c.step, t.eval_every)
            if evaluate:
                row["val_loss"] = self.evaluate()
            # Log every log_every steps, and the first step of each kind (ar / meta) in an interval, so a
            # hybrid run's rows show both losses whatever the schedule's phase relative to log_every.
            boundary = self.is_boundary(c.step, t.log_every)
            first_of_kind = self.meta is not None and kind not in c.kinds_logged
            c.kinds_logged = [] if boundary else c.kinds_logged + ([kind] if first_of_kind else [])
            if evaluate or boundary or first_of_kind:
                row["tokens_per_s"] = work.tokens / elapsed if elapsed > 0 else None
                log.row(row)
                if time.time() - log.status_written > 10:  # keep the live view's "running" fresh
                    log.status("running", c.step, t.steps)
            if every and self.is_boundary(c.step, every):
                self.record_dynamics(c.step, log)
            bar.update(1)
            shown = {"loss": f"{fields['loss']:.3f}"} if "loss" in fields else {}
            if "query_acc" in fields:
                shown["q_acc"] = f"{fields['query_acc']:.2f}"
            bar.set_postfix(**shown, tok_s=f"{work.tokens / max(elapsed, 1e-9):,.0f}", refresh=False)
            if self.is_boundary(c.step, t.save_every):
                self.save()
                log.status("running", c.step, t.steps)
        bar.close()
        if every and main:
            self.summarise_dynamics()
        self.export()
        log.status("finished", c.step, t.steps)
        if main:
            print(f"finished: {self.run_dir} (final model in {self.run_dir / 'final'})")

    def summarise_dynamics(self) -> None:
        """Phase read-out (printed, saved as phases.json) and plots from the recorded dynamics rows."""
        readout = write_readout(self.run_dir, read_jsonl(self.run_dir / DYNAMICS), self.cfg.dynamics.smoothing,
                                title=self.cfg.run.name)
        print(format_phase_readout(readout.phases))
        print(f"dynamics plots: {self.run_dir / 'plots'}")

    def export(self) -> None:
        """Hugging Face export of the final model and tokenizer (atomically)."""
        if not self.dist.is_main:
            return
        final = self.run_dir / "final"
        tmp = self.run_dir / ".tmp-final"
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        ckpt.replace_dir(tmp, final)


def train(cfg: Config) -> Path:
    return Trainer(cfg).run()
