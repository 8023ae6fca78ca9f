"""Pretrained-tower features for whole datasets, extracted once and cached by fingerprint.

`datasets.map` writes each split's features to a cache file named by the input's fingerprint and
the towers' version, so a second load reads them back in seconds.
"""

from __future__ import annotations

import io
import os
from functools import cached_property
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, List, Value
from datasets import Image as ImageFeature
from datasets.fingerprint import Hasher

from ..models.configuration_xmodal import TOWER_DIMS
from ..models.processing_xmodal import XmodalTowerProcessor, open_image
from ..models.towers import (
    IMAGE_TOWER,
    MAX_TEXT_CHUNKS,
    TEXT_MAX_LENGTH,
    ImageTower,
    TextTower,
    text_tower_config,
)

CACHE_DIR = Path(os.environ.get("HF_XMODAL_CACHE", Path.home() / ".cache" / "hf_xmodal"))
TOWERS_VERSION = f"{IMAGE_TOWER}+all-MiniLM-L6-v2/1"
"""Changes whenever the towers' outputs would change; part of every cache key."""
TEXT_WINDOWS_VERSION = f"+windows{MAX_TEXT_CHUNKS}"
"""Added to the key of a text column that has a text longer than one window: encoding by windows
changes only those texts' features, so caches of short texts stay valid."""


class Towers:
    """Both pretrained towers and their processor, in eval mode, for feature extraction.

    Each is built on first use, so loads served from the cache build nothing.
    """

    @cached_property
    def processor(self) -> XmodalTowerProcessor:
        return XmodalTowerProcessor.from_towers()

    @cached_property
    def image(self) -> ImageTower:
        return ImageTower(pretrained=True).requires_grad_(False).eval()

    @cached_property
    def text(self) -> TextTower:
        return TextTower(text_tower_config(), pretrained=True).eval()

    @torch.inference_mode()
    def embed_images(self, images: list) -> torch.Tensor:
        return self.image(self.processor(images=images)["pixel_values"])

    def any_text_beyond_one_window(self, texts: list[str]) -> bool:
        """Whether a text of `texts` is encoded by several token windows."""
        tokens = self.processor.tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return max(map(len, tokens), default=0) > TEXT_MAX_LENGTH

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        batch = self.processor(text=texts)
        return self.text(batch["input_ids"], batch["attention_mask"])


def caption_pairs(dataset: DatasetDict) -> DatasetDict:
    """One row per (image, caption) pair, with `image_index`: the image's row in its split."""

    def explode(batch, indices):
        n = [len(c) for c in batch["captions"]]
        out = {k: [v for v, m in zip(batch[k], n, strict=True) for _ in range(m)] for k in batch}
        out["text"] = [c for captions in batch["captions"] for c in captions]
        out["image_index"] = [i for i, m in zip(indices, n, strict=True) for _ in range(m)]
        return out

    return dataset.map(
        explode, batched=True, with_indices=True, remove_columns=["captions"], desc="captions"
    )


def extract_features(
    dataset: DatasetDict,
    images: bool = True,
    texts: bool = True,
    batch_size: int = 64,
    towers: Towers | None = None,
    cache_dir: str | os.PathLike = CACHE_DIR,
    text_column: str = "text",
    text_target: str = "text_features",
) -> DatasetDict:
    """Add `image_features` (1280-d, from the `image` column) and `text_features` (384-d, from
    `text`) to every split, dropping the decoded images. Cached under `cache_dir` by fingerprint.
    `text_column` / `text_target` embed another text column (e.g. a third, text-like modality).
    """
    towers = towers or Towers()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    if images:
        jobs.append(
            ("image", "image_features", towers.embed_images, TOWER_DIMS["image_feature_dim"])
        )
    if texts:
        jobs.append((text_column, text_target, towers.embed_texts, TOWER_DIMS["text_feature_dim"]))
    out = {}
    for split, data in dataset.items():
        for column, target, embed, dim in jobs:
            if column not in data.column_names:
                raise ValueError(f"split '{split}' has no '{column}' column: {data.column_names}")
            version = TOWERS_VERSION
            if column == "text" and towers.any_text_beyond_one_window(list(data["text"])):
                version += TEXT_WINDOWS_VERSION
            data = _extract(data, column, target, embed, dim, batch_size, cache_dir, split, version)
        out[split] = data
    return DatasetDict(out)


def _extract(
    data: Dataset, column, target, embed, dim, batch_size, cache_dir: Path, split: str, version
) -> Dataset:
    fingerprint = Hasher.hash((data._fingerprint, column, version))
    features = data.features.copy()
    features[target] = List(Value("float32"), length=dim)
    read = list
    if column == "image":
        del features["image"]
        # Decoded here rather than by datasets, so that a bad file is named in the error.
        data = data.cast_column("image", ImageFeature(decode=False))
        read = _open_images
    return data.map(
        lambda batch: {target: embed(read(batch[column])).numpy()},
        batched=True,
        batch_size=batch_size,
        remove_columns=["image"] if column == "image" else None,
        features=features,
        cache_file_name=str(cache_dir / f"{fingerprint}.arrow"),
        new_fingerprint=fingerprint,
        desc=f"{column} features ({split})",
    )


def _open_images(items: list[dict]) -> list:
    """PIL images of undecoded `datasets.Image` values (a file path or the file's bytes)."""
    return [
        open_image(
            item["path"] if item["bytes"] is None else io.BytesIO(item["bytes"]),
            f"image file {item['path'] or '(bytes)'}",
        )
        for item in items
    ]
