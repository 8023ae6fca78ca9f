"""Configuration fields shared by every hf_xmodal model: its inputs and its retrieval metric."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

INPUT_MODES = ("features", "raw")
TOWER_DIMS = {"image_feature_dim": 1280, "text_feature_dim": 384}
"""Widths of the pretrained towers' outputs (EfficientNet-Lite0 pooled, MiniLM sentence)."""
RETRIEVAL_METRICS = ("cosine", "hamming", "learned")


@strict
class XmodalConfig(PreTrainedConfig):
    r"""Base of every hf_xmodal model configuration.

    Args:
        image_feature_dim (`int`, defaults to 128): size of the image features the heads take
            (Wikipedia SIFT: 128).
        text_feature_dim (`int`, defaults to 10): size of the text features the heads take
            (Wikipedia LDA: 10).
        input_mode (`str`, defaults to `"features"`): `"features"` when the model takes
            precomputed feature vectors; `"raw"` when it also holds the pretrained image and text
            towers and accepts `pixel_values` / `input_ids` (and still accepts the towers'
            features); the feature sizes are then the towers' (1280 and 384).
        train_towers (`bool`, defaults to `False`): fine-tune the towers in `"raw"` mode.
        text_tower_config (`dict`, *optional*): the text tower's architecture, filled in when a
            raw-mode model is first built from the packaged weights; a model whose config has it
            builds the towers empty, for `from_pretrained` to fill.
        retrieval_metric (`str`, defaults to `"cosine"`): how `get_*_features` outputs are
            compared: `"cosine"`, `"hamming"` (binary codes) or `"learned"` (the model's
            `similarity(query_embeds, gallery_embeds, query_modality) -> [Q, G]` method, where
            `query_modality` is `"image"` or `"text"`, the medium of the queries).
        num_labels (`int`): number of classes; set from the training data.
    """

    image_feature_dim: int = 128
    text_feature_dim: int = 10
    input_mode: str = "features"
    train_towers: bool = False
    retrieval_metric: str = "cosine"
    text_tower_config: dict | None = None

    def __post_init__(self, **kwargs):
        if self.input_mode == "raw":
            for name, dim in TOWER_DIMS.items():
                setattr(self, name, dim)
        super().__post_init__(**kwargs)

    def validate_xmodal(self):
        """Reject input settings no model can use."""
        for name in ("image_feature_dim", "text_feature_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.input_mode == "raw":
            for name, dim in TOWER_DIMS.items():
                if getattr(self, name) != dim:
                    raise ValueError(f"{name} must be {dim} (the tower's output) in raw mode")
        if self.retrieval_metric not in RETRIEVAL_METRICS:
            raise ValueError(
                f"retrieval_metric must be one of {RETRIEVAL_METRICS}, "
                f"got {self.retrieval_metric!r}"
            )
