"""Fashion for transfer learning: attribute tags as a third modality, and a class-disjoint split
into a large source domain and a small target domain."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, DatasetDict, Value

from ._common import DATA_ROOT, require_file
from .fashion import _read_styles

TAG_FIELDS = ("gender", "baseColour", "season", "usage")
"""styles.csv fields that make up a product's attribute tags: never its category fields
(masterCategory, subCategory, articleType), which are or give away the labels."""

HELD_OUT_ARTICLE_TYPES = (
    "Backpacks",
    "Flip Flops",
    "Formal Shoes",
    "Jackets",
    "Kurtas",
    "Sandals",
    "Sweaters",
    "Tops",
    "Trousers",
    "Wallets",
)
"""The target domain's classes: ten article types with at least 85 training products, spread
over the three master categories, each with related types left in the source (Tshirts / Tops,
Casual Shoes / Formal Shoes, Handbags / Backpacks, ...)."""
TARGET_PAIRS_PER_CLASS = 20
"""Training pairs kept per target class (the target domain is small)."""


def fashion_tags(data_dir: str | os.PathLike = DATA_ROOT / "fashion") -> dict[int, str]:
    """Each product's attribute tags as one text, e.g. `"Men Grey Winter Casual"` (the
    `TAG_FIELDS` in order; empty fields left out), by product id."""
    path = Path(data_dir) / "styles.csv"
    require_file(path, "Fashion")
    return {
        product: " ".join(row[f].strip() for f in TAG_FIELDS if row[f].strip())
        for product, row in _read_styles(path).items()
    }


def add_tags(
    data: DatasetDict, data_dir: str | os.PathLike | None = None, batch_size: int = 64
) -> DatasetDict:
    """Add the attribute tags of each Fashion product (column `tags`, by `id`) and their MiniLM
    text-tower features (`tags_features`, 384-d, extracted once and cached)."""
    from .extraction import extract_features

    tags = fashion_tags(DATA_ROOT / "fashion" if data_dir is None else data_dir)
    missing = [i for split in data.values() for i in split["id"] if not tags.get(i)]
    if missing:
        raise ValueError(f"Fashion products without attribute tags: {missing[:5]}")
    data = DatasetDict(
        {
            name: split.add_column("tags", [tags[i] for i in split["id"]])
            for name, split in data.items()
        }
    )
    return extract_features(
        data, images=False, batch_size=batch_size, text_column="tags", text_target="tags_features"
    )


def _relabel(data: DatasetDict, names: list[str]) -> DatasetDict:
    """Keep the rows whose `label` is one of `names` and renumber the labels over `names`."""
    old = data["train"].features["label"].names
    unknown = sorted(set(names) - set(old))
    if unknown:
        raise ValueError(f"unknown article types {unknown}; the data has {old}")
    new_id = {old.index(name): i for i, name in enumerate(names)}
    features = data["train"].features.copy()
    features["label"] = ClassLabel(names=names)
    out = {}
    for split, rows in data.items():
        kept = rows.filter(lambda y: y in new_id, input_columns="label", desc="classes")
        out[split] = kept.cast_column("label", Value("int64")).map(
            lambda y: {"label": [new_id[v] for v in y]},
            input_columns="label",
            batched=True,
            features=features,
            desc="labels",
        )
    return DatasetDict(out)


def class_disjoint_split(
    data: DatasetDict,
    held_out: tuple[str, ...] = HELD_OUT_ARTICLE_TYPES,
    pairs_per_class: int = TARGET_PAIRS_PER_CLASS,
    seed: int = 0,
) -> tuple[DatasetDict, DatasetDict]:
    """(source, target) domains of a labelled DatasetDict with disjoint classes.

    The source holds every split's rows of the other classes; the target the rows of `held_out`,
    its training split cut to `pairs_per_class` rows per class (drawn with `seed`; all rows of a
    class with fewer). Each domain's `label` is renumbered over its own classes (sorted names).
    """
    names = data["train"].features["label"].names
    held_out = sorted(held_out)
    source = _relabel(data, [n for n in names if n not in held_out])
    target = _relabel(data, held_out)
    labels = np.asarray(target["train"]["label"])
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels == c))[:pairs_per_class]
                for c in range(len(held_out))
            ]
        )
    )
    target["train"] = target["train"].select(keep)
    return source, target


def fashion_transfer(
    data: DatasetDict, domain: str, data_dir: str | os.PathLike | None = None, tags: bool = False
) -> DatasetDict:
    """The `"source"` or `"target"` domain of the class-disjoint split of Fashion with the towers'
    features (`data`) and, with `tags`, the attribute tags' (`tags_features`)."""
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    if tags:
        data = add_tags(data, data_dir)
    source, target = class_disjoint_split(data)
    return source if domain == "source" else target
