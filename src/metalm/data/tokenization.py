"""Streaming a corpus into the token store (DESIGN 2.9): sources are read a batch of documents at
a time, text is encoded in parallel (`data.encode`), token ids are read as they are
(`data.pretokenized`), and the tokens are appended to on-disk files as they come, so memory stays
flat from megabytes to terabytes of text.

Where documents go: with a separate validation source every training document is trained on;
without one, document i (counting from 0 over the training sources, in order) is held out when
i mod k = k // 2, k = round(1 / data.val_fraction) — spread over the corpus, independent of the seed.
A corpus of one document is split inside it (its last val_fraction of tokens is held out); a corpus
whose few documents miss every held-out index holds out its last document.

`data.max_tokens` caps the training stream: documents are read in order and the one that crosses
the budget is cut there, so the training and held-out splits together hold exactly max_tokens
tokens (or fewer, when the sources run out first).

Interruptions: the work happens in `<entry>.partial/` under an exclusive lock (a second process
waits, then reads the finished entry); progress is committed every `COMMIT_TOKENS` tokens (files
synced, then a manifest written atomically), and a re-run resumes from the last commit. The entry
appears under its final name only when complete, so no partial entry ever looks complete. A partial
entry of other sources or settings, untouched for a week, is removed by the next tokenization.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic
from ..errors import DataError
from .doc_batch import DocBatch
from .encode import Encoder, TextBatch, encode_stream, text_batches
from .pretokenized import token_batches
from .sources import HubDataset, iter_documents
from .token_writer import SplitWriter

log = logging.getLogger("metalm.data")

COMMIT_TOKENS = 1 << 25
MANIFEST = "progress.json"
INFO = "info.json"
LOG_EVERY_S = 15.0
STALE_PARTIAL_S = 7 * 24 * 3600  # an interrupted tokenization nobody resumed for a week is removed


@dataclass
class Phase:
    """One stream of sources written into `split` (None: the training stream, held-out documents
    routed to validation)."""

    key: str  # config key, for messages: data.train / data.validation
    sources: list[Path | HubDataset]
    holds_tokens: list[bool]
    split: str | None
    budget: int | None = None  # tokens (data.max_tokens, the training stream only)


@dataclass
class _Progress:
    """What has been written, as the manifest stores it."""

    phase: int = 0
    units: int = 0  # batches of the current phase consumed
    next_doc: int = 0  # index of the next document to start (training stream)
    taken: int = 0  # training-stream tokens written (the budget's count)
    budget_reached: bool = False
    fix: dict | None = None  # the held-out corner case, once decided (see `_hold_out_small`)
    writers: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)


def held_out(doc: np.ndarray, fraction: float) -> np.ndarray:
    """Whether training-stream documents `doc` are held out for validation (see the module docstring)."""
    k = max(2, round(1 / fraction))
    return np.asarray(doc) % k == k // 2


class _Display:
    """Tokenization progress (when `enabled`): a tqdm bar (bytes of text, MB/s, tokens) on a terminal, a
    log line every `LOG_EVERY_S` seconds otherwise; and a summary line at the end in any case."""

    def __init__(self, key: str, enabled: bool, processes: int, text: bool):
        self.key, self.enabled, self.processes, self.text = key, enabled, processes, text
        self.bytes = self.tokens = 0
        self.start = self.last_log = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="B" if text else "tok", unit_scale=True, unit_divisor=1000, dynamic_ncols=True,
                            desc=f"tokenizing {key}" if text else f"reading {key}", file=sys.stderr)

    def update(self, batch: DocBatch) -> None:
        self.bytes += batch.text_bytes
        self.tokens += batch.n_tokens
        if self.bar is not None:
            self.bar.update(batch.text_bytes if self.text else batch.n_tokens)
            self.bar.set_postfix(tokens=f"{self.tokens / 1e6:.1f}M", refresh=False)
        elif self.enabled and time.perf_counter() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.perf_counter()
            log.info("%s", self.line("tokenizing"))

    def line(self, verb: str) -> str:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        text = f"{self.bytes / 1e6:,.1f} MB of text, " if self.bytes else ""
        rate = f"{self.bytes / 1e6 / seconds:,.1f} MB/s" if self.bytes else f"{self.tokens / 1e6 / seconds:,.1f}M tokens/s"
        return (f"{verb} {self.key}: {text}{self.tokens / 1e6:,.2f}M tokens in {seconds:,.1f} s ({rate}, "
                f"{self.processes} process{'es' if self.processes > 1 else ''})")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tokens:  # the summary, with or without a progress display; a job of a moment is not worth a line
            big = time.perf_counter() - self.start >= 1.0 or self.tokens >= 1_000_000
            log.log(logging.INFO if big else logging.DEBUG, "%s", self.line("tokenized"))


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One writer per cache entry: others wait here, then find the entry finished."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is tokenizing the same data into %s; waiting for it", lock_path.parent)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prune_stale_partials(tokens_dir: Path, keep: Path, max_age_s: float = STALE_PARTIAL_S) -> None:
    """Remove other entries' interrupted tokenizations untouched for `max_age_s` (their sources or
    settings changed since, so nothing will resume them); one being written (lock held) is kept."""
    for partial in tokens_dir.glob("*.partial"):
        if partial == keep:
            continue
        manifest = partial / MANIFEST
        with contextlib.suppress(FileNotFoundError):
            age = time.time() - (manifest if manifest.exists() else partial).stat().st_mtime
            if age < max_age_s:
                continue
            with open(partial.with_name(partial.name.removesuffix(".partial") + ".lock"), "a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    shutil.rmtree(partial, ignore_errors=True)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            log.info("removed an interrupted tokenization not resumed for %.0f days: %s", age / 86400, partial)


class StoreBuilder:
    """Writes one cache entry from its phases (training stream, then a validation source if any)."""

    def __init__(self, directory: Path, phases: list[Phase], encoder: Encoder, vocab: int, data_cfg,
                 processes: int, progress: bool):
        self.directory, self.phases, self.encoder, self.vocab = directory, phases, encoder, vocab
        self.data_cfg, self.processes, self.show = data_cfg, processes, progress
        self.partial = directory.with_name(directory.name + ".partial")
        self.dtype = encoder.dtype

    # -- the whole build ---------------------------------------------------------------------------
    def build(self, is_complete, info: dict) -> None:
        """Write the entry unless `is_complete()` (another process finished it while we waited)."""
        prune_stale_partials(self.directory.parent, self.partial)
        with _exclusive(self.directory.with_name(self.directory.name + ".lock")):
            if is_complete():
                return
            try:
                self._build(info)
            except DataError:
                shutil.rmtree(self.partial, ignore_errors=True)  # bad input: nothing worth resuming
                raise

    def _build(self, info: dict) -> None:
        prog = self._resume()
        self.writers = {s: SplitWriter(self.partial, s, self.dtype, **prog.writers.get(s, {}))
                        for s in ("train", "validation")}
        try:
            for index in range(prog.phase, len(self.phases)):
                self._run_phase(index, prog)
                prog.phase, prog.units = index + 1, 0
                self._commit(prog)
            if self.phases[0].split is None:
                self._hold_out_small(prog)
            for w in self.writers.values():
                w.sync()
            self._publish(info, prog)
        finally:
            for w in self.writers.values():
                w.close()

    def _resume(self) -> _Progress:
        manifest = self.partial / MANIFEST
        if manifest.is_file():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                saved = json.loads(manifest.read_text())
                if saved.get("entry") == self.directory.name:
                    prog = _Progress(**{k: v for k, v in saved.items() if k != "entry"})
                    log.info("resuming the interrupted tokenization in %s (%s tokens written)", self.partial,
                             f"{sum(w['tokens'] for w in prog.writers.values()):,}")
                    return prog
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        sources = [{"source": _name(src), "split": p.key, "kind": "tokens" if tok else "text", "documents": 0,
                    "tokens": 0, "eod_added": 0} for p in self.phases for src, tok in zip(p.sources, p.holds_tokens)]
        return _Progress(sources=sources)

    def _commit(self, prog: _Progress, **states: dict) -> None:
        """Sync the files, then record their sizes (`states` overrides a writer's, for a cut to come)."""
        for w in self.writers.values():
            w.sync()
        prog.writers = {s: states.get(s, w.state()) for s, w in self.writers.items()}
        write_json_atomic(self.partial / MANIFEST, {"entry": self.directory.name, **prog.__dict__})

    # -- one stream ------------------------------------------------------------------------------
    def _units(self, phase: Phase) -> Iterator[TextBatch | DocBatch]:
        cfg = self.data_cfg
        for i, (src, tokens) in enumerate(zip(phase.sources, phase.holds_tokens)):
            if tokens:
                yield from token_batches(src, i, cfg, self.vocab, self.encoder.eos, self.dtype)
            else:
                yield from text_batches(iter_documents(src, cfg.text_field, cfg.txt_documents), i)

    def _run_phase(self, index: int, prog: _Progress) -> None:
        phase = self.phases[index]
        first_source = sum(len(p.sources) for p in self.phases[:index])
        display = _Display(phase.key, self.show, self.processes, not all(phase.holds_tokens))
        units = itertools.islice(self._units(phase), prog.units, None)
        open_doc = False
        since_commit = 0
        batch: DocBatch | None  # None: the token budget was spent at a batch boundary
        try:
            for batch in encode_stream(units, self.encoder, self.processes):
                prog.units += 1
                if phase.budget is not None:
                    left = phase.budget - prog.taken
                    if batch.n_tokens >= left:
                        batch = batch.cut(left) if left > 0 else None
                        prog.budget_reached = True
                if batch is not None and batch.n_tokens:
                    self._write(batch, phase, prog, open_doc)
                    open_doc = batch.continues
                    stats = prog.sources[first_source + batch.source]
                    stats["documents"] += len(batch.lengths) - int(batch.continues)
                    stats["tokens"] += batch.n_tokens
                    stats["eod_added"] += batch.eod_added
                    display.update(batch)
                    since_commit += batch.n_tokens
                if prog.budget_reached:
                    break
                if not open_doc and since_commit >= COMMIT_TOKENS:
                    self._commit(prog)
                    since_commit = 0
        finally:
            display.close()
        if prog.next_doc == 0 if index == 0 else self.writers["validation"].n_docs == 0:
            names = ", ".join(_name(s) for s in phase.sources[:3]) + (" …" if len(phase.sources) > 3 else "")
            raise DataError(f"{phase.key}: no documents in {names} (empty or whitespace only)")

    def _write(self, batch: DocBatch, phase: Phase, prog: _Progress, open_doc: bool) -> None:
        """Append a batch, each document to its split (held-out routing on the training stream)."""
        n = len(batch.lengths)
        first = prog.next_doc - 1 if open_doc else prog.next_doc
        prog.next_doc = first + n
        if phase.budget is not None:
            prog.taken += batch.n_tokens
        route = held_out(first + np.arange(n), self.data_cfg.val_fraction) if phase.split is None \
            else np.full(n, phase.split == "validation")
        ends = np.cumsum(batch.lengths)
        starts = ends - batch.lengths
        finished = np.ones(n, bool)
        finished[-1] = not batch.continues
        change = np.flatnonzero(route[1:] != route[:-1]) + 1
        for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [n]])):
            lo, hi = int(starts[a]), int(ends[b - 1])
            run_ends = ends[a:b][finished[a:b]] - lo
            self.writers["validation" if route[a] else "train"].write(batch.tokens[lo:hi], run_ends)

    def _hold_out_small(self, prog: _Progress) -> None:
        """The corner cases of the held-out rule: one document (split inside it), or documents that
        all missed the held-out index (the last one is held out). The tail is copied to validation
        and committed before the training files are cut, so an interruption anywhere resumes right."""
        train, val = self.writers["train"], self.writers["validation"]
        if prog.fix is None:
            if val.n_docs or train.n_docs == 0:
                return
            if train.n_docs == 1:
                cut, docs = int(train.n_tokens * (1 - self.data_cfg.val_fraction)), 1
            else:
                cut, docs = train.doc_start(train.n_docs - 1), train.n_docs - 1
            tail = train.read(cut, train.n_tokens)
            val.write(tail, np.array([tail.size]))
            prog.fix = {"tokens": cut, "docs": docs}
            self._commit(prog, train={"tokens": cut, "docs": docs})
        train.truncate(prog.fix["tokens"], prog.fix["docs"])
        train.set_doc_end(prog.fix["docs"], prog.fix["tokens"])  # one document shortened to the cut

    def _publish(self, info: dict, prog: _Progress) -> None:
        splits = {s: {"tokens": w.n_tokens, "documents": w.n_docs} for s, w in self.writers.items()}
        budget = self.phases[0].budget
        info = {**info, "format": None, "dtype": self.dtype.name, "splits": splits,
                "tokens": sum(v["tokens"] for v in splits.values()), "sources": prog.sources,
                "max_tokens": budget, "max_tokens_reached": prog.budget_reached if budget is not None else None}
        from .token_store import FORMAT_VERSION, entry_checks

        info["format"] = FORMAT_VERSION
        info["checks"] = entry_checks(self.partial, splits)
        write_json_atomic(self.partial / INFO, info)
        (self.partial / MANIFEST).unlink()
        if self.directory.exists():  # an entry of an older format under the same name, or a damaged one
            shutil.rmtree(self.directory)
        os.replace(self.partial, self.directory)
        fd = os.open(self.directory.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _name(src: Path | HubDataset) -> str:
    return f"hf:{src.name}" + (f":{src.config}" if src.config else "") + f"@{src.split}" \
        if isinstance(src, HubDataset) else str(src)
