"""Load a dataset by name or by path."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from datasets import DatasetDict

from ._common import load_saved_dataset_dict
from .extraction import Towers, caption_pairs, extract_features
from .fashion import load_fashion
from .features import load_paired_features
from .flickr8k import load_flickr8k
from .wikipedia import load_wikipedia

_BUNDLED: dict[str, Callable[[], DatasetDict]] = {
    "wikipedia": load_wikipedia,
    "wikipedia_full_test": partial(load_wikipedia, split_protocol="full_test"),
}
_FROM_FOLDER: dict[str, Callable[..., DatasetDict]] = {
    "flickr8k": load_flickr8k,
    "fashion": load_fashion,
}
_TOWER_FEATURES = {"flickr8k_features": "flickr8k", "fashion_features": "fashion"}
_REGION_FEATURES = {"flickr8k_regions": "flickr8k", "fashion_regions": "fashion"}
_FASHION_TRANSFER = {
    "fashion_transfer_source": ("source", False),
    "fashion_transfer_target": ("target", False),
    "fashion_tags_transfer_target": ("target", True),
}
DATASET_NAMES = (
    *_BUNDLED,
    *_FROM_FOLDER,
    *_TOWER_FEATURES,
    "wikipedia_minilm",
    "fashion_tags_features",
    *_FASHION_TRANSFER,
    *_REGION_FEATURES,
)


def load_dataset_by_name(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    validation_size: int | float | None = None,
    validation_from: str = "train",
) -> DatasetDict:
    """Load a dataset by registered name, or from a path.

    Names: ``wikipedia`` (train/validation/test), ``wikipedia_full_test`` (train/test with the
    whole official test set), ``flickr8k`` and ``fashion`` (``data_dir``: raw or saved folder,
    default under ``../shared/data``); with pretrained-tower features (extracted once, then
    cached): ``flickr8k_features``, ``fashion_features`` and ``wikipedia_minilm``; with the image
    tower's region maps and the texts' words as well: ``flickr8k_regions``, ``fashion_regions``
    (Fashion there with multi-label relevance over master category, sub category and article
    type);
    ``fashion_tags_features`` adds each product's attribute tags as a third modality (``tags``,
    ``tags_features``); ``fashion_transfer_source`` / ``fashion_transfer_target`` are the
    class-disjoint source and target domains of ``fashion_features``
    (:func:`hf_xmodal.data.transfer.class_disjoint_split`), ``fashion_tags_transfer_target`` the
    target with the tags.
    A path may be a DatasetDict saved with ``save_to_disk``
    or a feature file/folder for :func:`load_paired_features` (``validation_size`` and
    ``validation_from`` apply there).
    """
    key = str(name)
    if key in DATASET_NAMES:
        if validation_size is not None:
            raise ValueError(f"validation_size only applies to feature files, not to '{key}'")
        if key in _REGION_FEATURES:
            from .regions import load_region_features

            return load_region_features(_REGION_FEATURES[key], data_dir)
        if key == "fashion_tags_features":
            from .transfer import add_tags

            return add_tags(_tower_features("fashion", data_dir), data_dir)
        if key in _FASHION_TRANSFER:
            from .transfer import fashion_transfer

            domain, tags = _FASHION_TRANSFER[key]
            return fashion_transfer(_tower_features("fashion", data_dir), domain, data_dir, tags)
        if key == "wikipedia_minilm":
            if data_dir is not None:
                raise ValueError("'wikipedia_minilm' is built from bundled data; no data_dir")
            return extract_features(load_wikipedia().remove_columns("text_features"), images=False)
        if key in _TOWER_FEATURES:
            return _tower_features(_TOWER_FEATURES[key], data_dir)
        if key in _BUNDLED:
            if data_dir is not None:
                raise ValueError(f"'{key}' is bundled with the package; do not pass data_dir")
            return _BUNDLED[key]()
        loader = _FROM_FOLDER[key]
        return loader() if data_dir is None else loader(data_dir)
    path = Path(key)
    if not path.exists():
        raise ValueError(
            f"unknown dataset '{key}': choose one of {list(DATASET_NAMES)}, or give the path of "
            "a DatasetDict saved with save_to_disk, a .mat/.npz feature file or a folder of .npy "
            "feature files"
        )
    if data_dir is not None:
        raise ValueError("data_dir only applies to the named datasets flickr8k and fashion")
    saved = load_saved_dataset_dict(path)
    if saved is not None:
        if validation_size is not None:
            raise ValueError("validation_size only applies to feature files")
        return saved
    return load_paired_features(path, validation_size, validation_from)


def _tower_features(name: str, data_dir: str | os.PathLike | None) -> DatasetDict:
    """`fashion` or `flickr8k` with pretrained-tower features in place of photos and texts
    (Flickr8k: one row per caption, `image_index` naming its image)."""
    data = load_dataset_by_name(name, data_dir)
    towers = Towers()
    if name == "fashion":
        return extract_features(data, towers=towers)
    data = caption_pairs(extract_features(data, texts=False, towers=towers))
    return extract_features(data, images=False, towers=towers)
