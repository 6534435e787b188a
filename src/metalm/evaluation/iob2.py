"""Read Universal NER IOB2 files into `Sentence` objects, with file:line messages for bad input.

Format (as in the UniversalNER repositories): sentences separated by blank lines; each may start
with `#` comment lines (`# sent_id = ...`, `# text = ...`); then one token per line,
tab-separated `index token tag ...` of which only the first three columns matter.

An `I-X` that does not continue an `X` entity (after `O`, another type, or at the start) is
*accepted*, as conlleval and seqeval's default mode accept it (they open a new entity there), but
each one is recorded as a warning so that the caller can report how many there were.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

SPLITS = ("train", "dev", "test")
_TAG = re.compile(r"^(?:O|([BI])-([A-Z][A-Z0-9_]*))$")


@dataclass
class Sentence:
    """One annotated sentence. `text` is the `# text =` comment (used to recover where spaces
    were, which matters for languages written without them); `source` is `file:line` of its
    first token; `warnings` holds one message per dangling `I-` tag."""

    tokens: list[str]
    tags: list[str]
    sent_id: str
    text: str | None = None
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)


def entity_type(tag: str) -> str | None:
    """The entity type of a tag (`B-PER` → `PER`), or None for `O`."""
    return None if tag == "O" else tag[2:]


def check_tag(tag: str, types: Collection[str] | None) -> str | None:
    """Why `tag` is not acceptable, or None when it is (`O`, `B-X`, `I-X`; X in `types` if given)."""
    match = _TAG.match(tag)
    if not match:
        return f"unknown tag {tag!r} (expected O, B-TYPE or I-TYPE in the IOB2 scheme, TYPE in upper case)"
    if match.group(2) and types is not None and match.group(2) not in types:
        return f"unknown entity type {match.group(2)!r} in tag {tag!r} (allowed: {', '.join(sorted(types))})"
    return None


def dangling_inside(tags: list[str]) -> list[int]:
    """Positions of `I-X` tags that do not continue an `X` entity (conlleval starts one there)."""
    out = []
    prev = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            out.append(i)
        prev = tag
    return out


def read_iob2(path: str | Path, types: Collection[str] | None = None) -> list[Sentence]:
    """All sentences of an IOB2 file. Raises `DataError` naming the file and line for a missing
    or empty file, a line with fewer than 3 tab-separated columns, or a tag outside the IOB2
    scheme / outside `types` (default: any upper-case type)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IOB2 file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    token_lines: list[int] = []
    meta: dict[str, str] = {}

    def flush() -> None:
        if tokens:
            first = token_lines[0]
            sent = Sentence(
                tokens=list(tokens),
                tags=list(tags),
                sent_id=meta.get("sent_id", f"{path.name}:{first}"),
                text=meta.get("text"),
                source=f"{path}:{first}",
            )
            for i in dangling_inside(tags):
                sent.warnings.append(
                    f"{path}:{token_lines[i]}: {tags[i]} does not continue an entity "
                    f"(previous tag {tags[i - 1] if i else 'none'}); read as the start of one, as conlleval does"
                )
            sentences.append(sent)
        tokens.clear()
        tags.clear()
        token_lines.clear()
        meta.clear()

    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            if tokens:  # a comment inside a sentence: ignore it, it carries no annotation
                continue
            key, sep, value = line[1:].partition("=")
            if sep:
                meta[key.strip()] = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            raise DataError(
                f"{path}:{lineno}: expected at least 3 tab-separated columns (index, token, tag), "
                f"found {len(cols)}: {line[:80]!r}"
            )
        tag = cols[2].strip()
        problem = check_tag(tag, types)
        if problem:
            raise DataError(f"{path}:{lineno}: {problem}")
        tokens.append(cols[1])
        tags.append(tag)
        token_lines.append(lineno)
    flush()
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty or holds only comments)")
    return sentences


def count_warnings(sentences: list[Sentence]) -> int:
    """Number of dangling `I-` tags accepted while reading."""
    return sum(len(s.warnings) for s in sentences)


def count_entities(sentences: list[Sentence]) -> int:
    """Entities as conlleval counts them: every `B-X` and every dangling `I-X` opens one."""
    return sum(sum(t.startswith("B-") for t in s.tags) + len(dangling_inside(s.tags)) for s in sentences)


def split_path(data_dir: str | Path, lang: str, split: str) -> Path:
    """`DATA/LANG/SPLIT.iob2`, checking that the language folder exists."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: NER data directory not found")
    lang_dir = data_dir / lang
    if not lang_dir.is_dir():
        found = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        raise DataError(f"{lang_dir}: no folder for language {lang!r} (found: {', '.join(found) or 'none'})")
    return lang_dir / f"{split}.iob2"


def has_split(data_dir: str | Path, lang: str, split: str) -> bool:
    return split_path(data_dir, lang, split).is_file()


def load_language(
    data_dir: str | Path, lang: str, split: str, types: Collection[str] | None = None
) -> list[Sentence]:
    """Sentences of `DATA/LANG/SPLIT.iob2`."""
    return read_iob2(split_path(data_dir, lang, split), types)


def training_split(data_dir: str | Path, lang: str, use_dev_for_train: bool) -> tuple[str, str | None]:
    """Which split to train on, and a note to print when that is not `train`.

    A language folder without `train.iob2` (the shared English copy) trains on `dev`
    automatically; the returned note says so, because dev is then not held out."""
    if use_dev_for_train:
        return "dev", f"training on {lang}/dev.iob2 (use_dev_for_train)"
    if has_split(data_dir, lang, "train"):
        return "train", None
    if has_split(data_dir, lang, "dev"):
        return "dev", f"{Path(data_dir) / lang} has no train.iob2: training on dev.iob2 instead"
    raise DataError(f"{Path(data_dir) / lang}: neither train.iob2 nor dev.iob2 found to train on")
