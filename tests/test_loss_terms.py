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
    CMSLConfig,
    CMSLModel,
    DAMLConfig,
    DAMLModel,
    DCKTConfig,
    DCKTModel,
    DSCMRConfig,
    DSCMRModel,
    MHTNConfig,
    MHTNModel,
    UNCSMConfig,
    UNCSMModel,
)

NUM_LABELS, IMAGE_DIM, TEXT_DIM, N = 3, 7, 5, 7
CLASS_IDS = torch.tensor([0, 1, 0, 2, 1, 0, 1])  # class 2 has one item: no positive within a medium
MULTI_HOT = torch.tensor(
    [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]]
).float()
LABELS = {"class_ids": CLASS_IDS, "multi_hot": MULTI_HOT}
SIZES = {"image_feature_dim": IMAGE_DIM, "text_feature_dim": TEXT_DIM, "num_labels": NUM_LABELS}
# A labelled source domain of its own sizes and classes, for the transfer models.
SOURCE_NUM_LABELS, SOURCE_IMAGE_DIM, SOURCE_TEXT_DIM = 4, 6, 3
SOURCE_LABELS = {
    "class_ids": torch.tensor([3, 0, 1, 1, 2, 0, 3]),
    "multi_hot": torch.tensor(
        [
            [0, 0, 0, 1],
            [1, 0, 1, 0],
            [0, 1, 0, 0],
            [0, 1, 1, 1],
            [0, 0, 1, 0],
            [1, 0, 0, 0],
            [1, 1, 0, 1],
        ]
    ).float(),
}
MMD = {"mmd_kernels": 3, "mmd_kernel_mul": 2.5}


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


def half_squared(a: list[float], b: list[float]) -> float:
    return 0.5 * dist(a, b) ** 2


def mmd_by_hand(x: list[list[float]], y: list[list[float]], kernels: int, mul: float) -> float:
    """MMD² = mean k(x, x') + mean k(y, y') − 2 mean k(x, y), k = Σ_s exp(−d² / σ_s), σ_s the mean
    squared distance of the pooled rows (over distinct pairs) times mul^(s − kernels // 2)."""
    z, m = x + y, len(x)
    d2 = [[dist(a, b) ** 2 for b in z] for a in z]
    base = sum(map(sum, d2)) / (len(z) * (len(z) - 1)) / mul ** (kernels // 2)

    def k(i: int, j: int) -> float:
        return sum(math.exp(-d2[i][j] / (base * mul**s)) for s in range(kernels))

    xs, ys = range(m), range(m, len(z))
    return (
        mean(k(i, j) for i in xs for j in xs)
        + mean(k(i, j) for i in ys for j in ys)
        - 2 * mean(k(i, j) for i in xs for j in ys)
    )


def cross_entropy(logits: list[float], classes: set[int]) -> float:
    """Softmax cross-entropy against the uniform distribution over an item's labels."""
    log_z = math.log(sum(math.exp(z) for z in logits))
    return -mean(logits[c] - log_z for c in classes)


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

    def label_error(e: list[float], classes: set[int]) -> float:
        return cross_entropy([dot(e, w[c]) + bias[c] for c in range(NUM_LABELS)], classes)

    label = mean(label_error(u[i], sets[i]) for i in range(N))
    label += mean(label_error(v[i], sets[i]) for i in range(N))

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


# --------------------------------------------------------------------------------------------------
# DCKT: semantic terms in the target and the source, pair consistency, media- and correlation-level
# MMD, in each stage, on the target pairs a progressive-transfer round selected

DCKT_WEIGHTS = {
    "semantic": 0.7,
    "source_semantic": 0.3,
    "media_mmd": 0.9,
    "correlation_mmd": 1.1,
    "pair_consistency": 0.05,
}


def transfer_batch(labels: str) -> dict[str, torch.Tensor]:
    """`batch(labels)` with a source batch of the source's sizes and classes."""
    g = torch.Generator().manual_seed(6)
    return {
        **batch(labels),
        "source_image_features": torch.randn(N, SOURCE_IMAGE_DIM, generator=g) + 1,
        "source_text_features": torch.randn(N, SOURCE_TEXT_DIM, generator=g) + 1,
        "source_labels": SOURCE_LABELS[labels],
    }


def layer_rows(acts: dict[str, torch.Tensor]) -> dict[str, list[list[float]]]:
    return {layer: rows(value) for layer, value in acts.items()}


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize(
    "stage, progressive",
    [("source_pretrain", True), ("target_pretrain", True), ("transfer", True), ("transfer", False)],
)
def test_dckt_terms(stage, progressive, labels):
    config = DCKTConfig(
        **SIZES,
        hidden_dim=8,
        fc8_dim=6,
        fc9_dim=5,
        dropout=0.0,
        source_image_feature_dim=SOURCE_IMAGE_DIM,
        source_text_feature_dim=SOURCE_TEXT_DIM,
        source_num_labels=SOURCE_NUM_LABELS,
        consistency_network="target",
        progressive_transfer=progressive,
        **MMD,
        **{f"{name}_weight": w for name, w in DCKT_WEIGHTS.items()},
    )
    torch.manual_seed(0)
    model = DCKTModel(config)
    model.set_training_stage(stage)
    # The round selected training pairs 0, 2, 3 and 6 of 7; the batch holds them in another order.
    model.selection.update(torch.tensor([1.0, 0, 1, 1, 0, 0, 1]), torch.zeros(N))
    b = {**transfer_batch(labels), "index": torch.tensor([3, 0, 6, 1, 5, 2, 4])}
    out = model(**b)

    media = ("image", "text")
    t = {m: layer_rows(model.target(b[f"{m}_features"], m)) for m in media}
    s = {m: layer_rows(model.source(b[f"source_{m}_features"], m)) for m in media}
    every = [True] * N
    # Pre-training trains on every target pair, progressive transfer rounds on the selected ones.
    if stage == "transfer" and progressive:
        chosen = [i in (0, 2, 3, 6) for i in b["index"].tolist()]
    else:
        chosen = every

    def semantic(acts, sets, keep) -> float:  # per pair: CE(fc10 image) + CE(fc10 text)
        return mean(
            cross_entropy(acts["image"]["fc10"][i], sets[i])
            + cross_entropy(acts["text"]["fc10"][i], sets[i])
            for i in range(N)
            if keep[i]
        )

    def pair(acts, keep) -> float:  # per pair: ½‖image − text‖² at fc6 + at fc7
        return mean(
            sum(half_squared(acts["image"][k][i], acts["text"][k][i]) for k in ("fc6", "fc7"))
            for i in range(N)
            if keep[i]
        )

    def kept(acts, medium, layer, keep):
        return [row for row, k in zip(acts[medium][layer], keep, strict=True) if k]

    def discrepancy(x, y) -> float:
        return mmd_by_hand(x, y, MMD["mmd_kernels"], MMD["mmd_kernel_mul"])

    w = DCKT_WEIGHTS
    expected = {}
    if stage != "source_pretrain":  # the target's own terms
        expected["semantic"] = w["semantic"] * semantic(t, label_sets(b["labels"]), chosen)
        expected["pair_consistency"] = w["pair_consistency"] * pair(t, chosen)
    if stage != "target_pretrain":  # the source's own terms
        source_sets = label_sets(b["source_labels"])
        expected["source_semantic"] = w["source_semantic"] * semantic(s, source_sets, every)
        source_pair = w["pair_consistency"] * pair(s, every)
        expected["pair_consistency"] = expected.get("pair_consistency", 0.0) + source_pair
    if stage == "transfer":  # source against the selected target rows
        expected["media_mmd"] = w["media_mmd"] * sum(
            discrepancy(kept(s, m, k, every), kept(t, m, k, chosen))
            for m in media
            for k in ("fc6", "fc7")
        )

        def both(acts, layer, keep):  # images and texts together
            return kept(acts, "image", layer, keep) + kept(acts, "text", layer, keep)

        expected["correlation_mmd"] = w["correlation_mmd"] * (
            discrepancy(both(s, "fc8", every), both(t, "fc8", chosen))
            + 2 * discrepancy(both(s, "fc9", every), both(t, "fc9", chosen))
        )

    assert set(out.loss_terms) == set(expected)
    for name, value in expected.items():
        assert_term(out, name, value)
    assert_terms_sum_to_loss(out)


# --------------------------------------------------------------------------------------------------
# MHTN: source classifier and single-modal MMD, the star of cross-modal pair distances, the shared
# semantic classifier and the modality discriminator, with two or three target modalities


MHTN_WEIGHTS = {
    "source_semantic": 0.6,
    "single_modal_mmd": 0.8,
    "cross_modal": 0.05,
    "semantic": 0.7,
    "adversarial": 0.4,
}
TAGS_DIM = 4


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("modalities", [("image", "text"), ("image", "text", "tags")])
def test_mhtn_terms(modalities, labels):
    config = MHTNConfig(
        **SIZES,
        extra_modalities={"tags": TAGS_DIM} if "tags" in modalities else None,
        hidden_dim=8,
        fc8_dim=6,
        fc9_dim=5,
        dropout=0.0,
        source_num_labels=SOURCE_NUM_LABELS,
        discriminator_bottleneck=4,
        discriminator_hidden_dims=[5],
        **MMD,
        **{f"{name}_weight": w for name, w in MHTN_WEIGHTS.items()},
    )
    torch.manual_seed(0)
    model = MHTNModel(config)
    model.set_training_progress(0.3)
    g = torch.Generator().manual_seed(6)
    b = {
        **batch(labels),
        "source_image_features": torch.randn(N, IMAGE_DIM, generator=g) + 1,
        "source_labels": SOURCE_LABELS[labels],
    }
    if "tags" in modalities:
        b["tags_features"] = torch.randn(N, TAGS_DIM, generator=g)
    out = model(**b)

    acts = {m: model.target(b[f"{m}_features"], m) for m in modalities}
    t = {m: layer_rows(a) for m, a in acts.items()}
    sets = label_sets(b["labels"])
    semantic = sum(mean(cross_entropy(t[m]["fc10"][i], sets[i]) for i in range(N)) for m in t)
    star = sum(  # the image to every other modality, ½‖·‖² at fc6 and fc7
        mean(
            sum(half_squared(t["image"][k][i], t[m][k][i]) for k in ("fc6", "fc7"))
            for i in range(N)
        )
        for m in modalities[1:]
    )
    with torch.no_grad():  # the discriminator's logits for each modality's fc9 (forward: no λ)
        logits = {
            m: rows(model.discriminator(model.discriminator_bottleneck(a["fc9"])))
            for m, a in acts.items()
        }
    adversarial = mean(  # each modality's rows must be told apart as that modality
        cross_entropy(logits[m][i], {position})
        for position, m in enumerate(modalities)
        for i in range(N)
    )
    fc6, fc7 = model.source_branch
    s6 = fc6(b["source_image_features"])
    s7 = fc7(s6)
    weight, bias = rows(model.source_classifier.weight), rows(model.source_classifier.bias[None])[0]
    source_sets = label_sets(b["source_labels"])
    source_semantic = mean(
        cross_entropy([dot(e, weight[c]) + bias[c] for c in range(SOURCE_NUM_LABELS)], classes)
        for e, classes in zip(rows(s7), source_sets, strict=True)
    )
    kernels, mul = MMD["mmd_kernels"], MMD["mmd_kernel_mul"]
    single_modal = mmd_by_hand(rows(s6), t["image"]["fc6"], kernels, mul)
    single_modal += mmd_by_hand(rows(s7), t["image"]["fc7"], kernels, mul)

    w = MHTN_WEIGHTS
    assert set(out.loss_terms) == set(w)
    assert_term(out, "semantic", w["semantic"] * semantic)
    assert_term(out, "cross_modal", w["cross_modal"] * star)
    assert_term(out, "adversarial", w["adversarial"] * adversarial)
    assert_term(out, "source_semantic", w["source_semantic"] * source_semantic)
    assert_term(out, "single_modal_mmd", w["single_modal_mmd"] * single_modal)
    assert_terms_sum_to_loss(out)


# --------------------------------------------------------------------------------------------------
# CMSL: correlation of the codes (relaxed or straight-through), local saliency, quantization


CMSL_WEIGHTS = {"correlation": 0.9, "local_saliency": 0.6, "quantization": 0.3}
WORDS = torch.tensor([[3, 5, 0, 0], [7, 0, 0, 0], [2, 9, 4, 0], [11, 6, 0, 0]] * 2)[:N]


def cmsl_model(**kwargs) -> CMSLModel:
    config = CMSLConfig(
        **SIZES,
        code_bits=16,
        hidden_dim=8,
        embed_dim=6,
        region_channels=3,
        region_size=3,
        coarse_grid=2,
        word_vocab_size=12,
        graph_dim=4,
        graph_word_embeddings=False,
        expansion_words=0,
        attention_temperature=4.0,
        local_logit_scale=3.0,
        correlation_threshold=0.2,
        **{**{f"{name}_weight": w for name, w in CMSL_WEIGHTS.items()}, **kwargs},
    )
    torch.manual_seed(0)
    return CMSLModel(config)


def cmsl_batch(labels: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    return {
        **batch(labels),
        "region_features": torch.randn(N, 9, 3, generator=g),
        "word_ids": WORDS,
    }


def rows_3d(x: torch.Tensor) -> list[list[list[float]]]:
    return x.detach().double().tolist()


def sign(x: float) -> float:
    return 1.0 if x >= 0 else -1.0


def pairwise_nll(theta: list[list[float]], rel: list[list[bool]], balanced=False) -> float:
    """mean over pairs of w·(log(1 + e^θ) − S·θ), w = 1, or (balanced) n / (2·n_S) for the
    n_S similar pairs of n and n / (2·(n − n_S)) for the others."""
    n, n_similar = len(rel) * len(rel[0]), sum(map(sum, rel))
    weight = {True: 1.0, False: 1.0}
    if balanced:
        weight = {True: n / (2 * n_similar), False: n / (2 * (n - n_similar))}
    return mean(
        weight[rel[i][j]] * (softplus(theta[i][j]) - rel[i][j] * theta[i][j])
        for i in range(len(theta))
        for j in range(len(theta[0]))
    )


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("binarization", ["relaxed", "straight_through"])
def test_cmsl_terms(binarization, labels, balanced):
    model = cmsl_model(binarization=binarization, balanced_pairs=balanced)
    b = cmsl_batch(labels)
    out = model(**b)
    rel = relevant(b["labels"])

    # The codes' continuous values h = tanh(W f) and the regions and words, from the model's parts.
    image = model._image(b["image_features"], b["region_features"], None)
    text = model._text(b["text_features"], b["word_ids"], None, None)
    h_u, h_v = rows(model._image_code(*image)), rows(model._text_code(*text))
    assert rows(out.image_embeds) == [[sign(x) for x in row] for row in h_u]
    if binarization == "straight_through":  # the correlation sees sign(h)
        c_u, c_v = ([[sign(x) for x in row] for row in h] for h in (h_u, h_v))
    else:
        c_u, c_v = h_u, h_v

    def theta(a, b_):  # ½(⟨c_a, c_b⟩ − β·bits), β = 0.2, 16 bits
        return [[(dot(x, y) - 0.2 * 16) / 2 for y in b_] for x in a]

    correlation = sum(
        pairwise_nll(theta(x, y), rel, balanced) for x, y in ((c_u, c_v), (c_u, c_u), (c_v, c_v))
    )
    quantization = sum(mean((sign(x) - x) ** 2 for row in h for x in row) for h in (h_u, h_v))

    # Local saliency of text t and image i: per word, the softmax(λ·cos)-weighted cosine with the
    # image's regions; mean over the text's words, then over the scales; θ = κ·s.
    scales = [rows_3d(r) for r in image[1]]
    _, words, mask = text
    words, mask = rows_3d(words), mask.tolist()

    def saliency(t: int, i: int) -> float:
        per_scale = []
        for regions in scales:
            per_word = []
            for w, used in zip(words[t], mask[t], strict=True):
                if used:
                    cos = [dot(unit(w), unit(r)) for r in regions[i]]
                    z = sum(math.exp(4.0 * c) for c in cos)
                    per_word.append(sum(math.exp(4.0 * c) / z * c for c in cos))
            per_scale.append(mean(per_word))
        return mean(per_scale)

    local = pairwise_nll([[3.0 * saliency(t, i) for i in range(N)] for t in range(N)], rel)

    w = CMSL_WEIGHTS
    assert set(out.loss_terms) == set(w)
    assert_term(out, "correlation", w["correlation"] * correlation)
    assert_term(out, "local_saliency", w["local_saliency"] * local)
    assert_term(out, "quantization", w["quantization"] * quantization)
    assert_terms_sum_to_loss(out)


def test_cmsl_straight_through_passes_the_codes_gradient_to_h():
    """Straight-through: the hash layers get ∂L/∂b at b = sign(h), passed unchanged to h."""
    model = cmsl_model(  # the correlation term alone
        binarization="straight_through",
        local_saliency_weight=0.0,
        quantization_weight=0.0,
        balanced_pairs=False,
    )
    b = batch("multi_hot")
    model(**b).loss.backward()

    h_u = model._image_code(*model._image(b["image_features"], None, None))
    h_v = model._text_code(*model._text(b["text_features"], None, None, None))
    codes = [torch.where(h >= 0, 1.0, -1.0).requires_grad_() for h in (h_u, h_v)]
    sim = torch.tensor(relevant(b["labels"]), dtype=torch.float32)

    def nll(a, b_):
        theta = (a @ b_.T - 0.2 * 16) / 2
        return (torch.nn.functional.softplus(theta) - sim * theta).mean()

    (u, v) = codes
    loss = CMSL_WEIGHTS["correlation"] * (nll(u, v) + nll(u, u) + nll(v, v))
    grads = torch.autograd.grad(loss, codes)
    hash_weights = [model.image_hash.weight, model.text_hash.weight]
    expected = torch.autograd.grad([h_u, h_v], hash_weights, grads)
    for got, want in zip(hash_weights, expected, strict=True):
        torch.testing.assert_close(got.grad, want)
