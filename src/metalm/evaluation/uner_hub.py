"""Universal NER from the Hugging Face Hub (`universalner/universal_ner`), as `Sentence` objects.

Each Hub config is one treebank (`en_ewt`, `da_ddt`, `zh_gsd`, ...), with splits `train`,
`validation`, `test`; `ner_tags` are integers whose names are the dataset's `ClassLabel` names.
Needs network access the first time (then the datasets cache); the local IOB2 path in `iob2.py`
reads the same annotations from files and is what the tests exercise.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..errors import DataError
from .iob2 import Sentence, check_tag, dangling_inside

HUB_DATASET = "universalner/universal_ner"
HUB_PREFIX = "hf:"
_SPLIT_NAMES = {"train": "train", "dev": "validation", "test": "test"}


def is_hub(data: object) -> bool:
    """True when a `--data` value names the Hub dataset (`hf:` or the bare dataset id)."""
    return isinstance(data, str) and (data.startswith(HUB_PREFIX) or data == HUB_DATASET)


def hub_name(data: str) -> str:
    return data[len(HUB_PREFIX):] if data.startswith(HUB_PREFIX) else data


def sentences_from_dataset(ds: Any, source: str, types: Collection[str] | None = None) -> list[Sentence]:
    """Convert a `datasets.Dataset` with `tokens` and ClassLabel `ner_tags` columns."""
    feature = ds.features.get("ner_tags")
    names = getattr(getattr(feature, "feature", None), "names", None)
    if names is None:
        raise DataError(f"{source}: 'ner_tags' is not a sequence of ClassLabel (features: {ds.features})")
    for name in names:
        problem = check_tag(name, types)
        if problem:
            raise DataError(f"{source}: label names: {problem}")
    out = []
    for i, row in enumerate(ds):
        tags = [names[t] for t in row["ner_tags"]]
        if len(tags) != len(row["tokens"]):
            raise DataError(f"{source}[{i}]: {len(row['tokens'])} tokens but {len(tags)} tags")
        if not tags:
            continue
        sent = Sentence(
            tokens=list(row["tokens"]),
            tags=tags,
            sent_id=str(row.get("idx", i)),
            text=row.get("text"),
            source=f"{source}[{i}]",
        )
        sent.warnings = [f"{source}[{i}] token {j + 1}: {tags[j]} does not continue an entity" for j in dangling_inside(tags)]
        out.append(sent)
    if not out:
        raise DataError(f"{source}: no sentences")
    return out


def load_hub_language(
    config: str, split: str, dataset: str = HUB_DATASET, types: Collection[str] | None = None
) -> list[Sentence]:
    """Sentences of one Hub config (`en_ewt`) and split (`train`/`dev`/`test`)."""
    import datasets

    hub_split = _SPLIT_NAMES.get(split, split)
    source = f"{dataset}/{config}/{hub_split}"
    try:
        ds = datasets.load_dataset(dataset, config, split=hub_split)
    except Exception as exc:  # network, unknown config or split: all user-fixable
        raise DataError(f"{source}: cannot load from the Hugging Face Hub: {exc}") from None
    return sentences_from_dataset(ds, source, types)


def hub_training_split(config: str, use_dev_for_train: bool, dataset: str = HUB_DATASET) -> tuple[str, str | None]:
    """`train`, or `dev` (with a note) when asked or when the config has no train split."""
    if use_dev_for_train:
        return "dev", f"training on {dataset}/{config} validation split (use_dev_for_train)"
    import datasets

    try:
        splits = datasets.get_dataset_split_names(dataset, config)
    except Exception as exc:
        raise DataError(f"{dataset}/{config}: cannot list splits on the Hugging Face Hub: {exc}") from None
    if "train" in splits:
        return "train", None
    if "validation" in splits:
        return "dev", f"{dataset}/{config} has no train split: training on validation instead"
    raise DataError(f"{dataset}/{config}: no train or validation split (found: {', '.join(splits)})")
