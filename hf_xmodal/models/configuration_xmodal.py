"""Configuration fields shared by every hf_xmodal model: its inputs and its retrieval metric."""

import dataclasses
import difflib

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

INPUT_MODES = ("features", "raw")
TOWER_DIMS = {"image_feature_dim": 1280, "text_feature_dim": 384}
"""Widths of the pretrained towers' outputs (EfficientNet-Lite0 pooled, MiniLM sentence)."""
RETRIEVAL_METRICS = ("cosine", "hamming", "learned")
TRANSFORMERS_KEYS = frozenset(
    {
        "model_type",
        "auto_map",
        "name_or_path",
        "_name_or_path",
        "num_labels",
        "torch_dtype",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
    }
)
"""Keys other than the dataclass fields that transformers writes into a `config.json` or passes
when building a config (`PreTrainedConfig.__post_init__` consumes them); any other key is an
error."""


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
        instance_contrastive_weight (`float`, defaults to 0.0): weight of an optional
            instance-level term added to the method's loss (in every training stage), in none of
            the papers: symmetric InfoNCE over the batch's pairs (each item's own pair its only
            positive, items sharing its label left out of its negatives) on the embeddings'
            cosine / `instance_temperature`. 0 switches it off; the `caption` preset of
            `scripts/train.py` sets 1, for relevance between one text and one image.
        instance_temperature (`float`, defaults to 0.05): the InfoNCE temperature.
        input_dropout (`float`, defaults to 0.0): dropout on the image and text features as the
            model's networks take them (training only), in none of the papers; the `caption`
            preset sets it, as a regulariser for few images with many captions.

    A key that is neither a field nor one transformers writes into `config.json` is an error
    naming the closest field, so a misspelt setting never trains the default silently.
    """

    # Trainer's predictions hold the embeddings (and label scores), not the detached loss terms.
    keys_to_ignore_at_inference = ["loss_terms"]

    image_feature_dim: int = 128
    text_feature_dim: int = 10
    input_mode: str = "features"
    train_towers: bool = False
    retrieval_metric: str = "cosine"
    text_tower_config: dict | None = None
    instance_contrastive_weight: float | int = 0.0
    instance_temperature: float | int = 0.05
    input_dropout: float | int = 0.0

    def __post_init__(self, **kwargs):
        self.check_keys(kwargs)
        if self.input_mode == "raw":
            for name, dim in TOWER_DIMS.items():
                setattr(self, name, dim)
        super().__post_init__(**kwargs)

    @classmethod
    def check_keys(cls, kwargs: dict):
        """Reject keys that are not fields, naming the closest field for a near miss."""
        model_type = kwargs.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"{cls.__name__} is for model_type {cls.model_type!r}; "
                f"these settings are for {model_type!r}"
            )
        unknown = sorted(set(kwargs) - TRANSFORMERS_KEYS)
        if not unknown:
            return
        fields = {f.name for f in dataclasses.fields(cls)} | {"num_labels"}
        own = sorted(fields - {f.name for f in dataclasses.fields(PreTrainedConfig)})
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            problems.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        raise ValueError(
            f"{cls.__name__} has no field{'s' * (len(problems) > 1)} {', '.join(problems)}; "
            f"its fields are {', '.join(own)} "
            "and those of transformers' PreTrainedConfig"
        )

    def validate_xmodal(self):
        """Reject input settings no model can use."""
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {self.num_labels}")
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
        if self.instance_contrastive_weight < 0:
            raise ValueError(
                f"instance_contrastive_weight must be >= 0, got {self.instance_contrastive_weight}"
            )
        if not 0 <= self.input_dropout < 1:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout}")
        if self.instance_temperature <= 0:
            raise ValueError(
                f"instance_temperature must be positive, got {self.instance_temperature}"
            )
