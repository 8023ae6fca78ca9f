"""UNCSM-specific invariants: stages, switches, the loss equations and learned-metric retrieval."""

import pytest
import torch

from hf_xmodal.evaluation import (
    RetrievalIndex,
    evaluate_caption_retrieval,
    evaluate_retrieval,
    mean_average_precision,
    precision_recall_curve,
)
from hf_xmodal.models import modeling_uncsm
from hf_xmodal.models.configuration_uncsm import UNCSMConfig
from hf_xmodal.models.losses import contrastive_loss, triplet_loss
from hf_xmodal.models.modeling_uncsm import UNCSMModel
from hf_xmodal.training import pr_curves, score_embeddings

NUM_LABELS, IMAGE_DIM, TEXT_DIM = 3, 7, 5
TINY = {"hidden_dim": 16, "embed_dim": 6, "metric_hidden_dims": [8, 4], "dropout": 0.0}


def make_model(**kwargs) -> UNCSMModel:
    config = UNCSMConfig(
        image_feature_dim=IMAGE_DIM,
        text_feature_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        **{**TINY, **kwargs},
    )
    torch.manual_seed(0)
    return UNCSMModel(config)


def make_batch(n=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "image_features": torch.randn(n, IMAGE_DIM, generator=g),
        "text_features": torch.randn(n, TEXT_DIM, generator=g),
        "labels": torch.arange(n) % NUM_LABELS,
    }


def embeds(model, n_images=11, n_texts=8, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        images = model.get_image_features(torch.randn(n_images, IMAGE_DIM, generator=g))
        texts = model.get_text_features(torch.randn(n_texts, TEXT_DIM, generator=g))
    return images, texts


def reference_scores(model, images, texts):
    """s(image_i, text_j) one pair at a time: `[num_images, num_texts]`."""
    with torch.no_grad():
        return torch.tensor([[model.metric_network(u, v).item() for v in texts] for u in images])


def grads(model, stage, batch):
    model.set_training_stage(stage)
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    return out, got


def test_stages_train_what_they_should():
    model = make_model()
    batch = make_batch()
    metric = {n for n, _ in model.named_parameters() if n.startswith("metric_network.")}
    pathways = {n for n, _ in model.named_parameters() if "_pathway." in n}
    assert metric and pathways

    out, trained = grads(model, "pretrain", batch)
    assert set(out.loss_terms) == {"contrastive"}
    assert trained == pathways  # the metric network has no part in pre-training

    out, trained = grads(model, "finetune", batch)
    assert set(out.loss_terms) == {"triplet", "metric"}
    assert trained == pathways | metric  # fine-tuning is joint
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))


def test_training_stages_split_the_epochs():
    assert make_model().training_stages(40) == [("pretrain", 20), ("finetune", 20)]
    assert make_model(pretrain_fraction=0.25).training_stages(10) == [
        ("pretrain", 3),
        ("finetune", 7),
    ]
    assert make_model().training_stages(1) == [("pretrain", 0), ("finetune", 1)]
    assert make_model(pretrain_fraction=0.9).training_stages(5) == [
        ("pretrain", 4),
        ("finetune", 1),
    ]


@pytest.mark.parametrize(
    "field, stages, terms",
    [
        ("pretrain_fraction", [("pretrain", 0), ("finetune", 12)], {"triplet", "metric"}),
        ("triplet_weight", [("pretrain", 6), ("finetune", 6)], {"metric"}),
        ("metric_weight", [("pretrain", 6), ("finetune", 6)], {"triplet"}),
    ],
)
def test_each_component_off_removes_its_term(field, stages, terms):
    model = make_model(**{field: 0})
    assert model.training_stages(12) == stages
    model.set_training_stage("finetune")
    out = model(**make_batch())
    assert set(out.loss_terms) == terms
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))


def test_metric_network_off_means_cosine_retrieval():
    model = make_model(metric_weight=0)
    assert model.metric_network is None and model.config.retrieval_metric == "cosine"
    images, texts = embeds(model)
    torch.testing.assert_close(model.similarity(images, texts), images @ texts.T)
    assert make_model().config.retrieval_metric == "learned"
    with pytest.raises(ValueError, match="retrieval_metric must be 'cosine'"):
        UNCSMConfig(metric_weight=0, retrieval_metric="learned")


def test_pre_training_validation_scores_by_cosine():
    """The metric network is trained only in fine-tuning; before it, retrieval uses cosine."""
    model = make_model()
    images, texts = embeds(model)
    model.set_training_stage("pretrain")
    torch.testing.assert_close(model.similarity(images, texts), images @ texts.T)
    model.set_training_stage("finetune")
    torch.testing.assert_close(
        model.similarity(images, texts), reference_scores(model, images, texts)
    )


def test_no_finetuning_loss_means_all_epochs_pretrain():
    model = make_model(triplet_weight=0, metric_weight=0)
    assert model.training_stages(8) == [("pretrain", 8), ("finetune", 0)]
    assert model.training_stage == "pretrain"
    with pytest.raises(ValueError, match="finetune stage has no loss"):
        model.set_training_stage("finetune")
    with pytest.raises(Exception, match="nothing to train"):
        make_model(pretrain_fraction=0, triplet_weight=0, metric_weight=0)


def test_pathway_layers_zero_is_a_linear_map():
    model = make_model(pathway_layers=0)
    linears = [m for m in model.image_pathway.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(IMAGE_DIM, 6)]
    deep = make_model(pathway_layers=2)
    assert sum(isinstance(m, torch.nn.Linear) for m in deep.text_pathway.modules()) == 3


def test_contrastive_loss_matches_its_equation():
    g = torch.Generator().manual_seed(3)
    d = torch.rand(4, 6, generator=g) * 2
    rel = torch.rand(4, 6, generator=g) > 0.6
    rel[0] = False  # an anchor without relevant pairs
    m = 0.8
    per_anchor = []
    for i in range(4):
        pos = [d[i, j] ** 2 for j in range(6) if rel[i, j]]
        neg = [max(0.0, m - d[i, j]) ** 2 for j in range(6) if not rel[i, j]]
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        per_anchor.append((mean(pos) + mean(neg)) / 2)
    expected = torch.tensor(per_anchor).mean()
    torch.testing.assert_close(contrastive_loss(d, rel, m), expected.float())


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_triplet_loss_matches_a_loop_over_triplets(mining):
    g = torch.Generator().manual_seed(4)
    d = torch.rand(5, 7, generator=g)
    pos = torch.rand(5, 7, generator=g) > 0.5
    neg = ~pos
    pos[1] = False  # no positive: adds 0
    m = 0.3
    per_anchor = []
    for a in range(5):
        triplets = [
            max(0.0, m + d[a, p] - d[a, n])
            for p in range(7)
            for n in range(7)
            if pos[a, p] and neg[a, n]
        ]
        if mining == "hard":
            P = [d[a, p] for p in range(7) if pos[a, p]]
            N = [d[a, n] for n in range(7) if neg[a, n]]
            per_anchor.append(max(0.0, m + max(P) - min(N)) if P and N else 0.0)
        else:
            per_anchor.append(sum(triplets) / len(triplets) if triplets else 0.0)
    expected = torch.tensor([float(x) for x in per_anchor]).mean()
    torch.testing.assert_close(triplet_loss(d, pos, neg, m, mining), expected)


def test_intra_media_triplets_never_use_the_anchor_as_its_own_positive():
    batch = {**make_batch(NUM_LABELS), "labels": torch.arange(NUM_LABELS)}  # one item per class
    cross, intra = make_model(), make_model(intra_media_triplets=True)
    intra.set_training_stage("finetune")
    cross.set_training_stage("finetune")
    # Every anchor's only positive within its medium would be itself: the intra terms add 0.
    torch.testing.assert_close(intra(**batch).loss_terms, cross(**batch).loss_terms)
    batch = make_batch()  # now same-class items exist: the intra terms count
    assert intra(**batch).loss_terms["triplet"] > cross(**batch).loss_terms["triplet"]


def test_multi_hot_labels():
    model = make_model()
    batch = make_batch()
    hot = torch.nn.functional.one_hot(batch["labels"], NUM_LABELS).float()
    torch.testing.assert_close(model(**batch).loss, model(**{**batch, "labels": hot}).loss)


@pytest.mark.parametrize("chunk_elements", [1 << 23, 50])
def test_similarity_grid_equals_scoring_each_pair(chunk_elements, monkeypatch):
    monkeypatch.setattr(modeling_uncsm, "_SCORE_ELEMENTS", chunk_elements)  # 50: one row a chunk
    model = make_model().eval()
    images, texts = embeds(model)
    expected = reference_scores(model, images, texts)
    torch.testing.assert_close(model.similarity(images, texts, "image"), expected)
    # Text queries: the gallery's images still go into the image slot.
    torch.testing.assert_close(model.similarity(texts, images, "text"), expected.T)
    assert not torch.allclose(model.similarity(texts, images, "image"), expected.T)


def test_rerank_with_the_whole_gallery_equals_full_scoring():
    model = make_model().eval()
    images, texts = embeds(model)
    full = model.similarity(images, texts, rerank_top_k=0)
    for k in (len(texts), len(texts) + 5):
        torch.testing.assert_close(model.similarity(images, texts, rerank_top_k=k), full)
    torch.testing.assert_close(
        model.similarity(texts, images, "text", rerank_top_k=len(images)), full.T
    )


def test_rerank_top_k_rescores_the_cosine_top_k_and_keeps_the_rest_below():
    model = make_model().eval()
    images, texts = embeds(model)
    k = 3
    full = model.similarity(texts, images, "text")
    got = model.similarity(texts, images, "text", rerank_top_k=k)
    cosine = texts @ images.T
    top = cosine.topk(k, dim=1).indices
    torch.testing.assert_close(got.gather(1, top), full.gather(1, top))
    rest = torch.ones_like(got, dtype=torch.bool).scatter(1, top, False)
    for row in range(len(texts)):
        assert got[row, rest[row]].max() < got[row, top[row]].min()
        order = got[row, rest[row]].argsort(descending=True)
        assert torch.equal(order, cosine[row, rest[row]].argsort(descending=True))
    model.config.rerank_top_k = k  # the config's setting is the default
    torch.testing.assert_close(model.similarity(texts, images, "text"), got)


def test_evaluation_and_index_score_both_directions_with_the_image_slot():
    model = make_model().eval()
    images, texts = embeds(model, n_images=12, n_texts=12)
    il, tl = torch.arange(12) % NUM_LABELS, (torch.arange(12) * 7) % NUM_LABELS
    s = reference_scores(model, images, texts)
    got = evaluate_retrieval(images, texts, il, tl, metric=model.similarity)
    assert got["map_i2t"] == pytest.approx(mean_average_precision(s, il, tl))
    assert got["map_t2i"] == pytest.approx(mean_average_precision(s.T, tl, il))
    caption = evaluate_caption_retrieval(images, texts, tl, metric=model.similarity, ks=(1,))
    hits = (s.T.argmax(1) == tl).float().mean().item()
    assert caption["r@1_t2i"] == pytest.approx(hits)

    index = RetrievalIndex(6, metric=model.similarity, query_modality="text")
    index.add(images)
    torch.testing.assert_close(index.scores(texts), s.T)
    scores, ids = index.search(texts[:2], k=4)
    torch.testing.assert_close(scores, s.T[:2].sort(dim=1, descending=True).values[:, :4])


def test_training_evaluation_scores_with_the_learned_metric():
    model = make_model().eval()
    images, texts = embeds(model, n_images=10, n_texts=10)
    labels = torch.arange(10) % NUM_LABELS
    s = reference_scores(model, images, texts)
    split = {"image_embeds": images, "text_embeds": texts, "labels": labels}
    got = score_embeddings(model, split)
    assert got["map_t2i"] == pytest.approx(mean_average_precision(s.T, labels, labels))
    curves = pr_curves(model, split)
    expected = precision_recall_curve(s.T, labels, labels)
    for key, value in expected.items():
        torch.testing.assert_close(torch.as_tensor(curves["text→image"][key]), value)


def test_clear_errors():
    model = make_model()
    images, texts = embeds(model)
    with pytest.raises(ValueError, match="query_modality"):
        model.similarity(images, texts, "audio")
    with pytest.raises(ValueError, match="rerank_top_k"):
        model.similarity(images, texts, rerank_top_k=-1)
    with pytest.raises(ValueError, match="gallery_embeds must have shape"):
        model.similarity(images, texts[:, :3])
    with pytest.raises(ValueError, match="stage must be one of"):
        model.set_training_stage("warmup")
    for bad, field in (
        ({"triplet_mining": "semi"}, "triplet_mining"),
        ({"pretrain_fraction": 1.0}, "pretrain_fraction"),
        ({"metric_hidden_dims": []}, "metric_hidden_dims"),
        ({"triplet_margin": 0}, "triplet_margin"),
        ({"pathway_layers": -1}, "pathway_layers"),
        ({"rerank_top_k": -2}, "rerank_top_k"),
    ):
        with pytest.raises(Exception, match=field):
            UNCSMConfig(**bad)
