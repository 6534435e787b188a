"""The `demo` data source: a small synthetic world, generated deterministically at run time.

Why: the README's main command must run offline on a fresh machine, and nothing large is
committed. So metalm builds a toy world — people, places and organisations with consistent
relations — and writes, from it, a pretraining corpus and NER files in exactly the formats of the
real data under `shared/data/` (so the same readers and evaluators run on both):

    OUT/corpus/train/train-00.txt            ~2.5 MB, one document per blank-line-separated block
    OUT/corpus/validation/validation-00.txt  ~125 KB, documents about held-out entities
    OUT/ner/en/{train,dev,test}.iob2         1500/300/300 sentences, IOB2 PER/LOC/ORG
    OUT/ner/xx/{train,dev,test}.iob2         the same kind of sentences in a toy second language
    OUT/README.md                            what this is, how it was made, computed sizes

The text is built from many sentence templates with alternatives (`[a|b]`) and slots (`{name}`),
filled from the world's facts (consistent across documents: an LM can learn them) and from
random fillers (numbers, dates, common words: a wide band of word frequencies). The second
language `xx` replaces every English word outside names through a fixed, seed-independent
substitution lexicon; about 10% of the corpus documents are written in it, so it is "seen" during
pretraining and zero-shot cross-lingual NER (train en, test xx) has something to transfer.

Everything is a pure function of the seed (stdlib `random.Random` seeded with strings, no set
iteration, no `hash()`), so the same seed gives byte-identical files. Results on this set say
nothing about real language; it exists so the pipeline can be run and checked end to end.

Modules: `tables` (the string tables, package data under `templates/`), `lexicon` (the `xx`
language), `world` (entities, relations, facts), `text` (documents and NER sentences),
`generate` (files, README, the cached copy). A data spec `demo` is resolved here:
`resolve_corpus_specs` for the pretraining corpus, `resolve_ner_data` for NER evaluation.
"""

from __future__ import annotations

from pathlib import Path

from .generate import demo_world_dir, ensure_demo_world, generate_demo_world

DEMO = "demo"  # the data spec that names the generated demo world

__all__ = ["DEMO", "demo_world_dir", "ensure_demo_world", "generate_demo_world", "resolve_corpus_specs",
           "resolve_ner_data"]


def resolve_corpus_specs(train: str | list[str], validation: str | list[str] | None,
                         cache: Path) -> tuple[str | list[str], str | list[str] | None, bool]:
    """(train spec, validation spec, is_demo): a `demo` train spec becomes the generated corpus
    files, with the demo's own validation split unless a validation spec is given; any other spec
    is returned unchanged."""
    if train != DEMO:
        return train, validation, False
    root = ensure_demo_world(cache) / "corpus"
    return str(root / "train"), validation if validation is not None else str(root / "validation"), True


def resolve_ner_data(spec: str, cache: Path) -> str:
    """The NER data directory a spec names: `demo` becomes the generated NER files (`en`, `xx`);
    any other spec (a directory) is returned unchanged."""
    return str(ensure_demo_world(cache) / "ner") if spec == DEMO else spec
