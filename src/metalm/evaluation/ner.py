"""Universal NER fine-tuning and probing of a causal-LM checkpoint (DESIGN 2.8).

Model: the checkpoint's backbone (the causal LM's base model, without its LM head) and a linear
head on the final hidden states. Words are split into sub-words; the first sub-word carries the
word's label (`ner_alignment`). Each chunk starts with the tokenizer's EOS token, because metalm
pretrains on documents each preceded by the previous one's EOS, so that is where a document
starts for the model (and it gives the first word a position of context).

Modes: `finetune` updates all weights (the paper's protocol: AdamW, batch 16, lr 3e-5, 10
epochs, linear decay to 0, no warm-up, gradient clipping at 1.0 as in the HF Trainer, the final
weights tested); `probe` freezes the backbone, computes its features once, and trains only the
head, whose default lr is 1e-2: a lone linear layer on fixed features needs a far larger step
than a whole network (3e-5 barely moves it in 10 epochs; on a micro checkpoint pretrained on
English, UNER-en dev → test F1 was 6.7 at 1e-3, 9.1 at 1e-2, 9.7 at 3e-2). Training is zero-shot
cross-lingual when test languages differ from the training language. Each seed re-initialises
the head (and, for finetune, restarts from the checkpoint's weights) and reshuffles the data.

Speed: sentences are batched by length (random groups of 50 batches sorted by length, so
batches stay shuffled yet carry little padding), padded per batch, and the loss reads only
word-initial positions; nothing iterates over tokens in Python during training or prediction.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..errors import ConfigError, DataError
from ..eval_results import NerLanguage, NerResult
from ..checkpoint import ModelLocation, resolve_model_dir
from ..device import resolve_device
from ..log import logger
from ..run_dir import RunDir
from ..tokenizer import load_tokenizer
from .iob2 import Sentence, count_entities, entity_type, load_language, training_split
from .ner_alignment import IGNORE, Encoded, WordPieces, encode_sentences, stitch
from .ner_scoring import aggregate, format_ner_table, score_ner
from .settings import NerSettings
from .uner_hub import hub_name, hub_training_split, is_hub, load_hub_language

DEFAULT_LR = {"finetune": 3e-5, "probe": 1e-2}
EVAL_BATCH = 64
SHUFFLE_WINDOW = 50  # batches per length-sorted group when shuffling

__all__ = ["run_ner", "format_ner_table", "save_result", "TokenClassifier", "DEFAULT_LR"]


# ----------------------------------------------------------------------------- checkpoint


def load_checkpoint(where: ModelLocation) -> tuple[PreTrainedModel, Any, int]:
    """(causal LM in float32, tokenizer, context length) of a resolved `save_pretrained` directory."""
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(where.model_dir), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where.model_dir}: cannot load the model: {exc}") from None
    tokenizer = load_tokenizer(where.tokenizer_dir)
    context = getattr(lm.config, "max_position_embeddings", None) or 2048
    return lm, tokenizer, int(context)


# ----------------------------------------------------------------------------- model


class TokenClassifier(nn.Module):
    """Backbone (a causal LM's base model) + linear head on its final hidden states."""

    def __init__(self, lm: PreTrainedModel, num_labels: int):
        super().__init__()
        self.backbone = lm.base_model
        if self.backbone is lm:
            raise ConfigError(f"NER: {type(lm).__name__} exposes no base model to put a token head on")
        self.head = nn.Linear(lm.config.hidden_size, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """Logits at the positions where `select` is true, in row-major order."""
        return self.head(self.features(input_ids, attention_mask)[select])


# ----------------------------------------------------------------------------- batching


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches with similar lengths. With a generator: shuffled, sorted by length only
    within random groups of `SHUFFLE_WINDOW` batches, batch order shuffled; without: sorted."""
    n = len(lengths)
    if generator is None:
        order = torch.argsort(lengths, stable=True)
        return list(torch.split(order, batch_size))
    perm = torch.randperm(n, generator=generator)
    group = batch_size * SHUFFLE_WINDOW
    batches: list[torch.Tensor] = []
    for g in torch.split(perm, group):
        g = g[torch.argsort(lengths[g], stable=True)]
        batches.extend(torch.split(g, batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def collate(enc: Encoded, idx: torch.Tensor, pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask and labels of the chunks `idx`."""
    ids = nn.utils.rnn.pad_sequence([enc.input_ids[i] for i in idx.tolist()], batch_first=True, padding_value=pad_id)
    labels = nn.utils.rnn.pad_sequence([enc.labels[i] for i in idx.tolist()], batch_first=True, padding_value=IGNORE)
    lengths = torch.tensor([len(enc.input_ids[i]) for i in idx.tolist()])
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    return ids.to(device), mask.to(device), labels.to(device)


def linear_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)))


# ----------------------------------------------------------------------------- finetune


@torch.no_grad()
def predict_chunks(model: TokenClassifier, enc: Encoded, pad_id: int, device: torch.device) -> list[torch.Tensor]:
    """Predicted label id per word-initial position, one tensor per chunk."""
    model.eval()
    out: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(enc)
    for idx in length_batches(enc.lengths, EVAL_BATCH):
        ids, mask, labels = collate(enc, idx, pad_id, device)
        select = labels != IGNORE
        pred = model(ids, mask, select).argmax(-1).cpu()
        for c, p in zip(idx.tolist(), torch.split(pred, select.sum(1).tolist())):
            out[c] = p
    return out


def train_epochs(
    params: list[nn.Parameter],
    lengths: torch.Tensor,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    on_epoch: Any = None,
    progress: bool = False,
) -> list[float]:
    """The one optimisation loop of both modes: AdamW with linear decay and clipping at 1.0 over
    length-bucketed batches of chunks; `batch_loss(chunk_ids)` gives a batch's loss. Returns the mean
    training loss of each epoch; `on_epoch(epoch)` runs after each (dev-based epoch selection)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = linear_decay(optimizer, epochs * -(-len(lengths) // batch_size))
    losses = []
    for epoch in range(epochs):
        total: float | torch.Tensor = 0.0  # summed on the device: no host sync per batch
        count = 0
        batches = tqdm(length_batches(lengths, batch_size, generator), desc=f"epoch {epoch + 1}/{epochs}",
                       disable=not (progress and sys.stderr.isatty()), leave=False, file=sys.stderr)  # no bar floods in logs
        for idx in batches:
            loss = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            total = total + loss.detach()
            count += 1
        losses.append(float(total) / max(1, count))
        if progress and not sys.stderr.isatty():  # a log file gets one line per epoch instead of the bar
            logger.info(f"ner: epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f}")
        if on_epoch is not None:
            on_epoch(epoch)
    return losses


def finetune_epochs(model: TokenClassifier, train: Encoded, *, pad_id: int, device: torch.device, **loop) -> list[float]:
    """Train all weights of the token classifier (`loop`: the arguments of `train_epochs`)."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        model.train()
        ids, mask, labels = collate(train, idx, pad_id, device)
        select = labels != IGNORE
        return nn.functional.cross_entropy(model(ids, mask, select), labels[select])

    return train_epochs([p for p in model.parameters() if p.requires_grad], train.lengths, batch_loss, **loop)


# ----------------------------------------------------------------------------- probe


@torch.no_grad()
def word_features(model: TokenClassifier, enc: Encoded, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone features at every word-initial position: (features [words, d], labels [words],
    per-chunk offsets into them [chunks + 1]), rows in chunk order then word order."""
    model.eval()
    feats_of: dict[int, torch.Tensor] = {}
    for idx in length_batches(enc.lengths, EVAL_BATCH):
        ids, mask, labels = collate(enc, idx, pad_id, device)
        select = labels != IGNORE
        hidden = model.features(ids, mask)[select]
        for c, h in zip(idx.tolist(), torch.split(hidden, select.sum(1).tolist())):
            feats_of[c] = h
    feats = [feats_of[c] for c in range(len(enc))]
    counts = torch.tensor([len(f) for f in feats])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    labels = torch.cat([lab[lab != IGNORE] for lab in enc.labels]).to(device)
    return torch.cat(feats), labels, offsets


def rows_of(offsets: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
    """Feature rows of the given chunks (vectorised `cat(arange(start, end))`)."""
    starts, counts = offsets[chunks], offsets[chunks + 1] - offsets[chunks]
    base = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
    return base + torch.arange(int(counts.sum()))


def probe_epochs(head: nn.Linear, feats: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor,
                 lengths: torch.Tensor, **loop) -> list[float]:
    """Train the head on fixed features, batched by sentence chunks like `finetune_epochs`."""

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        rows = rows_of(offsets, idx).to(feats.device)
        return nn.functional.cross_entropy(head(feats[rows]), labels[rows])

    return train_epochs(list(head.parameters()), lengths, batch_loss, **loop)


@torch.no_grad()
def probe_predict(head: nn.Linear, feats: torch.Tensor, offsets: torch.Tensor) -> list[torch.Tensor]:
    pred = head(feats).argmax(-1).cpu()
    return list(torch.split(pred, (offsets[1:] - offsets[:-1]).tolist()))


# ----------------------------------------------------------------------------- data


def label_list(types: Iterable[str]) -> list[str]:
    """`O` then `B-T`, `I-T` for each entity type, sorted."""
    return ["O"] + [f"{p}-{t}" for t in sorted(set(types)) for p in ("B", "I")]


class _Data:
    """Loads each (language, split) once, from local IOB2 files or the Hub."""

    def __init__(self, data: str | Path):
        self.data = data
        self.hub = is_hub(data)
        self.cache: dict[tuple[str, str], list[Sentence]] = {}

    def load(self, lang: str, split: str) -> list[Sentence]:
        if (lang, split) not in self.cache:
            if self.hub:
                self.cache[(lang, split)] = load_hub_language(lang, split, dataset=hub_name(str(self.data)))
            else:
                self.cache[(lang, split)] = load_language(self.data, lang, split)
        return self.cache[(lang, split)]

    def training_split(self, lang: str, use_dev_for_train: bool) -> tuple[str, str | None]:
        if self.hub:
            return hub_training_split(lang, use_dev_for_train, dataset=hub_name(str(self.data)))
        return training_split(self.data, lang, use_dev_for_train)


def check_ner_data(data_dir: str | Path, s: NerSettings) -> None:
    """Read (and so check) every local IOB2 file that `run_ner` with settings `s` would read: a
    missing folder, language or split, or a malformed file, is a DataError before anything trains.
    Hub data is checked when it is loaded."""
    if is_hub(str(data_dir)):
        return
    data = _Data(Path(data_dir))
    split, _ = data.training_split(s.train_lang, s.use_dev_for_train)
    data.load(s.train_lang, split)
    for lang in s.test_langs or [s.train_lang]:
        data.load(lang, "test")
    if s.select_best_on_dev:
        data.load(s.train_lang, "dev")


def _tags(sentences: Sequence[Sentence], label_names: Sequence[str], predictions: Sequence[Sequence[int]]) -> tuple[list[list[str]], list[list[str]]]:
    return [s.tags for s in sentences], [[label_names[i] for i in p] for p in predictions]


# ----------------------------------------------------------------------------- entry point


def run_ner(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    train_lang: str | None = None,
    test_langs: Sequence[str] | None = None,
    settings: NerSettings | None = None,
    *,
    progress: bool = True,
    max_length: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a token head on `train_lang` and score it on the test split of each test language.

    `settings` (default: `NerSettings()`) with `data_dir`, `train_lang`, `test_langs` (when given)
    and keyword `options` replacing some of its fields; a bad value is a ConfigError naming
    `ner.<key>`. `data_dir`: a folder of `LANG/{train,dev,test}.iob2`, or
    `hf:universalner/universal_ner` (languages are then Hub configs such as `en_ewt`). A language
    without a training file trains on dev (said in `notes`). `lr=None` takes `DEFAULT_LR[mode]`.
    `seeds` runs use seeds `seed, seed+1, ...`. `max_length` caps the chunk length below the
    model's context (tests). Returns a JSON-able dict: `config`, `notes`, `warnings`, `data`
    (sizes), `runs` (per seed: losses, timings, scores per language), `summary` (mean/std per
    language) and `baseline_all_o` (F1 of predicting `O` everywhere: 0)."""
    given = {"data": None if data_dir is None else str(data_dir), "train_lang": train_lang,
             "test_langs": None if test_langs is None else list(test_langs)}
    s = NerSettings.resolve(settings, **{k: v for k, v in given.items() if v is not None}, **options)
    p = _prepare(checkpoint, s, max_length)
    runs, prep_time = (_probe_runs if s.mode == "probe" else _finetune_runs)(p, progress)
    return _result(p, runs, prep_time)


@dataclass
class _Prepared:
    """What both modes share: the resolved settings, the sentences read and encoded, and the token
    classifier on the checkpoint's backbone (its head untrained)."""

    s: NerSettings
    lr: float
    test_langs: list[str]
    dev: torch.device
    t0: float
    model_dir: Path
    train_split: str
    notes: list[str]
    warnings: list[str]
    data: dict[str, dict[str, Any]]
    names: list[str]
    sets: dict[str, list[Sentence]]
    dev_sents: list[Sentence] | None
    enc_train: Encoded
    enc_tests: dict[str, Encoded]
    enc_dev: Encoded | None
    model: TokenClassifier
    pad_id: int
    max_len: int
    context_prefix: list[str]

    def score(self, sents: list[Sentence], preds: list[torch.Tensor], enc: Encoded) -> dict[str, Any]:
        return score_ner(*_tags(sents, self.names, stitch(enc, preds)))

    def dev_f1(self, predict: Callable[[Encoded], list[torch.Tensor]]) -> float:
        """F1 on dev of the predictions `predict(enc_dev)` (dev is read with `select_best_on_dev` only)."""
        if self.dev_sents is None or self.enc_dev is None:
            raise ValueError("ner: no dev set was read (select_best_on_dev is off)")
        return self.score(self.dev_sents, predict(self.enc_dev), self.enc_dev)["f1"]


def _prepare(checkpoint: str | Path, s: NerSettings, max_length: int | None) -> _Prepared:
    """Read the sentences (a bad setting or file fails before the model loads), then load the
    checkpoint (resolved and verified once) and encode every set."""
    t0 = time.perf_counter()
    dev = resolve_device(s.device)
    data = _Data(s.data if is_hub(s.data) else Path(s.data))
    train_split, note = data.training_split(s.train_lang, s.use_dev_for_train)
    notes = [note] if note else []
    if s.select_best_on_dev and train_split == "dev":
        raise ConfigError("ner.select_best_on_dev: cannot select on dev while training on dev (no train file, or use_dev_for_train)")
    train_sents = data.load(s.train_lang, train_split)
    if s.max_train_sentences is not None and s.max_train_sentences < len(train_sents):
        notes.append(f"training on the first {s.max_train_sentences} of {len(train_sents)} sentences")
        train_sents = train_sents[:s.max_train_sentences]
    test_langs = list(s.test_langs or [s.train_lang])
    sets: dict[str, list[Sentence]] = {lang: data.load(lang, "test") for lang in test_langs}
    dev_sents = data.load(s.train_lang, "dev") if s.select_best_on_dev else None

    loaded = [(s.train_lang, train_split, train_sents)] + [(lang, "test", x) for lang, x in sets.items()]
    if dev_sents is not None:
        loaded.append((s.train_lang, "dev", dev_sents))
    types = {e for _, _, sents in loaded for x in sents for t in x.tags if (e := entity_type(t)) is not None}
    names = label_list(types)
    label_to_id = {name: i for i, name in enumerate(names)}

    where = resolve_model_dir(checkpoint)
    lm, tokenizer, context = load_checkpoint(where)
    max_len = min(context, max_length or context)
    prefix = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None and tokenizer.eos_token_id < lm.config.vocab_size else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None and tokenizer.pad_token_id < lm.config.vocab_size else 0
    pieces = WordPieces(tokenizer)
    encode = lambda sents: encode_sentences(sents, tokenizer, label_to_id, max_len, prefix, pieces)  # noqa: E731
    enc_train = encode(train_sents)
    enc_tests = {lang: encode(x) for lang, x in sets.items()}
    enc_dev = encode(dev_sents) if dev_sents is not None else None

    summary_data: dict[str, dict[str, Any]] = {}
    warn_msgs: list[str] = []
    seen_sets = set()
    for (lang, split, sents), enc in zip(loaded, [enc_train, *enc_tests.values(), *([enc_dev] if enc_dev else [])]):
        summary_data.setdefault(lang, {})[split] = {
            "sentences": len(sents),
            "entities": count_entities(sents),
            "chunks": len(enc),
            "split_sentences": enc.split_sentences,
            "truncated_words": enc.truncated_words,
        }
        if (lang, split) not in seen_sets:
            seen_sets.add((lang, split))
            warn_msgs.extend(w for x in sents for w in x.warnings)
    split_total = sum(v["split_sentences"] for d in summary_data.values() for v in d.values())
    if split_total:
        notes.append(f"{split_total} sentence(s) longer than the context of {max_len} tokens were split into chunks")
    for n in notes:  # stored in the result and said now, whatever the output format
        logger.info(f"ner: {n}")

    model = TokenClassifier(lm, len(names))
    return _Prepared(s=s, lr=DEFAULT_LR[s.mode] if s.lr is None else s.lr, test_langs=test_langs, dev=dev, t0=t0,
                     model_dir=where.model_dir, train_split=train_split, notes=notes, warnings=warn_msgs,
                     data=summary_data, names=names, sets=sets, dev_sents=dev_sents, enc_train=enc_train,
                     enc_tests=enc_tests, enc_dev=enc_dev, model=model, pad_id=pad_id, max_len=max_len,
                     context_prefix=tokenizer.convert_ids_to_tokens(prefix))


class _BestEpoch:
    """Dev-based epoch selection (`on_epoch` of `train_epochs`): the dev F1 after each epoch, and a
    copy of the trained weights of the best epoch so far."""

    def __init__(self, dev_f1: Callable[[], float], snapshot: Callable[[], dict[str, torch.Tensor]]):
        self._dev_f1, self._snapshot = dev_f1, snapshot
        self.dev_f1: list[float] = []
        self.f1 = -1.0
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def __call__(self, epoch: int) -> None:
        f1 = self._dev_f1()
        self.dev_f1.append(f1)
        if f1 > self.f1:
            self.f1, self.epoch, self.state = f1, epoch + 1, self._snapshot()


# One seed's training: (generator) -> (epoch losses, epoch selection, predictions for a test language).
_TrainSeed = Callable[[torch.Generator], tuple[list[float], _BestEpoch, Callable[[str], list[torch.Tensor]]]]


def _finetune_runs(p: _Prepared, progress: bool) -> tuple[list[dict[str, Any]], float]:
    """Each seed trains a copy of the whole classifier (head re-initialised), then predicts."""

    def train(generator: torch.Generator):
        model = copy.deepcopy(p.model)
        model.head.reset_parameters()
        model.to(p.dev)
        best = _BestEpoch(lambda: p.dev_f1(lambda enc: predict_chunks(model, enc, p.pad_id, p.dev)),
                          lambda: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        losses = finetune_epochs(
            model, p.enc_train, epochs=p.s.epochs, lr=p.lr, batch_size=p.s.batch_size, generator=generator,
            pad_id=p.pad_id, device=p.dev, on_epoch=best if p.s.select_best_on_dev else None, progress=progress,
        )
        if best.state is not None:
            model.load_state_dict(best.state)
        return losses, best, lambda lang: predict_chunks(model, p.enc_tests[lang], p.pad_id, p.dev)

    return _seed_runs(p, train, progress)


def _probe_runs(p: _Prepared, progress: bool) -> tuple[list[dict[str, Any]], float]:
    """The backbone's features are computed once (part of the preparation time); each seed trains
    a fresh linear head on them."""
    p.model.to(p.dev)
    cache = {"train": word_features(p.model, p.enc_train, p.pad_id, p.dev)}
    if p.enc_dev is not None:
        cache["dev"] = word_features(p.model, p.enc_dev, p.pad_id, p.dev)
    for lang, enc in p.enc_tests.items():
        cache["test:" + lang] = word_features(p.model, enc, p.pad_id, p.dev)
    predict = lambda head, key: probe_predict(head, cache[key][0], cache[key][2])  # noqa: E731

    def train(generator: torch.Generator):
        head = nn.Linear(p.model.head.in_features, len(p.names)).to(p.dev)
        feats, labels, offsets = cache["train"]
        best = _BestEpoch(lambda: p.dev_f1(lambda _: predict(head, "dev")),
                          lambda: {k: v.detach().clone() for k, v in head.state_dict().items()})
        losses = probe_epochs(
            head, feats, labels, offsets, p.enc_train.lengths, epochs=p.s.epochs, lr=p.lr, batch_size=p.s.batch_size,
            generator=generator, on_epoch=best if p.s.select_best_on_dev else None,
        )
        if best.state is not None:
            head.load_state_dict(best.state)
        return losses, best, lambda lang: predict(head, "test:" + lang)

    return _seed_runs(p, train, progress)


def _seed_runs(p: _Prepared, train: _TrainSeed, progress: bool) -> tuple[list[dict[str, Any]], float]:
    """One run per seed (`seed, seed+1, ...`: the torch seed and the shuffling generator), scored on
    every test language; returns the runs and the preparation time (until the first seed)."""
    prep_time = time.perf_counter() - p.t0
    runs = []
    for i in range(p.s.seeds):
        run_seed = p.s.seed + i
        torch.manual_seed(run_seed)
        generator = torch.Generator().manual_seed(run_seed)
        t_train = time.perf_counter()
        losses, best, predict = train(generator)
        train_time = time.perf_counter() - t_train
        t_eval = time.perf_counter()
        scores = {lang: p.score(p.sets[lang], predict(lang), p.enc_tests[lang]) for lang in p.test_langs}
        runs.append(
            {
                "seed": run_seed,
                "train_loss": losses,
                "dev_f1": best.dev_f1 if p.s.select_best_on_dev else None,
                "best_epoch": best.epoch,
                "train_time_s": train_time,
                "eval_time_s": time.perf_counter() - t_eval,
                "scores": scores,
            }
        )
        if progress:
            line = ", ".join(f"{lang} F1 {100 * sc['f1']:.1f}" for lang, sc in scores.items())
            logger.info(f"ner: seed {run_seed}: final loss {losses[-1]:.4f}, {line} ({train_time:.0f}s training)")
    return runs, prep_time


def _result(p: _Prepared, runs: list[dict[str, Any]], prep_time: float) -> dict[str, Any]:
    s = p.s
    baseline = {lang: score_ner([x.tags for x in sents], [["O"] * len(x) for x in sents])["f1"] for lang, sents in p.sets.items()}
    return NerResult(
        config={
            "checkpoint": str(p.model_dir),
            "data": str(s.data),
            "train_lang": s.train_lang,
            "train_split": p.train_split,
            "test_langs": p.test_langs,
            "mode": s.mode,
            "seeds": s.seeds,
            "seed": s.seed,
            "epochs": s.epochs,
            "lr": p.lr,
            "batch_size": s.batch_size,
            "select_best_on_dev": s.select_best_on_dev,
            "max_train_sentences": s.max_train_sentences,
            "device": str(p.dev),
            "max_length": p.max_len,
            "labels": p.names,
            "context_prefix": p.context_prefix,
        },
        notes=p.notes,
        warnings={"count": len(p.warnings), "messages": p.warnings[:20]},
        data=p.data,
        runs=runs,
        summary={lang: NerLanguage.from_json(aggregate([r["scores"][lang] for r in runs])) for lang in p.test_langs},
        baseline_all_o=baseline,
        timing={"prepare_s": prep_time, "total_s": time.perf_counter() - p.t0},
    ).to_json()


def result_name(result: dict[str, Any]) -> str:
    """`ner-<train_lang>` (finetune) or `ner-<train_lang>-probe`: the result's name among a run's evaluations."""
    cfg = result["config"]
    suffix = "" if cfg["mode"] == "finetune" else f"-{cfg['mode']}"
    return f"ner-{cfg['train_lang']}{suffix}"


def _settings(result: dict[str, Any]) -> dict[str, Any]:
    """What a result was computed with, besides the model and the device."""
    return {k: v for k, v in result.get("config", {}).items() if k not in ("checkpoint", "device")}


def save_result(result: dict[str, Any], run: RunDir, keep_other_settings: bool = True) -> Path:
    """Write the result as JSON into the run directory (atomically) as `result_name`; returns the path.
    With `keep_other_settings`, a stored result of other settings is kept and this one is saved as
    `<name>-<settings hash>` instead (the experiment runner, which records its settings, replaces)."""
    name = result_name(result)
    stored = run.read_eval(name)
    if keep_other_settings and isinstance(stored, dict) and _settings(stored) != _settings(result):
        digest = hashlib.sha256(json.dumps(_settings(result), sort_keys=True).encode()).hexdigest()[:8]
        logger.info(f"ner: {run.eval_path(name)} holds a result of other settings; kept, this one is {name}-{digest}")
        name = f"{name}-{digest}"
    return run.write_eval(name, result)
