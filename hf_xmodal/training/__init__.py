"""Training: the loop behind `scripts/train.py` (`main`), evaluation, results files, validation
splits, presets, and the callback that trains a model with `transformers.Trainer`."""

from .evaluation import (
    embed_split,
    pr_curves,
    score_embeddings,
    unique_images,
)
from .presets import (
    PRESET_NAMES,
    PRESET_TRAINING,
    PRESETS,
    TRAINING_DEFAULTS,
    preset_for,
    preset_overrides,
    preset_training,
)
from .results import (
    RESULTS_FILE,
    config_hash,
    headline,
    headline_metrics,
    load_results,
    mean_std,
    selection_key,
    summarize,
    write_results,
)
from .splits import VALIDATION_HELP, describe_validation, require_splits, with_validation
from .trainer import TrainArguments, main
from .trainer_callback import TrainingHooksCallback

__all__ = [
    "PRESETS",
    "PRESET_TRAINING",
    "PRESET_NAMES",
    "RESULTS_FILE",
    "VALIDATION_HELP",
    "TRAINING_DEFAULTS",
    "TrainArguments",
    "TrainingHooksCallback",
    "config_hash",
    "describe_validation",
    "embed_split",
    "headline",
    "headline_metrics",
    "load_results",
    "main",
    "mean_std",
    "pr_curves",
    "preset_for",
    "preset_overrides",
    "preset_training",
    "require_splits",
    "score_embeddings",
    "selection_key",
    "summarize",
    "unique_images",
    "with_validation",
    "write_results",
]
