"""`transformers.Trainer` with the package's data collator and its `evaluate` module."""

import numpy as np
import pytest
import torch

from hf_xmodal.data import XmodalDataCollator
from hf_xmodal.models import XmodalProcessor


def rows(n, labels):
    rng = np.random.default_rng(0)
    return [
        {
            "image_features": rng.random(4).tolist(),
            "text_features": rng.random(3).tolist(),
            "text": "a raw text the feature model ignores",
            **labels(i),
        }
        for i in range(n)
    ]


@pytest.fixture
def collator():
    return XmodalDataCollator(XmodalProcessor(image_feature_dim=4, text_feature_dim=3))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (lambda i: {"label": i % 2}, [0, 1, 0]),
        (lambda i: {"image_index": 7 + i}, [7, 8, 9]),
        (lambda i: {"labels": [1, i % 2]}, [[1, 0], [1, 1], [1, 0]]),
    ],
)
def test_collator_batches_features_and_labels(collator, labels, expected):
    examples = rows(3, labels)
    batch = collator(examples)
    assert set(batch) == {"image_features", "text_features", "labels"}
    assert batch["image_features"].dtype == torch.float32
    expected_images = torch.tensor([r["image_features"] for r in examples], dtype=torch.float32)
    torch.testing.assert_close(batch["image_features"], expected_images)
    assert batch["labels"].tolist() == expected


def test_collator_errors_name_the_problem(collator):
    with pytest.raises(ValueError, match="'text_features' or 'text'"):
        collator([{"image_features": [0.0] * 4, "label": 0}])
    with pytest.raises(ValueError, match="label columns"):
        collator([{"image_features": [0.0] * 4, "text_features": [0.0] * 3}])
    with pytest.raises(ValueError, match="image_features must have shape"):
        collator([{"image_features": [0.0] * 5, "text_features": [0.0] * 3, "label": 0}])
    with pytest.raises(ValueError, match="raw 'image'"):
        collator([{"image": "cat.jpg", "text_features": [0.0] * 3, "label": 0}])
