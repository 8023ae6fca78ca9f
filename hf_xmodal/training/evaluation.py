"""Embedding a split with a model and scoring it with the model's own retrieval metric.

Two kinds of data: labelled pairs (relevance = a shared label; MAP@all) and caption data where
each text belongs to one image (`image_index`; Recall@K, images counted once). A model with more
than two media (`model.modalities`) is scored in every direction between them.
"""

import itertools
import statistics

import torch
from datasets import Dataset

from ..evaluation import (
    evaluate_caption_retrieval,
    evaluate_retrieval,
    pairwise_scores,
    precision_recall_curve,
    precision_recall_within_hamming_radius,
)
from ..models.modeling_xmodal import LABEL_COLUMNS


@torch.no_grad()
def embed_split(model, split: Dataset, batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Embeddings of a split in eval mode (`<medium>_embeds` for each medium of
    `model.modalities`, from the columns `forward` takes, `model.input_columns`), and its
    relevance column as `labels` when it has one. Every process embeds the whole split."""
    labels = [c for c in LABEL_COLUMNS if c in split.column_names][:1]
    columns = split.select_columns([*model.input_columns, *labels]).with_format("torch")
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {f"{m}_embeds": [] for m in model.modalities}
    for start in range(0, len(split), batch_size):
        batch = columns[start : start + batch_size]
        out = model(**{k: batch[k].to(model.device) for k in model.input_columns})
        media = out.modality_embeds or {m: out[f"{m}_embeds"] for m in model.modalities}
        for m in model.modalities:
            parts[f"{m}_embeds"].append(media[m].float().cpu())
    model.train(was_training)
    embeds = {key: torch.cat(values) for key, values in parts.items()}
    if labels:
        embeds["labels"] = columns[:][labels[0]]
    return embeds


def unique_images(embeds: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption data: one embedding per image (rows ordered by image) and each text's image row."""
    image_ids, text_image_index = torch.unique(embeds["labels"], return_inverse=True)
    first = torch.full((len(image_ids),), len(text_image_index), dtype=torch.long)
    first.scatter_reduce_(0, text_image_index, torch.arange(len(text_image_index)), "amin")
    return embeds["image_embeds"][first], text_image_index


def _metric(model: torch.nn.Module):
    metric = model.config.retrieval_metric
    return model.similarity if metric == "learned" else metric


def score_embeddings(
    model: torch.nn.Module, embeds: dict[str, torch.Tensor], captions: bool = False
) -> dict[str, float]:
    """Retrieval metrics of a split's embeddings under `model.config.retrieval_metric`."""
    if captions:
        images, text_image_index = unique_images(embeds)
        return evaluate_caption_retrieval(
            images, embeds["text_embeds"], text_image_index, metric=_metric(model)
        )
    labels = embeds["labels"]
    if len(model.modalities) > 2:
        return score_every_direction(model, embeds)
    return evaluate_retrieval(
        embeds["image_embeds"], embeds["text_embeds"], labels, labels, metric=_metric(model)
    )


def score_every_direction(
    model: torch.nn.Module, embeds: dict[str, torch.Tensor]
) -> dict[str, float]:
    """MAP@all of every query medium → gallery medium (`map_<query>2<gallery>`, e.g.
    `map_image2audio`) among the model's media, and their mean, `map_avg`."""
    if model.config.retrieval_metric == "learned":
        raise ValueError("a learned metric scores image-text pairs only, not more media")
    labels, results = embeds["labels"], {}
    for a, b in itertools.combinations(model.modalities, 2):
        pair = evaluate_retrieval(
            embeds[f"{a}_embeds"], embeds[f"{b}_embeds"], labels, labels, metric=_metric(model)
        )
        results[f"map_{a}2{b}"], results[f"map_{b}2{a}"] = pair["map_i2t"], pair["map_t2i"]
    results["map_avg"] = statistics.fmean(results.values())
    return results


def pr_curves(
    model: torch.nn.Module, embeds: dict[str, torch.Tensor], captions: bool = False
) -> dict[str, dict]:
    """Precision-recall curves of both directions, ready for `plot_pr_curves`; for binary codes
    also precision and recall within each Hamming radius 0..bits."""
    images, labels = embeds["image_embeds"], embeds["labels"]
    image_labels = labels
    if captions:  # relevant = the caption's own image
        images, _ = unique_images(embeds)
        image_labels = torch.unique(labels)
    texts, metric = embeds["text_embeds"], _metric(model)
    with torch.no_grad():
        i2t = pairwise_scores(images, texts, metric, query_modality="image")
        t2i = pairwise_scores(texts, images, metric, query_modality="text")
    curves = {
        "image→text": precision_recall_curve(i2t, image_labels, labels),
        "text→image": precision_recall_curve(t2i, labels, image_labels),
    }
    if metric == "hamming":
        curves["image→text, within Hamming radius"] = precision_recall_within_hamming_radius(
            images, texts, image_labels, labels
        )
        curves["text→image, within Hamming radius"] = precision_recall_within_hamming_radius(
            texts, images, labels, image_labels
        )
    return curves
