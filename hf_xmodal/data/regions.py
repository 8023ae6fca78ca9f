"""Region maps and words for fine-grained models (CMSL), beside the towers' pooled features.

Region maps: the image tower's last block, 320 channels on a 7×7 grid at 224 px, stored regions
first `(49, 320)` in float16 — 31 KB an image, 288 MB for Fashion's 9,196 photos (the 1280-channel
map after the head's 1×1 convolution would be four times that). Another pass of the tower over the
photos, cached under the tower-feature cache by fingerprint like the pooled features.

Words: the WordPiece ids of the text tower's tokenizer for the alphabetic tokens of each text (no
special tokens, digits or punctuation), at most `MAX_WORDS`, padded with 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Dataset, DatasetDict, List, Value, concatenate_datasets
from datasets.fingerprint import Hasher

from .extraction import CACHE_DIR, TOWERS_VERSION, Towers

REGION_GRID, REGION_CHANNELS = 7, 320
REGION_SHAPE = (REGION_GRID * REGION_GRID, REGION_CHANNELS)
MAX_WORDS = 32
REGION_DATASETS = ("fashion", "flickr8k")
FASHION_LABEL_COLUMNS = ("master_category", "sub_category", "label")
"""Fashion's multi-label relevance: two products are relevant when they share any of these."""


@torch.inference_mode()
def embed_regions(towers: Towers, images: list) -> torch.Tensor:
    """The tower's last-block region maps of `images`, `(batch, 49, 320)` float16."""
    pixels = towers.processor(images=images)["pixel_values"]
    return towers.image.region_map(pixels).flatten(2).transpose(1, 2).to(torch.float16)


def extract_region_features(
    dataset: DatasetDict,
    batch_size: int = 32,
    towers: Towers | None = None,
    cache_dir: str | os.PathLike = CACHE_DIR,
) -> DatasetDict:
    """Replace the `image` column of every split by `region_features` (float16 `(49, 320)`).

    Cached under `cache_dir` by the input's fingerprint and the towers' version.
    """
    towers = towers or Towers()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, data in dataset.items():
        if "image" not in data.column_names:
            raise ValueError(f"split '{split}' has no 'image' column: {data.column_names}")
        fingerprint = Hasher.hash((data._fingerprint, "region_features", TOWERS_VERSION))
        features = data.features.copy()
        del features["image"]
        features["region_features"] = Array2D(REGION_SHAPE, "float16")
        out[split] = data.map(
            lambda batch: {"region_features": embed_regions(towers, batch["image"]).numpy()},
            batched=True,
            batch_size=batch_size,
            remove_columns=["image"],
            features=features,
            cache_file_name=str(cache_dir / f"{fingerprint}.arrow"),
            new_fingerprint=fingerprint,
            desc=f"region maps ({split})",
        )
    return DatasetDict(out)


def word_ids(texts: list[str], tokenizer, max_words: int = MAX_WORDS) -> np.ndarray:
    """`(len(texts), max_words)` int32: each text's alphabetic WordPiece ids, padded with 0."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    alphabetic = np.array([token.lstrip("#").isalpha() for token in vocab])
    alphabetic[tokenizer.all_special_ids] = False
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = np.zeros((len(texts), max_words), dtype=np.int32)
    for row, ids in enumerate(encoded):
        kept = [i for i in ids if alphabetic[i]][:max_words]
        out[row, : len(kept)] = kept
    return out


def _fashion_labels(data: Dataset) -> np.ndarray:
    """Multi-hot over master category, sub category and article type (in that order)."""
    blocks = []
    for column in FASHION_LABEL_COLUMNS:
        n = data.features[column].num_classes
        blocks.append(np.eye(n, dtype=np.float32)[np.asarray(list(data[column]))])
    return np.concatenate(blocks, axis=1)


def load_region_features(
    name: str,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    limits: dict[str, int] | None = None,
) -> DatasetDict:
    """A dataset with the towers' pooled features plus `region_features` and `word_ids`.

    `fashion`: one row per product, `labels` multi-hot over master category, sub category and
    article type (the article type stays as `article_type`). `flickr8k`: one row per caption as
    in the tower features (`image_index` names its image), each row holding its image's map.
    `limits` keeps the first n images of the named splits (a smaller, cheaper set).
    """
    from .registry import load_dataset_by_name

    if name not in REGION_DATASETS:
        raise ValueError(f"no region maps for '{name}': use one of {REGION_DATASETS}")
    towers = Towers()
    pooled = load_dataset_by_name(f"{name}_features", data_dir)
    images = load_dataset_by_name(name, data_dir)
    for split, n in (limits or {}).items():
        if split not in images or not 0 < n <= len(images[split]):
            raise ValueError(f"limit {split}={n}: no such split, or not in [1, its size]")
        images[split] = images[split].select(range(n))
        if name == "flickr8k":  # the captions of those images
            keep = np.flatnonzero(np.asarray(list(pooled[split]["image_index"])) < n)
            pooled[split] = pooled[split].select(keep)
        else:
            pooled[split] = pooled[split].select(range(n))
    regions = extract_region_features(images, batch_size=batch_size, towers=towers)
    out = {}
    for split, data in pooled.items():
        maps = regions[split].select_columns(["region_features"])
        if name == "flickr8k":  # each caption row gets its image's map (a copy, cached)
            fingerprint = Hasher.hash((maps._fingerprint, data._fingerprint, "caption maps"))
            maps = maps.select(list(data["image_index"])).flatten_indices(
                cache_file_name=str(CACHE_DIR / f"{fingerprint}.arrow"),
                new_fingerprint=fingerprint,
            )
        data = concatenate_datasets([data, maps], axis=1)
        words = word_ids(list(data["text"]), towers.processor.tokenizer)
        data = data.add_column(
            "word_ids", list(words), feature=List(Value("int32"), length=MAX_WORDS)
        )
        if name == "fashion":
            labels = _fashion_labels(data)
            data = data.rename_column("label", "article_type").add_column(
                "labels", list(labels), feature=List(Value("float32"), length=labels.shape[1])
            )
        out[split] = data
    return DatasetDict(out)
