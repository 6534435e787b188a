"""The training loop: one short loop for vanilla and meta-learned pretraining.

Each optimizer step is a next-token (AR) step, a meta step, or both (chosen by
`training/step_plan.py`, executed by `training/step.py`); AdamW applies the shared LR schedule; the work is accounted. Everything
periodic — validation, metrics rows, learning dynamics, checkpoints, the status heartbeat, the
progress display — is a component that decides its own timing (`training/`, `dynamics/recorder.py`),
so `_loop` reads top to bottom. A run resumes exactly from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .accounting import Work
from .checkpoint import save_pretrained_atomic
from .config import Config, check_launch
from .config_diff import config_differences
from .data import PackedSequences, TrainBatches, cache_root, prepare_corpus, validation_batches
from .data.pipeline import data_changes
from .device import autocast_context, compile_enabled, defers_host_syncs, enable_tf32, fused_adamw, resolve_device
from .dir_lock import hold_lock
from .distributed import Dist, data_parallel_loss, init_distributed, shutdown
from .dynamics.probe import probe_batch
from .dynamics.phases import format_phase_readout
from .dynamics.recorder import DynamicsRecorder
from .errors import ConfigError, DivergedError, StorageError
from .model import build_model, describe, forward_flops_per_token
from .model_card import write_model_card
from .peak_flops import peak_tflops
from .run_dir import RunDir
from .run_log import RunLog, check_loggers
from .schedule import lr_at
from .step_ranges import show_ranges, step_ranges
from .tokenizer import load_tokenizer, special_token_ids
from .training.cadence import Cadence
from .training import faults
from .training.checkpointer import Checkpointer
from .training.guard import NonFiniteGuard
from .training.losses import next_token_loss
from .training.progress import Progress
from .training.rows import RowPolicy
from .training.signals import interrupt_on_signals
from .training.state import TrainState
from .training.step import StepRunner
from .training.step_plan import StepPlan, StepPlanner
from .training.validation import Validator

log = logging.getLogger("metalm.train")

__all__ = ["StepResult", "Trainer", "train", "decay_groups"]


def decay_groups(params: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings included), none on norms and biases."""
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass(frozen=True)
class StepResult:
    """One optimizer step: its kind, the row fields it measured (tensors until read), its work, the
    learning rate it used and the gradient norm before clipping."""

    kind: str
    fields: dict
    work: Work
    lr: float
    grad_norm: torch.Tensor


class Trainer:
    """Owns a run: data, model, optimizer, training state, run directory; `run()` trains to the end.

    The API used outside this module (`bench`, the benchmarks, the tests):

        Trainer(cfg).run()                   # a whole run (resumes), as `metalm train`
        trainer = Trainer.build(cfg)         # data, model, optimizer; nothing is written
        result = trainer.step(step)          # one optimizer step (kind="ar"/"meta" forces its work)
        trainer.gradients(step)              # its gradients only (what step() computes before AdamW)
        trainer.kind_of(step); trainer.state; trainer.check_finite(); trainer.world_size
        trainer.close()                      # leave the process group (a built trainer under torchrun)
        trainer.model / optimizer / trainable / meta / device / batches / corpus / probe / autocast()

    The last line: what a prepared trainer holds, to read (a benchmark times the model and the
    optimizer, a test inspects AdamW's state). Faults are injected through `metalm.training.faults`.
    Everything else is internal (a leading underscore).
    """

    @classmethod
    def build(cls, cfg: Config) -> Trainer:
        trainer = cls(cfg)
        trainer._prepare()
        return trainer

    def step(self, step: int, kind: str | None = None) -> StepResult:
        """Optimizer step `step` (0-based) as the run takes it, or, with `kind` "ar" or "meta", as a
        pure next-token or meta step whatever the schedule (benchmarks); `state` is not advanced."""
        result_kind, fields, work = self.gradients(step, kind)
        lr, grad_norm = self._apply(step)
        return StepResult(result_kind, fields, work, lr, grad_norm)

    def gradients(self, step: int, kind: str | None = None) -> tuple[str, dict, Work]:
        """The first half of `step`: the gradients of step `step` (left on the parameters, AdamW not
        applied), with the step's kind, the row fields it measured and its work (tests that count what
        the gradient computation does; a following `step` would add to these gradients)."""
        plan = self._planner.plan(step) if kind is None else self._planner.forced(kind)
        return self._gradients(step, plan)

    @property
    def world_size(self) -> int:
        """How many processes train together (1 without torchrun)."""
        return self._dist.world_size

    def close(self) -> None:
        """Leave the process group, if this trainer joined one (`run` does it on its own)."""
        self._release_ddp()
        shutdown(self._dist)

    def check_finite(self) -> None:
        """The deferred non-finite check (CUDA with fused AdamW), as the loop runs it at a logged row."""
        self._guard.check()

    def __init__(self, cfg: Config):
        self._cfg = cfg
        self._run_dir = RunDir(cfg.run.dir)
        self.device = resolve_device(cfg.run.device, "run.device")
        if cfg.run.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.run.threads)
        self._dist: Dist = init_distributed(self.device.type, cfg.run.dist_timeout_s)
        self._ddp = None  # the DDP wrapper of the next-token loss, built by _prepare under torchrun
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self._dist.local_rank)
        enable_tf32(self.device)
        check_launch(cfg, self._dist.world_size)
        t = cfg.train
        self.state = TrainState()
        # Fused AdamW where it pays (CUDA); there, the non-finite check stays on the device too.
        self._fused = fused_adamw(self.device)
        self._deferred = self._fused and defers_host_syncs(self.device)
        self._guard = NonFiniteGuard(t.on_nonfinite, t.max_skipped_steps, self.state, deferred=self._deferred)
        self._compiled = compile_enabled(cfg.run.compile, self.device)
        # The next-token loss of training steps: compiled, or the plain function. Only this function
        # is compiled — the model object is untouched (its state_dict keys and checkpoints are the same;
        # under DDP the wrapper holds this loss, `data_parallel_loss`), and validation, meta steps and
        # dynamics probes run eagerly.
        self._ar_loss = torch.compile(next_token_loss) if self._compiled else next_token_loss

    def autocast(self):
        return autocast_context(self._cfg.run.precision, self.device)

    # -- set-up ---------------------------------------------------------------------------------
    def _check_same_config(self) -> None:
        saved = self._run_dir.read_config()
        if saved is None:
            return
        diffs = config_differences(saved, self._cfg.to_dict())
        if diffs:
            raise ConfigError(
                f"run directory {self._run_dir.path} holds a run with a different config ({'; '.join(diffs[:3])}"
                f"{' …' if len(diffs) > 3 else ''}); resume it with its own config or choose another run.dir"
            )

    def _check_same_data(self) -> None:
        """A run resumes only on the data it started on (the cache key recorded in data.json; each
        checkpoint records it too): other data is refused like a changed config, naming what changed."""
        saved = self._run_dir.read_data_info()
        key = (saved or {}).get("key") or Path((saved or {}).get("cache", "")).name
        if saved and key and key != self.corpus.info["key"]:
            raise ConfigError(f"run directory {self._run_dir.path} was trained on other data "
                              f"({data_changes(saved, self.corpus.info)}); resume it on the data it started on or "
                              "choose another run.dir")

    def _prepare(self) -> None:
        """Data, model, optimizer and the loop's components (nothing is written yet)."""
        cfg, t = self._cfg, self._cfg.train
        tokenizer = load_tokenizer(self._run_dir.tokenizer_dir) if self._run_dir.has_tokenizer() else None
        # Rank 0 tokenizes (and trains the tokenizer) into the cache; the others then read it.
        self.corpus = self._dist.main_first(lambda: prepare_corpus(cfg.data, cfg.run.cache_dir, tokenizer,
                                                                  progress=cfg.run.progress and self._dist.is_main))
        self._tokenizer = self.corpus.tokenizer
        self._train_seqs = PackedSequences(self.corpus.train, t.seq_len, "data.train")
        self.batches = TrainBatches(self._train_seqs, t.batch_size, cfg.run.seed)
        val_batches = validation_batches(PackedSequences(self.corpus.validation, t.seq_len, "data.validation"),
                                         t.batch_size, t.eval_batches)
        # the probe batch only where dynamics are recorded (post hoc analysis rebuilds it)
        self.probe = probe_batch(cfg.dynamics, t.seq_len, self.corpus.validation) if cfg.dynamics.every > 0 else None

        torch.manual_seed(cfg.run.seed)
        self.model = build_model(
            cfg.model.preset, len(self._tokenizer), hf_config=cfg.model.hf_config,
            special_token_ids=special_token_ids(self._tokenizer),
            attn_implementation=cfg.model.attn_implementation, **cfg.model.overrides(),
        ).to(self.device)  # type: ignore[arg-type]  # typeshed: a wraps()-decorated method's self stays unbound
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        if cfg.model.context_length() is None and ctx is not None and t.seq_len > ctx:  # known only now
            raise ConfigError(f"train.seq_len {t.seq_len} exceeds the model's context {ctx}")
        self._fwd_flops = forward_flops_per_token(self.model, t.seq_len)
        self.meta = self._build_meta_task()
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self.meta is not None:
            self.trainable += self.meta.extra_named_parameters()
        self.optimizer = torch.optim.AdamW(
            decay_groups(self.trainable, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
            **({"fused": True} if self._fused else {}),
        )
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]  # clipping order
        if self._dist.enabled:  # DDP over the (compiled) loss: the loss compiles over the bare model
            self._ddp = data_parallel_loss(self.model, self._ar_loss, self.device)

        self._planner = StepPlanner(cfg.meta, cfg.run.seed, t.grad_accum)
        self._runner = StepRunner(self.model, self._ddp, self._ar_loss, self.meta, self.trainable, self.batches,
                                 self._dist, self.device, self.autocast, t.grad_accum, t.seq_len, self._fwd_flops)
        main = self._dist.is_main
        self._validator = Validator(self.model, val_batches, Cadence(t.eval_every, t.steps), self._dist, self.device,
                                   self.autocast)
        self._checkpointer = Checkpointer(self._run_dir, Cadence(t.save_every, t.steps), t.keep_checkpoints, self.model,
                                         self.optimizer, self.state, self.meta, self.device, main,
                                         data_key=self.corpus.info["key"])
        peak = peak_tflops(cfg.run.peak_tflops, self.device) if main else None
        self._rows = RowPolicy(Cadence(t.log_every, t.steps), self._planner.kind if self._planner.mixes_kinds else None,
                              peak * 1e12 * self._dist.world_size if peak is not None else None)

    def kind_of(self, step: int) -> str:
        """The kind of 0-based optimizer step `step` (a pure function of the seed and the step)."""
        return self._planner.kind(step)

    def _build_meta_task(self):
        """The meta-learning task of a meta run (None for vanilla); rank 0 builds the occurrence
        index into the cache first, the others then read it."""
        if not self._cfg.meta.enabled:
            return None
        from .meta.task import MetaTask

        def build():
            return MetaTask(self._cfg.meta, self.corpus.train.tokens, self.corpus.train.doc_offsets, self._tokenizer,
                            self.model, seed=self._cfg.run.seed, cache_dir=cache_root(self._cfg.run.cache_dir) / "meta")

        return self._dist.main_first(build)

    def _create_run_dir(self) -> None:
        """Write the run's fixed inputs (config, tokenizer, probe batch, data description) once."""
        if not self._dist.is_main:
            return
        run = self._run_dir
        run.path.mkdir(parents=True, exist_ok=True)
        if run.read_config() is None:
            run.write_config(self._cfg.to_dict())
        if not run.has_tokenizer():
            run.write_tokenizer(self._tokenizer)
        if self.probe is not None and not run.probe_path.is_file():
            run.write_probe(self.probe)
        run.write_data_info(self.corpus.info)

    def _restore(self, runlog: RunLog) -> None:
        """Load the newest usable checkpoint and cut the rows back to it (without one, the run restarts
        from step 0 and every row goes); rows lost before it are reported (`metrics_gaps` in status)."""
        step = self._checkpointer.restore()
        if self._dist.is_main:
            self._run_dir.truncate_rows(step)
            if step is not None:
                log.info("resuming %s from step %d", self._run_dir.path, step)
                logged = (s for s in range(step + 1) if s == 0 or self._rows.cadence.due(s) or self._validator.due(s))
                gaps = step_ranges(self._run_dir.missing_rows(logged))
                if gaps:
                    log.warning("%s lacks the rows of steps %s, written before the checkpoint of step %d; they "
                                "cannot be regenerated (recorded as metrics_gaps in the status)",
                                self._run_dir.metrics_path, show_ranges(gaps), step)
                    runlog.status_extra["metrics_gaps"] = gaps
        self._dist.barrier()
        self._rows.resume(self.state)

    # -- steps ----------------------------------------------------------------------------------
    def _gradients(self, step: int, plan: StepPlan) -> tuple[str, dict, Work]:
        """Gradients of optimizer step `step`: the step kind, the row fields it measured, the work."""
        if faults.before_step is not None:
            faults.before_step(step)
        fields, work = self._runner(step, plan)
        if faults.after_gradients is not None:
            faults.after_gradients(step, self.model)
        return plan.kind, fields, work

    def _apply(self, step: int) -> tuple[float, torch.Tensor]:
        """Clip, apply AdamW at the step's learning rate unless the gradient norm is non-finite
        (`train.on_nonfinite`: stop or skip; decided on the device on CUDA, see `training/guard.py`),
        clear the gradients; returns (lr, grad norm)."""
        lr = lr_at(step, self._cfg.train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        clip = self._cfg.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, clip)
        self._guard.step(self.optimizer, step, grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        return lr, grad_norm

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to the end (or resume). SIGINT and SIGTERM raise KeyboardInterrupt (status
        "interrupted"); divergence raises DivergedError (status "diverged"); a full disk StorageError."""
        cfg = self._cfg
        self._run_dir.check_writable()
        self._check_same_config()
        if self._run_dir.is_finished():
            if self._dist.is_main:
                log.info("run %s already finished (step %d); nothing to do", self._run_dir.path, cfg.train.steps)
                for problem in self._run_dir.metrics_problems():
                    log.warning("%s", problem)
            return self._run_dir.path
        check_loggers(cfg)
        self._prepare()
        # One trainer per run directory (rank 0 holds the lock for every rank), taken once the data and
        # model are known to be good, before anything is written into the run directory.
        lock = hold_lock(self._run_dir.path, "run directory", "wait for it to end or choose another run.dir") \
            if self._dist.is_main else contextlib.nullcontext()
        try:
            with lock:
                self._check_same_data()
                self._create_run_dir()
                self._train_locked()
        finally:
            self.close()
        return self._run_dir.path

    def _train_locked(self) -> None:
        """Restore and train to the end, recording how the run stopped in its status."""
        runlog = RunLog(self._run_dir, self._cfg, enabled=self._dist.is_main)
        try:
            with interrupt_on_signals():
                self._restore(runlog)
                self._loop(runlog)
                self._dist.barrier()  # every rank's collectives are done before the group is torn down
        except KeyboardInterrupt:
            self._record_end(runlog, "interrupted")
            raise
        except DivergedError as exc:
            self._record_end(runlog, "diverged", error=str(exc))
            raise
        except OSError as exc:
            self._record_end(runlog, "failed")
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(f"no space left on the device of {exc.filename or self._run_dir.path}; free some "
                                   "and re-run the same command to resume from the last checkpoint") from exc
            raise
        except BaseException:
            self._record_end(runlog, "failed")
            raise
        finally:
            runlog.close()

    def _record_end(self, runlog: RunLog, state: str, **extra) -> None:
        """The status of a run that stopped early (best effort: the disk may be full)."""
        with contextlib.suppress(OSError):
            runlog.status(state, self.state.step, **extra)

    def _release_ddp(self) -> None:
        """Free DDP's reducer while the process group is still registered. Otherwise the reducer
        holds the group's last reference and destroys it holding the GIL, and gloo's worker threads,
        which need the GIL to free their finished work's tensors, can never be joined: a hang at
        exit (seen with torch 2.13 on CPU)."""
        if self._ddp is not None:
            self._ddp = self._runner.ddp = None
            gc.collect()

    def _announce(self) -> None:
        t = self._cfg.train
        log.info("%s", describe(self.model, t.seq_len))
        log.info("next-token step: torch.compile %s (run.compile=%s), AdamW %s", "on" if self._compiled else "off",
                 str(self._cfg.run.compile).lower(), "fused" if self._fused else "foreach")
        log.info("data: %s training tokens (%s documents, %s sequences of %d), %s validation tokens%s",
                 f"{len(self.corpus.train):,}", f"{self.corpus.train.n_docs:,}", f"{len(self._train_seqs):,}", t.seq_len,
                 f"{len(self.corpus.validation):,}", "  [synthetic DEMO data]" if self.corpus.info.get("demo") else "")

    def _loop(self, runlog: RunLog) -> None:
        cfg, t, state = self._cfg, self._cfg.train, self.state
        main = self._dist.is_main
        dynamics = DynamicsRecorder(self._run_dir, self.model, self.probe, cfg.dynamics, t.steps, main,
                                    mirror=runlog.dynamics)
        progress = Progress(t.steps, state.step, cfg.run.name, enabled=main and cfg.run.progress)
        if main:
            self._announce()
        runlog.status("running", state.step)
        if state.step == 0:
            runlog.row({"step": 0, **state.work.as_dict(), "time": 0.0, "val_loss": self._validator.evaluate()})
            dynamics.maybe_record(0)
        self.model.train()
        while state.step < t.steps:
            started = time.perf_counter()
            kind, fields, work = self._gradients(state.step, self._planner.plan(state.step))
            lr, grad_norm = self._apply(state.step)
            after = state.step + 1
            evaluate = self._validator.due(after)
            log_row = self._rows.due(after, kind, evaluate)
            if log_row or evaluate or dynamics.due(after) or self._checkpointer.due(after):  # the loop's sync points
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # the step's time is complete before anything else runs
                self._guard.check()  # deferred non-finite check: DivergedError before anything is written
            state.advance(kind, work, time.perf_counter() - started)

            val_loss = self._validator.evaluate() if evaluate else None
            if log_row:
                row = self._rows.row(state, kind, {**fields, **self._guard.row_fields()}, lr, grad_norm, val_loss,
                                    self.meta is not None)
                runlog.row(row)
                progress.logged(row)
                runlog.heartbeat(state.step)
            dynamics.maybe_record(state.step)
            progress.step()
            self._checkpointer.maybe_save(state.step, after_save=lambda: runlog.status("running", state.step))
        progress.close()
        if main:
            readout = dynamics.readout(title=cfg.run.name)
            if readout is not None:
                log.info("%s", format_phase_readout(readout.phases))
                log.info("dynamics plots: %s", self._run_dir.plots_dir())
        self._export()
        runlog.status("finished", state.step, rows=len(self._run_dir.read_metrics()) if main else 0)
        if main:
            log.info("finished: %s (final model in %s)", self._run_dir.path, self._run_dir.final_dir)

    def _export(self) -> None:
        """Hugging Face export of the final model and tokenizer (atomically), with its model card."""
        if self._dist.is_main:
            save_pretrained_atomic(self._run_dir.final_dir, self.model, tokenizer=self._tokenizer)
            write_model_card(self._run_dir)


def train(cfg: Config) -> Path:
    return Trainer(cfg).run()
