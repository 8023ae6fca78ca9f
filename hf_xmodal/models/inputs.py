"""What every model's `get_*_features` starts from: checked feature vectors for each modality.

In `"raw"` input mode the pretrained towers live here and turn pixels and tokens into those
features; precomputed tower features are accepted too, so cached features train the same model.
Feature inputs arrive standardised by the processor; a raw-mode model standardises its towers'
outputs itself, with the processor's statistics stored as buffers (:func:`add_towers`). In
training, `config.input_dropout` drops features on the way out.
"""

import torch
from torch import nn

from .configuration_xmodal import TOWER_DIMS, XmodalConfig
from .layers import batch_dropout, check_features, check_pixel_values, check_tokens
from .towers import ImageTower, TextTower, text_tower_config


class ModalityInputs(nn.Module):
    """Turns a model's image and text inputs into checked feature matrices for its heads."""

    def __init__(self, config: XmodalConfig):
        super().__init__()
        self.image_feature_dim = config.image_feature_dim
        self.text_feature_dim = config.text_feature_dim
        self.train_towers = config.train_towers
        self.input_dropout = config.input_dropout
        self.image_tower = self.text_tower = None
        if config.input_mode == "raw":
            fresh = config.text_tower_config is None
            if fresh:
                config.text_tower_config = text_tower_config()
            self.image_tower = ImageTower(pretrained=fresh)
            self.text_tower = TextTower(config.text_tower_config, pretrained=fresh)
            for name, dim in (("image", self.image_feature_dim), ("text", self.text_feature_dim)):
                self.register_buffer(f"{name}_feature_mean", torch.zeros(dim))
                self.register_buffer(f"{name}_feature_scale", torch.ones(dim))
            for tower in (self.image_tower, self.text_tower):
                tower.requires_grad_(config.train_towers)
                if fresh:  # keep the pretrained weights through the model's post_init
                    for module in tower.modules():
                        module._is_hf_initialized = True

    def train(self, mode: bool = True):
        super().train(mode)
        for tower in (self.image_tower, self.text_tower):
            if tower is not None and not self.train_towers:
                tower.eval()  # frozen towers keep their batch-norm statistics
        return self

    def _run(self, tower: nn.Module, *inputs: torch.Tensor):
        with torch.set_grad_enabled(self.train_towers and torch.is_grad_enabled()):
            return tower(*inputs)

    def _standardize(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """Tower features standardised as the processor standardises given features."""
        mean, scale = getattr(self, f"{name}_feature_mean"), getattr(self, f"{name}_feature_scale")
        return (features - mean) / scale

    def _dropout(self, features: torch.Tensor) -> torch.Tensor:
        return batch_dropout(features, self.input_dropout, self.training)

    def image(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image features `(batch, image_feature_dim)` from features or (raw mode) pixels."""
        if pixel_values is not None:
            if self.image_tower is None:
                raise ValueError("pixel_values need a model with input_mode='raw'")
            image_features = self._standardize(
                "image", self._run(self.image_tower, check_pixel_values(pixel_values))
            )
        if image_features is None:
            raise ValueError("give image_features or pixel_values")
        return self._dropout(
            check_features(image_features, self.image_feature_dim, "image_features")
        )

    def image_with_regions(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw mode: pooled features `(batch, image_feature_dim)` and the region map of the image
        tower's last block, regions first `(batch, 49, 320)`."""
        if self.image_tower is None:
            raise ValueError("pixel_values need a model with input_mode='raw'")
        pixel_values = check_pixel_values(pixel_values)
        block_map, pooled = self._run(self.image_tower.regions_and_pooled, pixel_values)
        return self._standardize("image", pooled), block_map.flatten(2).transpose(1, 2)

    def text(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text features `(batch, text_feature_dim)` from features or (raw mode) tokens."""
        if input_ids is not None:
            if self.text_tower is None:
                raise ValueError("input_ids need a model with input_mode='raw'")
            tower = self.text_tower.model.config
            tokens = check_tokens(
                input_ids, attention_mask, tower.vocab_size, tower.max_position_embeddings
            )
            text_features = self._standardize("text", self._run(self.text_tower, *tokens))
        if text_features is None:
            raise ValueError("give text_features or input_ids")
        return self._dropout(check_features(text_features, self.text_feature_dim, "text_features"))


def add_towers(model: nn.Module, feature_statistics: dict | None = None) -> nn.Module:
    """Give a model trained on tower features the pretrained towers themselves (raw mode).

    Its heads stay as trained; afterwards it also takes `pixel_values` / `input_ids`, and
    `save_pretrained` writes a checkpoint that carries the towers. `feature_statistics` (a fitted
    processor's, used on the training features) standardise the towers' outputs the same way.
    """
    config = model.config
    for name, dim in TOWER_DIMS.items():
        if getattr(config, name) != dim:
            raise ValueError(
                f"{name} is {getattr(config, name)}, not the tower's {dim}: the model was not "
                "trained on tower features"
            )
    config.input_mode = "raw"
    model.inputs = ModalityInputs(config)
    for medium in ("image", "text"):  # the towers' media (other modalities have no tower)
        statistics = (feature_statistics or {}).get(f"{medium}_features")
        for key in ("mean", "scale") if statistics else ():
            getattr(model.inputs, f"{medium}_feature_{key}").copy_(torch.tensor(statistics[key]))
    return model
