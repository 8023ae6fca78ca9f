"""The Fashion transfer data: attribute tags as a third modality, the class-disjoint split."""

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from test_data import REAL_DATA, needs_real_data

from hf_xmodal.data.transfer import (
    HELD_OUT_ARTICLE_TYPES,
    TAG_FIELDS,
    class_disjoint_split,
    fashion_tags,
)

NAMES = ["Bags", "Caps", "Shirts", "Shoes", "Socks"]


def labelled(sizes: dict[str, int]) -> DatasetDict:
    features = Features({"id": Value("int64"), "label": ClassLabel(names=NAMES)})
    splits, next_id = {}, 0
    for split, n in sizes.items():
        labels = np.arange(n) % len(NAMES)
        ids = list(range(next_id, next_id + n))
        next_id += n
        splits[split] = Dataset.from_dict({"id": ids, "label": labels}, features=features)
    return DatasetDict(splits)


def test_class_disjoint_split_separates_the_classes_and_cuts_the_target_training_set():
    data = labelled({"train": 100, "validation": 20, "test": 30})
    source, target = class_disjoint_split(data, held_out=("Shoes", "Caps"), pairs_per_class=7)
    assert source["train"].features["label"].names == ["Bags", "Shirts", "Socks"]
    assert target["train"].features["label"].names == ["Caps", "Shoes"]
    names = {split: data[split].features["label"].names for split in data}
    for split in data:
        original = {
            i: names[split][y] for i, y in zip(data[split]["id"], data[split]["label"], strict=True)
        }
        for domain in (source, target):
            kept = domain[split]
            domain_names = kept.features["label"].names
            # every row keeps its class, renumbered over the domain's classes
            assert all(
                original[i] == domain_names[y]
                for i, y in zip(kept["id"], kept["label"], strict=True)
            )
        assert set(source[split]["id"]).isdisjoint(target[split]["id"])
        assert len(source[split]) == sum(v not in ("Shoes", "Caps") for v in original.values())
    assert len(target["validation"]) == 8 and len(target["test"]) == 12
    assert np.bincount(target["train"]["label"]).tolist() == [7, 7]
    again = class_disjoint_split(data, held_out=("Shoes", "Caps"), pairs_per_class=7)[1]
    assert again["train"]["id"] == target["train"]["id"]  # fixed by the seed
    other = class_disjoint_split(data, held_out=("Shoes", "Caps"), pairs_per_class=7, seed=1)[1]
    assert other["train"]["id"] != target["train"]["id"]
    with pytest.raises(ValueError, match=r"unknown article types \['Hats'\]"):
        class_disjoint_split(data, held_out=("Hats",))


@needs_real_data("fashion")
def test_fashion_tags_never_name_the_category():
    import csv

    tags = fashion_tags(REAL_DATA / "fashion")
    assert tags[15970] == "Men Navy Blue Fall Casual"
    with (REAL_DATA / "fashion" / "styles.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(tags) == len(rows) and TAG_FIELDS == ("gender", "baseColour", "season", "usage")
    leaked = [
        r["id"] for r in rows if r["articleType"].lower() in tags[int(r["id"])].lower().split()
    ]
    assert not leaked
    types = {r["articleType"] for r in rows}
    assert set(HELD_OUT_ARTICLE_TYPES) <= types and len(HELD_OUT_ARTICLE_TYPES) == 10
