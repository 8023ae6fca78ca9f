"""Training: the loop behind `scripts/train.py` (`main`), evaluation, results files, and the
callback that trains a model with `transformers.Trainer`."""

from .evaluation import embed_split, pr_curves, score_embeddings, unique_images
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
from .trainer import TrainArguments, main
from .trainer_callback import TrainingHooksCallback

__all__ = [
    "RESULTS_FILE",
    "TrainArguments",
    "TrainingHooksCallback",
    "config_hash",
    "embed_split",
    "headline",
    "headline_metrics",
    "load_results",
    "main",
    "mean_std",
    "pr_curves",
    "score_embeddings",
    "selection_key",
    "summarize",
    "unique_images",
    "write_results",
]
