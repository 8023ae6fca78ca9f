"""Batching dataset rows for `transformers.Trainer` (or any `DataLoader`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models import XmodalTowerProcessor
from ..models.modeling_xmodal import LABEL_COLUMNS

MEDIA = (("image_features", "image", "images"), ("text_features", "text", "text"))
"""Per medium: the column of precomputed features, the column of raw media, and the processor's
argument for the raw media."""


@dataclass
class XmodalDataCollator:
    """Turns a list of dataset rows into the batch a model's `forward` takes, through the model's
    processor (which checks every array's width and rejects NaN/inf).

    Each row holds a pair's media and its relevance: `image_features` and `text_features`
    (precomputed features), or, with a tower processor (`XmodalTowerProcessor`, for models that
    carry the pretrained towers), `image` (a PIL image or a path) and `text` (a string); a medium's
    features are used when the row has both. The relevance comes from the first of `label`,
    `labels` (a class id or multi-hot labels) and `image_index` (caption data) the row has, and is
    passed as `labels`. Other columns are ignored.

    With `transformers.Trainer`, pass `remove_unused_columns=False` in the training arguments when
    the dataset relies on `image_index` or raw `image` / `text` columns: Trainer otherwise drops
    every column `forward` does not name before the collator sees it.

    Example:
        >>> collator = XmodalDataCollator(XmodalProcessor(image_feature_dim=2, text_feature_dim=3))
        >>> batch = collator([{"image_features": [0, 1], "text_features": [1, 2, 3], "label": 4}])
        >>> {k: tuple(v.shape) for k, v in batch.items()}
        {'image_features': (1, 2), 'text_features': (1, 3), 'labels': (1,)}
    """

    processor: Any

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("the collator got an empty list of rows")
        columns = set(rows[0])
        inputs = {}
        for features, raw, argument in MEDIA:
            if features in columns:
                inputs[features] = np.asarray([row[features] for row in rows], dtype=np.float32)
            elif raw in columns:
                if not isinstance(self.processor, XmodalTowerProcessor):
                    raise ValueError(
                        f"rows give raw '{raw}' but {type(self.processor).__name__} takes "
                        "features: raw media need a model with the pretrained towers and its "
                        "XmodalTowerProcessor"
                    )
                inputs[argument] = [row[raw] for row in rows]
            else:
                raise ValueError(
                    f"rows have no '{features}' or '{raw}' column (columns: {sorted(columns)})"
                )
        batch = dict(self.processor(**inputs))
        label = next((name for name in LABEL_COLUMNS if name in columns), None)
        if label is None:
            raise ValueError(
                f"rows have none of the label columns {LABEL_COLUMNS} (columns: {sorted(columns)})"
            )
        batch["labels"] = torch.as_tensor(np.asarray([row[label] for row in rows]))
        return batch
