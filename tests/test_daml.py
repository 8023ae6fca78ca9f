"""DAML-specific invariants: gradient reversal and its schedule, the metric loss, the switches."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_xmodal.models import DAMLConfig, DAMLModel
from hf_xmodal.models.layers import reversal_schedule, reverse_gradient
from hf_xmodal.models.losses import metric_loss, unit_distance

NUM_LABELS = 3
TERM_WEIGHTS = {
    "metric_learning": "metric_learning_weight",
    "pair_consistency": "pair_consistency_weight",
    "adversarial": "adversarial_weight",
    "label_classification": "label_classification_weight",
}


def squared_distances(a, b):
    return unit_distance(F.normalize(a, dim=1), F.normalize(b, dim=1), squared=True)


def make_model(**kwargs):
    kwargs = {
        "image_hidden_dims": [8],
        "text_hidden_dims": [8],
        "embed_dim": 6,
        "modality_classifier_dims": [4],
        "label_classification_weight": 1.0,
        **kwargs,
    }
    config = DAMLConfig(image_feature_dim=5, text_feature_dim=4, num_labels=NUM_LABELS, **kwargs)
    torch.manual_seed(0)
    return DAMLModel(config)


def make_batch(n=8):
    g = torch.Generator().manual_seed(3)
    return {
        "image_features": torch.randn(n, 5, generator=g),
        "text_features": torch.randn(n, 4, generator=g),
        "labels": torch.arange(n) % NUM_LABELS,
    }


def test_reverse_gradient_is_identity_forward_and_flips_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = reverse_gradient(x, 0.7)
    torch.testing.assert_close(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w)


def test_reversal_schedule_values():
    assert reversal_schedule(0.0) == 0.0
    assert reversal_schedule(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert reversal_schedule(1.0) == pytest.approx(0.9999092, abs=1e-7)
    values = [reversal_schedule(p / 10) for p in range(11)]
    assert values == sorted(values)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="progress"):
            reversal_schedule(bad)


def gradients(model, batch):
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_maps_get_the_reversed_adversarial_gradient_scaled_by_the_schedule():
    model, batch = make_model(), make_batch()
    model.set_training_progress(0.0)  # λ = 0: the maps get no adversarial gradient
    start = gradients(model, batch)
    model.set_training_progress(0.3)
    later = gradients(model, batch)

    # The classifier's loss by hand, without reversal.
    u = model.get_image_features(batch["image_features"])
    v = model.get_text_features(batch["text_features"])
    logits = model.modality_classifier(torch.cat([F.normalize(u), F.normalize(v)])).squeeze(1)
    modality = torch.cat([torch.zeros(len(u)), torch.ones(len(v))])
    model.zero_grad()
    (
        2 * model.config.adversarial_weight * F.binary_cross_entropy_with_logits(logits, modality)
    ).backward()

    lam = reversal_schedule(0.3)
    for name, param in model.named_parameters():
        if name.startswith("modality_classifier"):  # the classifier itself descends its loss
            torch.testing.assert_close(later[name], param.grad)
            torch.testing.assert_close(start[name], param.grad)
        elif name.startswith(("image_map", "text_map")):
            torch.testing.assert_close(later[name] - start[name], -lam * param.grad)
    assert any(p.grad.abs().sum() > 0 for p in model.image_map.parameters())


def test_set_training_progress_rejects_values_outside_0_1():
    with pytest.raises(ValueError, match="progress"):
        make_model().set_training_progress(1.2)


@pytest.mark.parametrize("term", list(TERM_WEIGHTS))
def test_each_weight_at_zero_removes_its_term(term):
    batch = make_batch()
    full = make_model()(**batch)
    assert set(full.loss_terms) == set(TERM_WEIGHTS)
    model = make_model(**{TERM_WEIGHTS[term]: 0})
    out = model(**batch)
    assert set(out.loss_terms) == set(TERM_WEIGHTS) - {term}
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))
    # The other terms are unchanged (same initial weights: modules are built in the same order).
    for name, value in out.loss_terms.items():
        if term not in ("adversarial", "label_classification"):
            torch.testing.assert_close(value, full.loss_terms[name])
    if term == "adversarial":
        assert model.modality_classifier is None
    if term == "label_classification":
        assert model.label_classifier is None and out.image_logits is None


def test_nonlinear_maps_off_gives_one_linear_layer_per_modality():
    model = make_model(nonlinear_maps=False)
    for layers in (model.image_map, model.text_map):
        linear = [m for m in layers.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linear) == 1 and not any(isinstance(m, torch.nn.ReLU) for m in layers.modules())
    assert torch.isfinite(model(**make_batch()).loss)


def test_metric_loss_is_zero_exactly_when_classes_are_separated_beyond_the_margin():
    labels = torch.tensor([0, 1, 2, 0, 1])
    y = F.one_hot(labels, 3).float()
    sim = (y @ y.T > 0).float()
    fraction = sim.mean()
    d2 = squared_distances(y, y)  # one orthogonal direction per class: d² = 0 or 2
    assert metric_loss(d2, sim, fraction, margin=2.0) == 0
    assert metric_loss(d2, sim, fraction, margin=3.0) == pytest.approx(1.0)  # mean [3 − 2]_+
    moved = squared_distances(y + 0.3 * torch.randn(5, 3), y)
    assert metric_loss(moved, sim, fraction, margin=2.0) > 0


def test_hard_mining_pushes_each_rows_nearest_different_class_item():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    labels = [0, 0, 1, 2, 1, 3]
    y = F.one_hot(torch.tensor(labels), 4).float()
    sim = (y @ y.T > 0).float()
    d2 = squared_distances(a, b)
    margin = 3.0
    pushes = [
        max(max(margin - d2[i, j].item(), 0) for j in range(6) if labels[j] != labels[i])
        for i in range(6)
    ]
    pull = (sim * d2).sum() / sim.sum()
    expected = pull + sum(pushes) / 6
    torch.testing.assert_close(metric_loss(d2, sim, sim.mean(), margin, "hard"), expected)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_metric_loss_of_row_shards_averages_to_the_whole_batch_value(mining):
    """What N processes compute on their rows × the gathered batch averages to one process's."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    y = F.one_hot(torch.tensor([0, 0, 0, 1, 1, 2, 0, 1]), 3).float()
    sim = (y @ y.T > 0).float()
    fraction = sim.mean()
    whole = metric_loss(squared_distances(a, b), sim, fraction, 1.0, mining)
    shards = [
        metric_loss(squared_distances(a[rows], b), sim[rows], fraction, 1.0, mining)
        for rows in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close(sum(shards) / 2, whole)


def test_multi_hot_labels_train():
    batch = make_batch()
    multi_hot = F.one_hot(batch["labels"], NUM_LABELS).float()
    multi_hot[0, 1] = 1
    out = make_model()(**{**batch, "labels": multi_hot})
    assert torch.isfinite(out.loss) and set(out.loss_terms) == set(TERM_WEIGHTS)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"margin": 0}, "margin"),
        ({"margin": 4.5}, "margin"),
        ({"negative_mining": "semi"}, "negative_mining"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"text_hidden_dims": []}, "text_hidden_dims"),
        ({"modality_classifier_dims": [0]}, "modality_classifier_dims"),
        ({"adversarial_weight": -1}, "adversarial_weight"),
        ({"dropout": 1.0}, "dropout"),
        ({"retrieval_metric": "hamming"}, "retrieval_metric"),
        (
            {"metric_learning_weight": 0, "pair_consistency_weight": 0},
            "label_classification_weight",
        ),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    kwargs = {"label_classification_weight": 0, **kwargs}
    with pytest.raises(Exception, match=field) as error:  # the strict dataclass wraps it
        DAMLConfig(**kwargs)
    assert isinstance(error.value.__cause__ or error.value, ValueError)


@pytest.mark.parametrize("mining", ["all", "hard"])
def test_one_class_batch_is_pulled_together(mining):
    """With every pair of the same class nothing is pushed: the metric term is the pull alone,
    the mean squared distance between unit embeddings, and training on it shrinks it."""
    model = make_model(
        negative_mining=mining,
        pair_consistency_weight=0,
        adversarial_weight=0,
        label_classification_weight=0,
    )
    batch = {**make_batch(), "labels": torch.zeros(8, dtype=torch.long)}
    out = model(**batch)
    u, v = F.normalize(out.image_embeds, dim=1), F.normalize(out.text_embeds, dim=1)
    every = torch.cat([u, v])
    d2 = torch.cdist(every, every).square()
    cross, intra = d2[:8, 8:].mean(), d2[:8, :8].mean() + d2[8:, 8:].mean()
    torch.testing.assert_close(out.loss_terms["metric_learning"], (cross + intra).detach())
    assert out.loss > 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    assert model(**batch).loss < out.loss / 2
