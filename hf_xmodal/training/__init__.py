"""What `scripts/train.py` needs beyond the models: evaluation during training, results files."""

from .evaluation import embed_split, pr_curves, score_embeddings, similarity_matrix
from .results import RESULTS_FILE, atomic_write_text, config_hash, load_results, write_results

__all__ = [
    "RESULTS_FILE",
    "atomic_write_text",
    "config_hash",
    "embed_split",
    "load_results",
    "pr_curves",
    "score_embeddings",
    "similarity_matrix",
    "write_results",
]
