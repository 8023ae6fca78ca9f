"""What every model's `get_*_features` starts from: checked feature vectors for each modality."""

import torch
from torch import nn

from .configuration_xmodal import XmodalConfig
from .layers import check_features


class ModalityInputs(nn.Module):
    """Turns a model's image and text inputs into checked feature matrices for its heads."""

    def __init__(self, config: XmodalConfig):
        super().__init__()
        self.image_feature_dim = config.image_feature_dim
        self.text_feature_dim = config.text_feature_dim

    def image(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Image features `(batch, image_feature_dim)`."""
        if image_features is None:
            raise ValueError("give image_features")
        return check_features(image_features, self.image_feature_dim, "image_features")

    def text(self, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Text features `(batch, text_feature_dim)`."""
        if text_features is None:
            raise ValueError("give text_features")
        return check_features(text_features, self.text_feature_dim, "text_features")
