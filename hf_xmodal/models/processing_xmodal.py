"""The processor shared by the models that take precomputed features."""

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .layers import check_features


class XmodalProcessor(ProcessorMixin):
    """Turns per-modality feature arrays into the tensors a model's `forward` takes.

    Checks each array's width against the model's input sizes and rejects NaN/inf, so a wrong
    input fails here with its name rather than deep inside the network.

    Args:
        image_feature_dim: width of the image features the model expects.
        text_feature_dim: width of the text features the model expects.

    Example:
        >>> processor = XmodalProcessor(image_feature_dim=128, text_feature_dim=10)
        >>> batch = processor(image_features=np.zeros((2, 128)), text_features=np.ones((2, 10)))
        >>> batch["image_features"].shape
        torch.Size([2, 128])
    """

    def __init__(self, image_feature_dim: int = 128, text_feature_dim: int = 10, **kwargs):
        self.image_feature_dim = image_feature_dim
        self.text_feature_dim = text_feature_dim
        super().__init__(**kwargs)

    def __call__(
        self,
        image_features: np.ndarray | torch.Tensor | list | None = None,
        text_features: np.ndarray | torch.Tensor | list | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        if image_features is None and text_features is None:
            raise ValueError("give image_features, text_features or both")
        data = {}
        for name, values, dim in (
            ("image_features", image_features, self.image_feature_dim),
            ("text_features", text_features, self.text_feature_dim),
        ):
            if values is not None:
                tensor = torch.as_tensor(np.asarray(values, dtype=np.float32))
                data[name] = check_features(tensor, dim, name)
        return BatchFeature(data, tensor_type=return_tensors)
