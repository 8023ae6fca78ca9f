"""What `scripts/train.py` needs beyond the models: evaluation during training, results files."""

from .evaluation import embed_split, pr_curves, score_embeddings, selection_key, unique_images
from .results import (
    RESULTS_FILE,
    atomic_write_text,
    config_hash,
    headline,
    load_results,
    mean_std,
    summarize,
    write_results,
)

__all__ = [
    "RESULTS_FILE",
    "atomic_write_text",
    "config_hash",
    "embed_split",
    "headline",
    "load_results",
    "mean_std",
    "pr_curves",
    "score_embeddings",
    "selection_key",
    "summarize",
    "unique_images",
    "write_results",
]
