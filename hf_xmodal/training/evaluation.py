"""Embedding a split with a model and scoring it with the model's own retrieval metric."""

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..evaluation import evaluate_retrieval, pairwise_scores, precision_recall_curve


@torch.no_grad()
def embed_split(
    model: torch.nn.Module, dataloader: DataLoader, accelerator: Accelerator
) -> dict[str, torch.Tensor]:
    """Image and text embeddings and labels of a whole split, gathered from every process.

    The dataloader must come from `accelerator.prepare`; `gather_for_metrics` drops the samples
    repeated to even out the last batch, so each item is counted once.
    """
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    parts: dict[str, list[torch.Tensor]] = {"image_embeds": [], "text_embeds": [], "labels": []}
    for batch in dataloader:
        out = unwrapped(
            image_features=batch["image_features"], text_features=batch["text_features"]
        )
        gathered = accelerator.gather_for_metrics(
            (out.image_embeds, out.text_embeds, batch["labels"])
        )
        for key, value in zip(parts, gathered, strict=True):
            parts[key].append(value.cpu())
    unwrapped.train(was_training)
    return {key: torch.cat(values) for key, values in parts.items()}


def score_embeddings(
    model: torch.nn.Module, embeds: dict[str, torch.Tensor], **kwargs
) -> dict[str, float]:
    """Retrieval metrics of embeddings under `model.config.retrieval_metric`."""
    metric = model.config.retrieval_metric
    if metric == "learned":
        metric = model.similarity
    return evaluate_retrieval(
        embeds["image_embeds"],
        embeds["text_embeds"],
        embeds["labels"],
        embeds["labels"],
        metric=metric,
        **kwargs,
    )


def similarity_matrix(model: torch.nn.Module, embeds: dict[str, torch.Tensor]) -> torch.Tensor:
    """Image×text score matrix `[n_images, n_texts]` under the model's retrieval metric."""
    metric = model.config.retrieval_metric
    if metric == "learned":
        with torch.no_grad():
            return model.similarity(embeds["image_embeds"], embeds["text_embeds"])
    return pairwise_scores(embeds["image_embeds"], embeds["text_embeds"], metric)


def pr_curves(model: torch.nn.Module, embeds: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Precision-recall curves of both directions, ready for `plot_pr_curves`."""
    scores = similarity_matrix(model, embeds)
    labels = embeds["labels"]
    return {
        "image→text": precision_recall_curve(scores, labels, labels),
        "text→image": precision_recall_curve(scores.T, labels, labels),
    }
