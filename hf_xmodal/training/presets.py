"""Settings per kind of relevance, chosen on validation: `class` and `caption`.

`class`: items are relevant when they share a class label (Wikipedia, Fashion, labelled feature
files); every model's config defaults were chosen for it. `caption`: each text is relevant to
its own image only (Flickr8k; an `image_index` column); instance-level relevance needs other
settings. A preset is config overrides: those under `"*"` apply to every model whose config has
the field (so new models get them too), then those under the model's `model_type`; a run's own
`--model_config` overrides both.

The `caption` entries were chosen by validation R-sum on Flickr8k tower features
(`flickr8k_features`, seed 0, 10 epochs, the training script's other defaults): the in-batch
InfoNCE term and dropout on the input features (`input_dropout` 0.5; DAML {0.3, 0.5, 0.7}:
279.3 / 281.5 / 265.9; DSCMR {0, 0.5}: 230.5 / 262.2, the latter in 5 epochs). The model
entries hold what differs from `"*"`; each config's docstring says what else was tried.
"""

from datasets import Dataset

PRESET_NAMES = ("class", "caption")

PRESETS: dict[str, dict[str, dict]] = {
    "class": {},
    "caption": {
        "*": {"instance_contrastive_weight": 1.0, "input_dropout": 0.5},
        "dscmr": {"input_dropout": 0.5},
        "daml": {"negative_mining": "hard", "nonlinear_maps": False},
        "uncsm": {
            "pathway_layers": 0,
            "embed_dim": 256,
            "triplet_mining": "hard",
            "pretrain_fraction": 0.2,
        },
        "cmsl": {"balanced_pairs": False},  # chosen on class data, not tried on captions
    },
}
"""Preset → `"*"` or model_type → config overrides."""


def preset_for(train: Dataset) -> str:
    """`caption` for caption data (an `image_index` column), else `class`."""
    return "caption" if "image_index" in train.column_names else "class"


def preset_overrides(preset: str, model_type: str, config_class: type) -> dict:
    """The config overrides of `preset` for a model: the shared ones its config knows, then its
    own."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {PRESET_NAMES}")
    shared = {k: v for k, v in PRESETS[preset].get("*", {}).items() if hasattr(config_class, k)}
    return {**shared, **PRESETS[preset].get(model_type, {})}
