"""Scoring a split's embeddings during training (hf_xmodal.training.evaluation)."""

import statistics

import pytest
import torch

from hf_xmodal.evaluation import evaluate_retrieval
from hf_xmodal.models import DSCMRConfig, DSCMRModel
from hf_xmodal.training import headline, score_embeddings

MEDIA = ("image", "text", "audio")


@pytest.fixture
def three_media_model():
    model = DSCMRModel(DSCMRConfig(num_labels=3, hidden_dims=[8], embed_dim=4))
    model.modalities = MEDIA  # a model that embeds a third medium
    return model


def test_more_than_two_media_are_scored_in_every_direction(three_media_model):
    g = torch.Generator().manual_seed(0)
    embeds = {f"{m}_embeds": torch.randn(30, 4, generator=g) for m in MEDIA}
    embeds["labels"] = torch.arange(30) % 3
    scores = score_embeddings(three_media_model, embeds)
    labels = embeds["labels"]
    for a, b in (("image", "text"), ("image", "audio"), ("text", "audio")):
        pair = evaluate_retrieval(embeds[f"{a}_embeds"], embeds[f"{b}_embeds"], labels, labels)
        assert scores[f"map_{a}2{b}"] == pair["map_i2t"]
        assert scores[f"map_{b}2{a}"] == pair["map_t2i"]
    directions = [v for k, v in scores.items() if k != "map_avg"]
    assert len(directions) == 6 and scores["map_avg"] == statistics.fmean(directions)
    assert headline(scores).startswith("MAP image2text ")


def test_a_learned_metric_with_more_media_fails_clearly(three_media_model):
    three_media_model.config.retrieval_metric = "learned"
    embeds = {f"{m}_embeds": torch.randn(6, 4) for m in MEDIA} | {"labels": torch.arange(6) % 3}
    with pytest.raises(ValueError, match="image-text pairs only"):
        score_embeddings(three_media_model, embeds)
