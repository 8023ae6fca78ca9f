"""Convert the raw Wikipedia benchmark into the parquet files bundled in hf_xmodal/data/wikipedia.

python scripts/prepare_wikipedia.py --source ../shared/data/wikipedia
"""

from __future__ import annotations

import argparse
import html
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.io
from datasets import Dataset
from tqdm import tqdm

from hf_xmodal.data.wikipedia import (
    WIKIPEDIA_CATEGORIES,
    WIKIPEDIA_DIR,
    WIKIPEDIA_FEATURES,
    WIKIPEDIA_NUM_VALIDATION,
)

TEXT_PATTERN = re.compile(r"<text>(.*?)</text>", re.DOTALL)


def read_list(path: Path) -> list[tuple[str, str, int]]:
    """Rows ``(text_id, image_id, category 1..10)`` of a ``*_txt_img_cat.list`` file."""
    rows = []
    for line in path.read_text().splitlines():
        text_id, image_id, category = line.split("\t")
        rows.append((text_id, image_id, int(category)))
    return rows


def read_texts(archive: Path, text_ids: set[str]) -> dict[str, str]:
    """The article text of every id in ``text_ids``, from ``texts/<text_id>.xml`` in the archive.

    The XML files use HTML entities (``&ndash;``) and are not all well-formed XML, so the text is
    taken between ``<text>`` and ``</text>``, HTML entities are decoded and whitespace is stripped.
    """
    texts = {}
    with tarfile.open(archive) as tar:
        for member in tqdm(tar, desc="texts", unit="file"):
            name = Path(member.name)
            if member.isfile() and name.suffix == ".xml" and name.stem in text_ids:
                document = tar.extractfile(member).read().decode("utf-8")
                match = TEXT_PATTERN.search(document)
                if match is None:
                    raise ValueError(f"{member.name}: no <text>...</text> element")
                texts[name.stem] = html.unescape(match.group(1)).strip()
    missing = sorted(text_ids - texts.keys())
    if missing:
        raise ValueError(f"{len(missing)} text ids have no XML in {archive}: {missing[:5]}")
    return texts


def build_split(
    rows: list[tuple[str, str, int]],
    image_features: np.ndarray,
    text_features: np.ndarray,
    texts: dict[str, str],
) -> Dataset:
    return Dataset.from_dict(
        {
            "text_id": [row[0] for row in rows],
            "image_id": [row[1] for row in rows],
            "image_features": image_features.astype(np.float32),
            "text_features": text_features.astype(np.float32),
            "text": [texts[row[0]] for row in rows],
            "label": [row[2] - 1 for row in rows],
        },
        features=WIKIPEDIA_FEATURES,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/data/wikipedia"))
    parser.add_argument("--output_dir", type=Path, default=WIKIPEDIA_DIR)
    args = parser.parse_args()
    start = time.perf_counter()

    categories = (args.source / "categories.list").read_text().split()
    if tuple(categories) != WIKIPEDIA_CATEGORIES:
        raise ValueError(f"categories.list {categories} != {WIKIPEDIA_CATEGORIES}")
    mat = scipy.io.loadmat(args.source / "raw_features.mat")
    train_rows = read_list(args.source / "trainset_txt_img_cat.list")
    test_rows = read_list(args.source / "testset_txt_img_cat.list")
    for keys, rows in ((("I_tr", "T_tr"), train_rows), (("I_te", "T_te"), test_rows)):
        for key in keys:
            if mat[key].shape[0] != len(rows):
                raise ValueError(f"{key} has {mat[key].shape[0]} rows but its list has {len(rows)}")
    texts = read_texts(args.source / "texts.tar.gz", {row[0] for row in train_rows + test_rows})

    n_val = WIKIPEDIA_NUM_VALIDATION
    splits = {
        "train": build_split(train_rows, mat["I_tr"], mat["T_tr"], texts),
        "validation": build_split(
            test_rows[:n_val], mat["I_te"][:n_val], mat["T_te"][:n_val], texts
        ),
        "test": build_split(test_rows[n_val:], mat["I_te"][n_val:], mat["T_te"][n_val:], texts),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, dataset in splits.items():
        path = args.output_dir / f"{split}.parquet"
        pq.write_table(dataset.data.table, path, compression="zstd", compression_level=19)
        print(f"{split}: {len(dataset)} rows, {path.stat().st_size / 1e6:.2f} MB -> {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
