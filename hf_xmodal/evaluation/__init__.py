"""Retrieval evaluation: metrics, a FAISS-backed index and precision-recall plots."""

from pathlib import Path

from .index import RetrievalIndex
from .metrics import (
    average_precision,
    evaluate_caption_retrieval,
    evaluate_retrieval,
    hamming_distance,
    hamming_scores,
    mean_average_precision,
    pairwise_scores,
    precision_at_hamming_radius,
    precision_at_k,
    precision_recall_curve,
    precision_recall_within_hamming_radius,
    recall_at_k,
    relevance,
    tie_averaged_average_precision,
)
from .plots import plot_pr_curves


def metric_path() -> str:
    """Folder of the package's `evaluate` module: `evaluate.load(metric_path())` (offline)."""
    return str(Path(__file__).parent / "xmodal_retrieval")


__all__ = [
    "RetrievalIndex",
    "average_precision",
    "evaluate_caption_retrieval",
    "evaluate_retrieval",
    "hamming_distance",
    "hamming_scores",
    "mean_average_precision",
    "metric_path",
    "pairwise_scores",
    "plot_pr_curves",
    "precision_at_hamming_radius",
    "precision_at_k",
    "precision_recall_curve",
    "precision_recall_within_hamming_radius",
    "recall_at_k",
    "relevance",
    "tie_averaged_average_precision",
]
