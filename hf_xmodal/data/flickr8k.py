"""Flickr8k (Hodosh, Young and Hockenmaier, 2013): images with five captions each."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, DatasetInfo, Features, Image, List, NamedSplit, Value

from ._common import (
    DATA_ROOT,
    format_examples,
    load_saved_dataset_dict,
    require_dir,
    require_file,
)

FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "validation": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
FLICKR8K_FEATURES = Features(
    {
        "image_name": Value("string"),
        "image": Image(),
        "captions": List(Value("string")),
    }
)
FLICKR8K_CITATION = """@article{hodosh2013framing,
  title   = {Framing Image Description as a Ranking Task: Data, Models and Evaluation Metrics},
  author  = {Hodosh, Micah and Young, Peter and Hockenmaier, Julia},
  journal = {Journal of Artificial Intelligence Research},
  volume  = {47},
  pages   = {853--899},
  year    = {2013}
}"""


def _read_captions(path: Path) -> dict[str, list[str]]:
    """Captions per image name, in file order, from the ``image,caption`` CSV."""
    captions: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["image", "caption"]:
            raise ValueError(f"{path}: expected the header 'image,caption', got {header}")
        for line_number, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise ValueError(f"{path}, line {line_number}: expected 2 fields, got {len(row)}")
            captions.setdefault(row[0], []).append(row[1])
    return captions


def load_flickr8k(data_dir: str | os.PathLike = DATA_ROOT / "flickr8k") -> DatasetDict:
    """Load Flickr8k as train (6000) / validation (1000) / test (1000), one row per image.

    ``data_dir`` is either the raw folder (``images/``, ``captions.txt`` and the three
    ``Flickr_8k.*Images.txt`` lists) or a DatasetDict saved by ``scripts/prepare_flickr8k.py``.
    From the raw folder, split-list names with no image file are dropped (the official lists name
    a few images that are not part of the corpus); images are decoded lazily from their files.
    Columns: ``image_name``, ``image`` (PIL image on access), ``captions`` (the 5 captions).
    """
    data_dir = Path(data_dir)
    saved = load_saved_dataset_dict(data_dir)
    if saved is not None:
        return saved
    require_dir(data_dir, "Flickr8k")
    image_dir = data_dir / "images"
    require_dir(image_dir, "Flickr8k images")
    captions_path = data_dir / "captions.txt"
    require_file(captions_path, "Flickr8k")
    captions = _read_captions(captions_path)
    available = set(os.listdir(image_dir))
    image_dir = image_dir.resolve()
    info = DatasetInfo(
        description="Flickr8k: photos with five English captions each.",
        citation=FLICKR8K_CITATION,
        license="For research use; the photos belong to their Flickr owners.",
        features=FLICKR8K_FEATURES,
    )

    splits = {}
    for split, list_name in FLICKR8K_SPLIT_FILES.items():
        list_path = data_dir / list_name
        require_file(list_path, "Flickr8k")
        names = [name for name in list_path.read_text().split() if name in available]
        no_captions = [name for name in names if name not in captions]
        if no_captions:
            raise ValueError(
                f"Flickr8k {split}: images without captions in {captions_path}: "
                f"{format_examples(no_captions)}"
            )
        splits[split] = Dataset.from_dict(
            {
                "image_name": names,
                "image": [str(image_dir / name) for name in names],
                "captions": [captions[name] for name in names],
            },
            features=FLICKR8K_FEATURES,
            info=info,
            split=NamedSplit(split),
        )
    return DatasetDict(splits)
