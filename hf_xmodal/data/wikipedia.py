"""The Wikipedia cross-modal benchmark (Rasiwasia et al., 2010), bundled with the package."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    DatasetInfo,
    Features,
    List,
    NamedSplit,
    Value,
)

WIKIPEDIA_DIR = Path(__file__).parent / "wikipedia"
"""Folder of the bundled parquet files (one per split of the standard protocol)."""

WIKIPEDIA_CATEGORIES = (
    "art",
    "biology",
    "geography",
    "history",
    "literature",
    "media",
    "music",
    "royalty",
    "sport",
    "warfare",
)
WIKIPEDIA_IMAGE_DIM = 128
WIKIPEDIA_TEXT_DIM = 10
WIKIPEDIA_NUM_VALIDATION = 231
"""The first 231 rows of the official test list form the validation split."""

WIKIPEDIA_FEATURES = Features(
    {
        "text_id": Value("string"),
        "image_id": Value("string"),
        "image_features": List(Value("float32"), length=WIKIPEDIA_IMAGE_DIM),
        "text_features": List(Value("float32"), length=WIKIPEDIA_TEXT_DIM),
        "text": Value("string"),
        "label": ClassLabel(names=list(WIKIPEDIA_CATEGORIES)),
    }
)

WIKIPEDIA_SPLIT_PROTOCOLS = ("standard", "full_test")
"""``standard``: train 2173 / validation 231 / test 462 (the project's protocol).
``full_test``: train 2173 / test 693, the whole official test set as in the original paper."""

WIKIPEDIA_CITATION = """@inproceedings{rasiwasia2010new,
  title     = {A New Approach to Cross-Modal Multimedia Retrieval},
  author    = {Rasiwasia, Nikhil and Costa Pereira, Jose and Coviello, Emanuele and
               Doyle, Gabriel and Lanckriet, Gert R. G. and Levy, Roger and
               Vasconcelos, Nuno},
  booktitle = {Proceedings of the 18th ACM International Conference on Multimedia},
  pages     = {251--260},
  year      = {2010},
  doi       = {10.1145/1873951.1873987}
}"""


def _info() -> DatasetInfo:
    return DatasetInfo(
        description="Wikipedia image-text benchmark: 128-d SIFT bag-of-words image features, "
        "10-d LDA text features, the article texts and 10 categories.",
        citation=WIKIPEDIA_CITATION,
        license="Texts: Wikipedia content, CC BY-SA.",
        features=WIKIPEDIA_FEATURES,
    )


def _read_split(split: str) -> pa.Table:
    return pq.read_table(WIKIPEDIA_DIR / f"{split}.parquet")


def load_wikipedia(split_protocol: str = "standard") -> DatasetDict:
    """Load the bundled Wikipedia dataset.

    ``split_protocol="standard"`` gives train (2173) / validation (231) / test (462);
    ``"full_test"`` gives train (2173) / test (all 693 official test pairs, in list order),
    to compare with numbers reported on the full official test set.
    """
    if split_protocol not in WIKIPEDIA_SPLIT_PROTOCOLS:
        raise ValueError(
            f"unknown split_protocol '{split_protocol}'; choose one of {WIKIPEDIA_SPLIT_PROTOCOLS}"
        )
    tables = {split: _read_split(split) for split in ("train", "validation", "test")}
    if split_protocol == "full_test":
        tables = {
            "train": tables["train"],
            "test": pa.concat_tables([tables["validation"], tables["test"]]),
        }
    return DatasetDict(
        {
            split: Dataset(table, info=_info(), split=NamedSplit(split))
            for split, table in tables.items()
        }
    )
