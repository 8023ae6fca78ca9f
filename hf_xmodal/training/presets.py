"""Settings per kind of relevance, chosen on validation: `class` and `caption`.

`class`: items are relevant when they share a class label (Wikipedia, Fashion, labelled feature
files); every model's config defaults were chosen for it. `caption`: each text is relevant to
its own image only (Flickr8k; an `image_index` column); instance-level relevance needs other
settings. A preset is config overrides (`PRESETS`): those under `"*"` apply to every model whose
config has the field (so new models get them too), then those under the model's `model_type`; a
run's own `--model_config` overrides both. It also sets the training script's `epochs`,
`batch_size` and `learning_rate` (`PRESET_TRAINING`, same layout, over `TRAINING_DEFAULTS`),
where the command line leaves them unset.

The `caption` entries were chosen by validation R-sum on Flickr8k tower features
(`flickr8k_features`, seed 0, 10 epochs, the training script's other defaults): the in-batch
InfoNCE term and dropout on the input features (`input_dropout` 0.5; DAML {0.3, 0.5, 0.7}:
279.3 / 281.5 / 265.9; DSCMR {0, 0.5}: 230.5 / 262.2, the latter in 5 epochs). The model
entries hold what differs from `"*"`; each config's docstring says what else was tried.
The `caption` training settings: batches of 1,000 pairs at learning rate 4e-3 for 20 epochs
(DAML: 290.7, against 281.5 with batches of 100 at 1e-3 for 10 epochs; the InfoNCE linear heads
with batches of 128 / 512 / 1,024 / 2,048: 284.3 / 288.1 / 290.7 / 292.7). The DSCMR-style
model peaks at epoch 3 with them (259.5) and keeps 5 epochs of 100 pairs (262.2); UNCSM keeps
10 epochs of 100 pairs, because its metric network scores every pair of a batch (with batches of
1,000 an epoch took 2.5 minutes, DAML's 17 seconds).
DCKT and MHTN retrieve by a wider fc9: the softmax over the training images says nothing of new
images (DCKT target alone, 10 epochs of 100 pairs, validation 197.4; fc9 231.3). DCKT, validation:
fc9 of 128 / 512 units 237.2 / 246.3; without batch norm 181.5, semantic weight 0.1 237.2 (128
units). Their class default's dropout of 0.5 fails here (DCKT: 84, epoch 6); with 20 epochs of
1,000 pairs, dropout 0 / 0.1 / 0.2 gives DCKT 241.3 / 252.8 / 250.3, and 0 / 0.2 MHTN 257.4 /
252.7.
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
        "cmsl": {"balanced_pairs": False},  # validation R-sum 195.8 (with: 191.9), 64 bits
        "dckt": {"retrieval_representation": "fc9", "fc8_dim": 512, "fc9_dim": 512, "dropout": 0.1},
        "mhtn": {"retrieval_representation": "fc9", "fc8_dim": 512, "fc9_dim": 512, "dropout": 0.0},
    },
}
"""Preset → `"*"` or model_type → config overrides."""

TRAINING_DEFAULTS = {"epochs": 40, "batch_size": 100, "learning_rate": 1e-3}
"""The training script's epochs, global batch and learning rate where a preset sets none."""

PRESET_TRAINING: dict[str, dict[str, dict]] = {
    "class": {},
    "caption": {
        "*": {"epochs": 20, "batch_size": 1000, "learning_rate": 4e-3},
        "dscmr": {"epochs": 5, "batch_size": 100, "learning_rate": 1e-3},
        "uncsm": {"epochs": 10, "batch_size": 100, "learning_rate": 1e-3},
    },
}
"""Preset → `"*"` or model_type → training settings over `TRAINING_DEFAULTS`."""


def preset_for(train: Dataset) -> str:
    """`caption` for caption data (an `image_index` column), else `class`."""
    return "caption" if "image_index" in train.column_names else "class"


def _layers(table: dict[str, dict[str, dict]], preset: str, model_type: str) -> tuple[dict, dict]:
    """A preset's shared (`"*"`) entry and the model's own entry in `table`."""
    if preset not in table:
        raise ValueError(f"unknown preset {preset!r}: choose one of {PRESET_NAMES}")
    return table[preset].get("*", {}), table[preset].get(model_type, {})


def preset_overrides(preset: str, model_type: str, config_class: type) -> dict:
    """The config overrides of `preset` for a model: the shared ones its config knows, then its
    own."""
    shared, own = _layers(PRESETS, preset, model_type)
    return {**{k: v for k, v in shared.items() if hasattr(config_class, k)}, **own}


def preset_training(preset: str, model_type: str) -> dict:
    """The training settings of `preset` for a model: `TRAINING_DEFAULTS`, then the preset's
    shared ones, then the model's own."""
    shared, own = _layers(PRESET_TRAINING, preset, model_type)
    return {**TRAINING_DEFAULTS, **shared, **own}
