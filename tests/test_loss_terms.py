"""Every loss term of every model, in every mode its config offers, against a by-hand computation.

Each check runs the model's `forward` on a small batch and recomputes each weighted term of
`loss_terms` from the batch's embeddings with plain Python loops over items, pairs and triplets,
written from the equations in the configs' docstrings. A swapped sign, index, direction or weight
in the wiring of a term makes its check fail.
"""

import math

import pytest
import torch

from hf_xmodal.models import (
    DAMLConfig,
    DAMLModel,
    DSCMRConfig,
    DSCMRModel,
    UNCSMConfig,
    UNCSMModel,
)

NUM_LABELS, IMAGE_DIM, TEXT_DIM, N = 3, 7, 5, 7
CLASS_IDS = torch.tensor([0, 1, 0, 2, 1, 0, 1])  # class 2 has one item: no positive within a medium
MULTI_HOT = torch.tensor(
    [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]]
).float()
LABELS = {"class_ids": CLASS_IDS, "multi_hot": MULTI_HOT}


def batch(labels: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "image_features": torch.randn(N, IMAGE_DIM, generator=g),
        "text_features": torch.randn(N, TEXT_DIM, generator=g),
        "labels": LABELS[labels],
    }


def label_sets(labels: torch.Tensor) -> list[set[int]]:
    if labels.ndim == 1:
        return [{int(c)} for c in labels]
    return [set(torch.nonzero(row).flatten().tolist()) for row in labels]


def relevant(labels: torch.Tensor) -> list[list[bool]]:
    sets = label_sets(labels)
    return [[bool(a & b) for b in sets] for a in sets]


def rows(x: torch.Tensor) -> list[list[float]]:
    return x.detach().double().tolist()


def norm(a: list[float]) -> float:
    return math.sqrt(sum(x * x for x in a))


def unit(a: list[float]) -> list[float]:
    n = norm(a)
    return [x / n for x in a]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def dist(a: list[float], b: list[float]) -> float:
    return norm([x - y for x, y in zip(a, b, strict=True)])


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def relu(x: float) -> float:
    return max(x, 0.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def bce_with_logit(z: float, target: float) -> float:
    return softplus(z) - target * z


def assert_term(out, name: str, expected: float) -> None:
    assert name in out.loss_terms, f"{name} missing from {sorted(out.loss_terms)}"
    assert out.loss_terms[name].item() == pytest.approx(expected, rel=1e-5, abs=1e-6), name


def assert_terms_sum_to_loss(out) -> None:
    torch.testing.assert_close(out.loss.detach(), sum(out.loss_terms.values()))


# --------------------------------------------------------------------------------------------------
# DSCMR-style model: J1 label space, J2 common space, J3 modality invariance


@pytest.mark.parametrize("labels", LABELS)
def test_dscmr_terms(labels):
    weights = {"label_space_weight": 0.7, "common_space_weight": 1.3}
    weights["modality_invariance_weight"] = 0.4
    config = DSCMRConfig(
        image_feature_dim=IMAGE_DIM,
        text_feature_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        hidden_dims=[8],
        embed_dim=6,
        **weights,
    )
    torch.manual_seed(0)
    model = DSCMRModel(config)
    b = batch(labels)
    out = model(**b)
    u, v = rows(out.image_embeds), rows(out.text_embeds)
    y = rows(
        torch.nn.functional.one_hot(b["labels"], NUM_LABELS)
        if labels == "class_ids"
        else b["labels"]
    )
    rel = relevant(b["labels"])
    w, bias = rows(model.label_classifier.weight), rows(model.label_classifier.bias[None])[0]

    def label_error(e: list[float], target: list[float]) -> float:
        logits = [dot(e, w[c]) + bias[c] for c in range(NUM_LABELS)]
        return norm([p - t for p, t in zip(logits, target, strict=True)])

    label_space = mean(label_error(u[i], y[i]) for i in range(N))
    label_space += mean(label_error(v[i], y[i]) for i in range(N))

    def likelihood(a, b_):  # mean over pairs of log(1 + e^θ) − S·θ, θ = cos / 2
        pairs = [(i, j) for i in range(N) for j in range(N)]
        theta = {(i, j): dot(unit(a[i]), unit(b_[j])) / 2 for i, j in pairs}
        return mean(softplus(theta[p]) - rel[p[0]][p[1]] * theta[p] for p in pairs)

    common_space = likelihood(u, u) + likelihood(u, v) + likelihood(v, v)
    invariance = mean(dist(u[i], v[i]) for i in range(N))

    assert_term(out, "label_space", 0.7 * label_space)
    assert_term(out, "common_space", 1.3 * common_space)
    assert_term(out, "modality_invariance", 0.4 * invariance)
    assert_terms_sum_to_loss(out)


# --------------------------------------------------------------------------------------------------
# DAML: metric learning (all / hard negatives), pair consistency, adversarial, label classification


def daml_metric(a, b, rel, margin: float, mining: str) -> float:
    """mean d² over same-class pairs + push [margin − d²]_+ of different-class pairs."""
    d2 = [[dist(unit(x), unit(z)) ** 2 for z in b] for x in a]
    pairs = [(i, j) for i in range(len(a)) for j in range(len(b))]
    pull = mean(d2[i][j] for i, j in pairs if rel[i][j])
    if mining == "all":
        push = mean(relu(margin - d2[i][j]) for i, j in pairs if not rel[i][j])
    else:  # each row's nearest different-class item
        push = mean(
            max((relu(margin - d2[i][j]) for j in range(len(b)) if not rel[i][j]), default=0.0)
            for i in range(len(a))
        )
    return pull + push


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("mining", ["all", "hard"])
def test_daml_terms(mining, labels):
    weights = {
        "metric_learning_weight": 0.9,
        "pair_consistency_weight": 0.3,
        "adversarial_weight": 0.6,
        "label_classification_weight": 0.8,
    }
    config = DAMLConfig(
        image_feature_dim=IMAGE_DIM,
        text_feature_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        image_hidden_dims=[8],
        text_hidden_dims=[8],
        embed_dim=6,
        modality_classifier_dims=[4],
        margin=1.5,
        negative_mining=mining,
        **weights,
    )
    torch.manual_seed(0)
    model = DAMLModel(config)
    model.set_training_progress(0.3)
    b = batch(labels)
    out = model(**b)
    u, v = rows(out.image_embeds), rows(out.text_embeds)
    rel = relevant(b["labels"])

    metric = (daml_metric(u, v, rel, 1.5, mining) + daml_metric(v, u, rel, 1.5, mining)) / 2
    metric += daml_metric(u, u, rel, 1.5, mining) + daml_metric(v, v, rel, 1.5, mining)
    pair = mean(dist(unit(u[i]), unit(v[i])) ** 2 for i in range(N))

    shared = torch.tensor([unit(x) for x in u + v], dtype=torch.float32)
    with torch.no_grad():
        modality_logits = rows(model.modality_classifier(shared).squeeze(1)[None])[0]
    targets = [0.0] * N + [1.0] * N  # 0 = image, 1 = text
    adversarial = 2 * mean(
        bce_with_logit(z, t) for z, t in zip(modality_logits, targets, strict=True)
    )

    sets = label_sets(b["labels"])
    w = rows(model.label_classifier.weight)
    bias = rows(model.label_classifier.bias[None])[0]

    def cross_entropy(e: list[float], classes: set[int]) -> float:
        logits = [dot(e, w[c]) + bias[c] for c in range(NUM_LABELS)]
        log_z = math.log(sum(math.exp(z) for z in logits))
        return -mean(logits[c] - log_z for c in classes)  # uniform over the item's labels

    label = mean(cross_entropy(u[i], sets[i]) for i in range(N))
    label += mean(cross_entropy(v[i], sets[i]) for i in range(N))

    assert_term(out, "metric_learning", 0.9 * metric)
    assert_term(out, "pair_consistency", 0.3 * pair)
    assert_term(out, "adversarial", 0.6 * adversarial)
    assert_term(out, "label_classification", 0.8 * label)
    assert_terms_sum_to_loss(out)


# --------------------------------------------------------------------------------------------------
# UNCSM: contrastive pre-training; triplet (all / hard, with or without intra-media) and metric
# network fine-tuning


def uncsm_model(**kwargs) -> UNCSMModel:
    config = UNCSMConfig(
        image_feature_dim=IMAGE_DIM,
        text_feature_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        hidden_dim=8,
        embed_dim=6,
        metric_hidden_dims=[5],
        dropout=0.0,
        **kwargs,
    )
    torch.manual_seed(0)
    return UNCSMModel(config)


@pytest.mark.parametrize("labels", LABELS)
def test_uncsm_contrastive_term(labels):
    model = uncsm_model(contrastive_margin=0.9)
    model.set_training_stage("pretrain")
    b = batch(labels)
    out = model(**b)
    u, v = rows(out.image_embeds), rows(out.text_embeds)
    rel = relevant(b["labels"])

    def anchored(a, others):  # per anchor: ½ mean_{relevant} d² + ½ mean_{others} [m − d]_+²
        per_anchor = []
        for i in range(N):
            d = [dist(a[i], o) for o in others]
            pos = mean(d[j] ** 2 for j in range(N) if rel[i][j])
            neg = mean(relu(0.9 - d[j]) ** 2 for j in range(N) if not rel[i][j])
            per_anchor.append((pos + neg) / 2)
        return mean(per_anchor)

    assert set(out.loss_terms) == {"contrastive"}
    assert_term(out, "contrastive", anchored(u, v) + anchored(v, u))
    assert_terms_sum_to_loss(out)


def uncsm_triplets(a, others, positive, negative, margin: float, mining: str) -> float:
    """Per anchor: mean over (p, n) of [m + d(a, p) − d(a, n)]_+ ("all"), or the farthest
    positive against the nearest negative ("hard"); 0 without a positive or a negative."""
    per_anchor = []
    for i in range(len(a)):
        d = [dist(a[i], o) for o in others]
        pos = [d[j] for j in range(len(others)) if positive[i][j]]
        neg = [d[j] for j in range(len(others)) if negative[i][j]]
        if not pos or not neg:
            per_anchor.append(0.0)
        elif mining == "hard":
            per_anchor.append(relu(margin + max(pos) - min(neg)))
        else:
            per_anchor.append(mean(relu(margin + p - n) for p in pos for n in neg))
    return mean(per_anchor)


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("intra", [False, True])
@pytest.mark.parametrize("mining", ["all", "hard"])
def test_uncsm_finetuning_terms(mining, intra, labels):
    model = uncsm_model(
        triplet_weight=0.7,
        triplet_margin=0.4,
        triplet_mining=mining,
        intra_media_triplets=intra,
        metric_weight=1.6,
    )
    model.set_training_stage("finetune")
    b = batch(labels)
    out = model(**b)
    u, v = rows(out.image_embeds), rows(out.text_embeds)
    rel = relevant(b["labels"])
    irrelevant = [[not r for r in row] for row in rel]

    triplet = uncsm_triplets(u, v, rel, irrelevant, 0.4, mining)
    triplet += uncsm_triplets(v, u, rel, irrelevant, 0.4, mining)
    if intra:  # the anchor itself is never its own positive
        own = [[rel[i][j] and i != j for j in range(N)] for i in range(N)]
        triplet += uncsm_triplets(u, u, own, irrelevant, 0.4, mining)
        triplet += uncsm_triplets(v, v, own, irrelevant, 0.4, mining)

    # Metric network s(u_i, v_j) per pair, BCE against relevance, balanced per image anchor.
    with torch.no_grad():
        logits = [
            [model.metric_network(out.image_embeds[i], out.text_embeds[j]).item() for j in range(N)]
            for i in range(N)
        ]
    per_image = []
    for i in range(N):
        pos = mean(bce_with_logit(logits[i][j], 1.0) for j in range(N) if rel[i][j])
        neg = mean(bce_with_logit(logits[i][j], 0.0) for j in range(N) if not rel[i][j])
        per_image.append((pos + neg) / 2)

    assert set(out.loss_terms) == {"triplet", "metric"}
    assert_term(out, "triplet", 0.7 * triplet)
    assert_term(out, "metric", 1.6 * mean(per_image))
    assert_terms_sum_to_loss(out)
