"""Fashion Product Images (small) subset: product photos with titles and article-type labels."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    DatasetInfo,
    Features,
    Image,
    NamedSplit,
    Value,
)

from ._common import (
    DATA_ROOT,
    format_examples,
    load_saved_dataset_dict,
    require_dir,
    require_file,
)

FASHION_SPLIT_DIR = Path(__file__).parent / "fashion"
"""Folder of the packaged id lists ``{train,validation,test}.txt`` of the fixed split."""

FASHION_SPLITS = ("train", "validation", "test")
FASHION_STYLES_COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "usage",
    "productDisplayName",
    "colorgroup",
)


def fashion_split_ids() -> dict[str, list[int]]:
    """The packaged fixed split: product ids per split, in list order."""
    return {
        split: [int(line) for line in (FASHION_SPLIT_DIR / f"{split}.txt").read_text().split()]
        for split in FASHION_SPLITS
    }


def _read_styles(path: Path) -> dict[int, dict[str, str]]:
    """Rows of ``styles.csv`` by product id.

    The file is standard CSV (fields with commas would be double-quoted); a row with the wrong
    number of fields, e.g. an unquoted comma in a product name, is an error rather than being
    silently shifted.
    """
    styles: dict[int, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != FASHION_STYLES_COLUMNS:
            raise ValueError(f"{path}: expected the columns {FASHION_STYLES_COLUMNS}, got {header}")
        for line_number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {line_number}: expected {len(header)} fields, got {len(row)} "
                    "(an unquoted comma in a field?)"
                )
            record = dict(zip(header, row, strict=True))
            styles[int(record["id"])] = record
    return styles


def load_fashion(data_dir: str | os.PathLike = DATA_ROOT / "fashion") -> DatasetDict:
    """Load the Fashion subset with the packaged fixed split (6459 / 916 / 1821 products).

    ``data_dir`` is either the raw folder (``images/<id>.jpg`` and ``styles.csv``) or a
    DatasetDict saved by ``scripts/prepare_fashion.py``. Columns: ``id``, ``image`` (decoded
    lazily), ``text`` (the product title), ``label`` (ClassLabel of the 43 article types, sorted
    names), ``master_category`` and ``sub_category`` (ClassLabels, sorted names of the classes
    present in the split products).
    """
    data_dir = Path(data_dir)
    saved = load_saved_dataset_dict(data_dir)
    if saved is not None:
        return saved
    require_dir(data_dir, "Fashion")
    image_dir = data_dir / "images"
    require_dir(image_dir, "Fashion images")
    styles_path = data_dir / "styles.csv"
    require_file(styles_path, "Fashion")
    styles = _read_styles(styles_path)
    available = set(os.listdir(image_dir))
    image_dir = image_dir.resolve()

    split_ids = fashion_split_ids()
    for split, ids in split_ids.items():
        no_style = [i for i in ids if i not in styles]
        if no_style:
            raise ValueError(
                f"Fashion {split}: ids with no row in {styles_path}: {format_examples(no_style)}"
            )
        no_image = [i for i in ids if f"{i}.jpg" not in available]
        if no_image:
            raise FileNotFoundError(
                f"Fashion {split}: ids with no image in {image_dir}: {format_examples(no_image)}"
            )

    rows = [styles[i] for ids in split_ids.values() for i in ids]
    features = Features(
        {
            "id": Value("int64"),
            "image": Image(),
            "text": Value("string"),
            "label": ClassLabel(names=sorted({row["articleType"] for row in rows})),
            "master_category": ClassLabel(names=sorted({row["masterCategory"] for row in rows})),
            "sub_category": ClassLabel(names=sorted({row["subCategory"] for row in rows})),
        }
    )
    info = DatasetInfo(
        description="Fashion Product Images (small), subset: product photos, titles and "
        "article types; fixed stratified split keeping duplicate images inside one split.",
        features=features,
    )
    splits = {}
    for split, ids in split_ids.items():
        split_rows = [styles[i] for i in ids]
        splits[split] = Dataset.from_dict(
            {
                "id": ids,
                "image": [str(image_dir / f"{i}.jpg") for i in ids],
                "text": [row["productDisplayName"].strip() for row in split_rows],
                "label": [row["articleType"] for row in split_rows],
                "master_category": [row["masterCategory"] for row in split_rows],
                "sub_category": [row["subCategory"] for row in split_rows],
            },
            features=features,
            info=info,
            split=NamedSplit(split),
        )
    return DatasetDict(splits)
