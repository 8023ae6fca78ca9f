"""CMSL-specific invariants: the semantic graph, DeepWalk, expansion, each loss term by hand,
the codes and their packing, the switches and clear errors."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_xmodal.evaluation import evaluate_retrieval
from hf_xmodal.models import CMSLConfig, CMSLModel
from hf_xmodal.models.modeling_cmsl import (
    attention_pool,
    balance_weights,
    binarize,
    local_similarity,
    pack_codes,
    pairwise_likelihood,
)
from hf_xmodal.models.semantic_graph import (
    build_semantic_graph,
    deepwalk,
    expansion_words,
    random_walks,
    skipgram_pairs,
    word_vocabulary,
)

NUM_LABELS, VOCAB = 3, 40
TINY = {
    "image_feature_dim": 5,
    "text_feature_dim": 4,
    "num_labels": NUM_LABELS,
    "code_bits": 16,
    "hidden_dim": 8,
    "embed_dim": 6,
    "region_channels": 3,
    "region_size": 4,
    "coarse_grid": 2,
    "word_vocab_size": VOCAB,
    "graph_dim": 8,
    "min_word_count": 1,
    "max_word_frequency": 1.0,
    "expansion_words": 2,
}


def make_model(**kwargs):
    torch.manual_seed(0)
    return CMSLModel(CMSLConfig(**{**TINY, **kwargs}))


def make_batch(n=6):
    g = torch.Generator().manual_seed(3)
    words = torch.randint(1, VOCAB, (n, 5), generator=g)
    words[:, 3:] = 0
    return {
        "image_features": torch.randn(n, 5, generator=g),
        "text_features": torch.randn(n, 4, generator=g),
        "region_features": torch.randn(n, 16, 3, generator=g),
        "word_ids": words,
        "labels": torch.arange(n) % NUM_LABELS,
    }


# --------------------------------------------------------------------------------------------------
# Semantic graph and DeepWalk


def edge_set(graph):
    src = torch.repeat_interleave(torch.arange(graph.num_nodes), graph.rowptr.diff())
    return {(int(a), int(b)) for a, b in zip(src, graph.col, strict=True)}


def test_graph_links_images_to_their_words_and_words_within_a_text():
    # Texts 0 and 1 belong to image 0, text 2 to image 1; word 9 is padding-free filler.
    word_ids = torch.tensor([[5, 7, 0], [8, 0, 0], [7, 9, 0]])
    vocabulary = torch.tensor([5, 7, 8, 9])  # nodes 0..3; images are nodes 4, 5
    graph = build_semantic_graph(word_ids, torch.tensor([0, 0, 1]), vocabulary)
    expected = {(4, 0), (4, 1), (4, 2), (5, 1), (5, 3), (0, 1), (1, 3)}
    assert edge_set(graph) == expected | {(b, a) for a, b in expected}
    assert graph.num_nodes == 6 and graph.num_edges == len(expected)


def test_vocabulary_leaves_out_rare_and_stop_words():
    word_ids = torch.tensor([[1, 2, 3], [1, 2, 0], [1, 4, 0], [1, 4, 4]])
    # word 1 is in every text (a stop word at max 0.75), 3 in one text only (rare at min 2)
    assert word_vocabulary(word_ids, 0, 2, 0.75).tolist() == [2, 4]
    assert word_vocabulary(word_ids, 0, 1, 1.0).tolist() == [1, 2, 3, 4]


def test_random_walks_follow_edges():
    word_ids = torch.tensor([[1, 2, 0], [2, 3, 0], [4, 0, 0]])
    graph = build_semantic_graph(word_ids, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3, 4]))
    walks = random_walks(graph, 3, 6, torch.Generator().manual_seed(0))
    assert walks.shape == (graph.num_nodes * 3, 6)
    assert walks[:, 0].tolist() == list(range(graph.num_nodes)) * 3
    edges = edge_set(graph)
    for a, b in zip(walks[:, :-1].flatten().tolist(), walks[:, 1:].flatten().tolist(), strict=True):
        assert (a, b) in edges


def test_skipgram_pairs_within_the_window():
    walks = torch.tensor([[0, 1, 2, 3]])
    pairs = {tuple(p) for p in skipgram_pairs(walks, 2).tolist()}
    expected = {(a, b) for a, b in itertools.permutations(range(4), 2) if abs(a - b) <= 2}
    assert pairs == expected and len(skipgram_pairs(walks, 2)) == len(expected)


def test_deepwalk_puts_communities_together():
    # Two groups of words, each only ever in texts with its own group and its own images.
    g = torch.Generator().manual_seed(0)
    texts = [torch.randperm(6, generator=g)[:3] + 1 + 6 * (t % 2) for t in range(40)]
    word_ids = torch.stack(texts)
    graph = build_semantic_graph(word_ids, torch.arange(40) // 4, torch.arange(1, 13))
    nodes = deepwalk(graph, dim=16, walks_per_node=20, window=2, batch_size=256, seed=0)
    words = F.normalize(nodes[:12] - nodes[:12].mean(0), dim=1)  # as the model centres them
    cos = words @ words.T - 2 * torch.eye(12)
    community = torch.arange(12) // 6
    assert torch.equal(community[cos.argmax(1)], community)  # each word's nearest is its own kind
    same = community[:, None] == community[None, :]
    assert cos[same & (cos > -1)].mean() > cos[~same].mean() + 0.5


def test_expansion_adds_the_nearest_words_that_are_not_the_texts_own():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    candidates = torch.tensor([False, True, True, True, True])
    ids, score = expansion_words(
        torch.tensor([[1, 0], [0, 0]]),
        torch.tensor([[True, False], [False, False]]),
        emb,
        candidates,
        2,
    )
    assert ids[0].tolist() == [2, 4]  # nearest to word 1, itself and padding excluded
    assert torch.isfinite(score[0]).all() and torch.isinf(score[1]).all()  # no words, no expansion


def test_fit_semantic_graph_sets_the_nodes_and_the_word_table():
    model = make_model(max_word_frequency=0.5, min_word_count=2)
    g = torch.Generator().manual_seed(0)
    word_ids = torch.randint(2, 20, (30, 4), generator=g)
    word_ids[:, 0] = 1  # in every text: a stop word
    stats = model.fit_semantic_graph(word_ids, torch.arange(30))
    vocabulary = word_vocabulary(word_ids, 0, 2, 0.5)
    assert model.graph_words.nonzero().flatten().tolist() == vocabulary.tolist()
    assert not model.graph_words[1] and stats["graph_words"] == len(vocabulary)
    assert stats["graph_nodes"] == len(vocabulary) + 30
    graph_rows = model.graph_embeddings[vocabulary]
    torch.testing.assert_close(graph_rows.norm(dim=1), torch.ones(len(vocabulary)))
    assert model.graph_embeddings[~model.graph_words].abs().sum() == 0
    # The words' vectors are their DeepWalk embeddings, through the trained projection.
    assert model.word_embeddings is None
    texts = vocabulary[:4].view(2, 2)
    model.config.expansion_words = 0
    _, words, mask = model._text(torch.zeros(2, 4), texts, None, None)
    torch.testing.assert_close(words, model.word_projection(model.graph_embeddings[texts]))
    assert mask.all()

    random_start = make_model(max_word_frequency=0.5, min_word_count=2, graph_word_embeddings=False)
    before = random_start.word_embeddings.weight.clone()
    random_start.fit_semantic_graph(word_ids, torch.arange(30))
    torch.testing.assert_close(random_start.word_embeddings.weight, before)


# --------------------------------------------------------------------------------------------------
# Loss terms by hand


def test_pairwise_likelihood_by_hand_and_its_sign():
    theta = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    by_hand = np.mean(
        [
            np.log1p(np.exp(t)) - s * t
            for t, s in zip(theta.flatten().tolist(), sim.flatten().tolist(), strict=True)
        ]
    )
    assert pairwise_likelihood(theta, sim).item() == pytest.approx(by_hand, rel=1e-6)
    # Agreeing with S (high θ on relevant pairs) costs less than the opposite.
    assert pairwise_likelihood(theta, sim) < pairwise_likelihood(-theta, sim)


def test_balance_weights_give_similar_and_dissimilar_pairs_half_each():
    sim = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    w = balance_weights(sim)
    assert (w * sim).sum().item() == pytest.approx(3) == (w * (1 - sim)).sum().item()
    assert w[0, 0] > w[0, 1]  # the rare kind weighs more
    assert torch.equal(balance_weights(torch.ones(2, 3)), torch.ones(2, 3))


def test_local_similarity_matches_a_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    words, regions = torch.randn(3, 4, 5, generator=g), torch.randn(2, 6, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    got = local_similarity(words, mask, regions, temperature=4.0)
    for t, i in itertools.product(range(3), range(2)):
        scores = []
        for w in range(4):
            if mask[t, w]:
                cos = F.cosine_similarity(words[t, w].unsqueeze(0), regions[i], dim=1)
                scores.append((torch.softmax(4.0 * cos, 0) * cos).sum())
        expected = torch.stack(scores).mean() if scores else torch.tensor(0.0)
        torch.testing.assert_close(got[t, i], expected)


def test_attention_pool_weights_the_items_by_their_agreement_with_the_guide():
    items = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    guide = torch.tensor([[4.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    alpha = torch.softmax(torch.tensor([4.0, 0.0]) / 2**0.5, 0)
    torch.testing.assert_close(attention_pool(items, mask, guide)[0], alpha @ items[0, :2])
    none = attention_pool(items, torch.zeros(1, 3, dtype=torch.bool), guide)
    assert torch.equal(none, torch.zeros(1, 2))


def codes_by_hand(model, batch):
    """(h_u, h_v) of the model's own parts: tanh of the hash layers (checked against forward)."""
    image = model._image(batch["image_features"], batch["region_features"], None)
    text = model._text(batch["text_features"], batch["word_ids"], None, None)
    return model._image_code(*image), model._text_code(*text), image, text


@pytest.mark.parametrize("balanced_pairs", [True, False])
@pytest.mark.parametrize("binarization", ["relaxed", "straight_through"])
def test_each_loss_term_by_hand(binarization, balanced_pairs):
    model = make_model(
        binarization=binarization, balanced_pairs=balanced_pairs, correlation_threshold=0.3
    )
    batch = make_batch()
    out = model(**batch)
    h_u, h_v, (_, regions), (_, words, mask) = codes_by_hand(model, batch)
    torch.testing.assert_close(out.image_embeds, torch.sign(h_u))
    y = F.one_hot(batch["labels"], NUM_LABELS).float()
    sim = (y @ y.T > 0).float()
    c_u, c_v = (h_u, h_v) if binarization == "relaxed" else (torch.sign(h_u), torch.sign(h_v))

    n, similar = sim.numel(), sim.sum()
    assert 0 < similar < n
    w = torch.where(sim > 0, n / (2 * similar), n / (2 * (n - similar)))
    w = w if balanced_pairs else torch.ones_like(sim)

    def nll(a, b):
        theta = (a @ b.T - 0.3 * model.config.code_bits) / 2
        return (w * (torch.log1p(torch.exp(theta)) - sim * theta)).mean()

    correlation = nll(c_u, c_v) + nll(c_u, c_u) + nll(c_v, c_v)
    torch.testing.assert_close(out.loss_terms["correlation"], correlation.detach())
    quantization = ((torch.sign(h_u) - h_u) ** 2).mean() + ((torch.sign(h_v) - h_v) ** 2).mean()
    torch.testing.assert_close(out.loss_terms["quantization"], 0.1 * quantization.detach())
    scales = [local_similarity(words, mask, r, 10.0) for r in regions]
    theta = 10.0 * (scales[0] + scales[1]) / 2  # texts × images
    local = (torch.log1p(torch.exp(theta)) - sim * theta).mean()
    torch.testing.assert_close(out.loss_terms["local_saliency"], local.detach())
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))


def test_local_term_on_a_sample_of_the_images():
    model, batch = make_model(local_sample_images=2), make_batch()
    torch.manual_seed(5)
    out = model(**batch)
    torch.manual_seed(5)
    columns = torch.randperm(6)[:2]
    _, _, (_, regions), (_, words, mask) = codes_by_hand(model, batch)
    y = F.one_hot(batch["labels"], NUM_LABELS).float()
    sim = (y @ y.T > 0).float()[:, columns]
    scales = [local_similarity(words, mask, r[columns], 10.0) for r in regions]
    theta = 10.0 * (scales[0] + scales[1]) / 2
    expected = (torch.log1p(torch.exp(theta)) - sim * theta).mean()
    torch.testing.assert_close(out.loss_terms["local_saliency"], expected.detach())


def test_straight_through_passes_the_gradient_to_h():
    model, batch = (
        make_model(binarization="straight_through", quantization_weight=0.0),
        make_batch(),
    )
    model(**batch).loss.backward()
    assert model.image_hash.weight.grad.abs().sum() > 0
    assert model.text_hash.weight.grad.abs().sum() > 0


def test_scales_are_the_fine_map_and_the_pooled_grid():
    model = make_model()
    regions = torch.randn(2, 16, 3)
    fine, coarse = model._scales(regions)
    assert torch.equal(fine, regions)
    grid = regions.transpose(1, 2).reshape(2, 3, 4, 4)
    # the top-left cell of the 2×2 grid is the mean of the map's top-left 2×2 block
    torch.testing.assert_close(coarse[:, 0], grid[:, :, :2, :2].mean(dim=(2, 3)))
    assert coarse.shape == (2, 4, 3)
    (only_coarse,) = make_model(fine_regions=False)._scales(regions)
    torch.testing.assert_close(only_coarse, coarse)
    (only_fine,) = make_model(coarse_grid=0)._scales(regions)
    assert torch.equal(only_fine, regions)


# --------------------------------------------------------------------------------------------------
# Codes, switches, errors


def test_codes_are_signs_and_pack_like_numpy():
    model, batch = make_model().eval(), make_batch()
    with torch.no_grad():
        codes = model.get_image_features(batch["image_features"], batch["region_features"])
        packed = model.get_image_features(
            batch["image_features"], batch["region_features"], packed=True
        )
        text = model.get_text_features(batch["text_features"], batch["word_ids"], packed=True)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0} and codes.shape == (6, 16)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 2) and text.shape == (6, 2)
    assert np.array_equal(packed.numpy(), np.packbits(codes.numpy() > 0, axis=1))
    assert torch.equal(binarize(torch.tensor([0.0, -0.1, 2.0])), torch.tensor([1.0, -1.0, 1.0]))
    assert torch.equal(pack_codes(torch.tensor([[1.0] + [-1.0] * 7])), torch.tensor([[128]]))


def test_codes_rank_by_hamming_in_evaluation():
    model, batch = make_model().eval(), make_batch()
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    metrics = evaluate_retrieval(
        out.image_embeds,
        out.text_embeds,
        batch["labels"],
        batch["labels"],
        metric=model.config.retrieval_metric,
    )
    assert "precision@hamming2_i2t" in metrics and 0 <= metrics["map_avg"] <= 1


def test_switched_off_components_build_nothing_and_need_no_inputs():
    model = make_model(local_saliency_weight=0.0, quantization_weight=0.0)
    assert model.region_embedding is None and model.word_projection is None
    batch = make_batch()
    out = model(batch["image_features"], batch["text_features"], labels=batch["labels"])
    assert set(out.loss_terms) == {"correlation"}
    full = make_model()(**batch)
    assert set(full.loss_terms) == {"correlation", "local_saliency", "quantization"}


def test_expansion_adds_words_to_each_text_and_padding_changes_nothing():
    batch = make_batch()  # 3 words a text, then 2 columns of padding
    model = make_model().eval()
    _, words, mask = model._text(batch["text_features"], batch["word_ids"], None, None)
    assert words.shape[1] == 3 + 2 and mask[:, 3:].all()
    _, words, _ = make_model(expansion_words=0)._text(
        batch["text_features"], batch["word_ids"], None, None
    )
    assert words.shape[1] == 3
    padded = torch.cat([batch["word_ids"], torch.zeros(6, 7, dtype=torch.long)], 1)
    with torch.no_grad():
        codes = model.get_text_features(batch["text_features"], batch["word_ids"])
        torch.testing.assert_close(model.get_text_features(batch["text_features"], padded), codes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"code_bits": 24}, "code_bits"),
        ({"retrieval_metric": "cosine"}, "retrieval_metric"),
        ({"fine_regions": False, "coarse_grid": 0}, "region scale"),
        ({"coarse_grid": 4}, "coarse_grid"),
        ({"binarization": "sigmoid"}, "binarization"),
        ({"max_word_frequency": 0.0}, "max_word_frequency"),
        ({"correlation_threshold": 1.0}, "correlation_threshold"),
    ],
)
def test_invalid_config_names_the_field(kwargs, message):
    with pytest.raises(Exception, match=message):
        CMSLConfig(**{**TINY, **kwargs})


def test_clear_errors_on_missing_or_bad_region_and_word_inputs():
    model, batch = make_model(), make_batch()
    with pytest.raises(ValueError, match="region_features"):
        model(**{**batch, "region_features": None})
    with pytest.raises(ValueError, match=r"region_features must have shape \(batch, 16, 3\)"):
        model(**{**batch, "region_features": torch.randn(6, 9, 3)})
    with pytest.raises(ValueError, match="word_ids"):
        model(**{**batch, "word_ids": None})
    with pytest.raises(ValueError, match="word_ids must lie"):
        model(**{**batch, "word_ids": batch["word_ids"] + VOCAB})
    with pytest.raises(ValueError, match="semantic graph would be empty"):
        make_model(min_word_count=100).fit_semantic_graph(batch["word_ids"], torch.arange(6))


# --------------------------------------------------------------------------------------------------
# Training through the script


def synthetic_region_dataset(path):
    """Labelled pairs whose features, regions and words all carry the class, saved to disk."""
    from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, List, Value

    g = torch.Generator().manual_seed(0)
    features = Features(
        {
            "image_features": List(Value("float32"), length=5),
            "text_features": List(Value("float32"), length=4),
            "region_features": Array2D((16, 3), "float16"),
            "word_ids": List(Value("int32"), length=6),
            "label": ClassLabel(num_classes=NUM_LABELS),
        }
    )
    centres = torch.randn(NUM_LABELS, 5, generator=g)
    splits = {}
    for split, n in (("train", 90), ("validation", 30), ("test", 30)):
        label = torch.arange(n) % NUM_LABELS
        words = 1 + label[:, None] * 10 + torch.randint(0, 10, (n, 6), generator=g)
        words[:, 4:] = 0
        splits[split] = Dataset.from_dict(
            {
                "image_features": (centres[label] + torch.randn(n, 5, generator=g)).numpy(),
                "text_features": (centres[label, :4] + torch.randn(n, 4, generator=g)).numpy(),
                "region_features": (
                    centres[label, :3, None].transpose(1, 2) + torch.randn(n, 16, 3, generator=g)
                ).numpy(),
                "word_ids": words.numpy(),
                "label": label.numpy(),
            },
            features=features,
        )
    DatasetDict(splits).save_to_disk(path)
    return path


DATA_FIELDS = (
    "image_feature_dim",
    "text_feature_dim",
    "num_labels",
    "region_channels",
    "region_size",
)
SCRIPT_CONFIG = {k: v for k, v in TINY.items() if k not in DATA_FIELDS}  # the rest from the data


def test_trains_through_the_script_and_ranks_by_hamming(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    try:
        import train
    finally:
        sys.path.pop(0)
    data = synthetic_region_dataset(tmp_path / "data")
    results = train.main(
        [
            *("--model", "cmsl", "--dataset", str(data), "--epochs", "20", "--batch_size", "30"),
            *("--learning_rate", "0.005", "--eval_every", "5"),
            *("--model_config", json.dumps(SCRIPT_CONFIG), "--output_dir", str(tmp_path / "run")),
        ]
    )
    assert results["config"]["retrieval_metric"] == "hamming"
    assert (results["config"]["region_size"], results["config"]["region_channels"]) == (4, 3)
    assert "precision@hamming2_i2t" in results["test"]
    assert results["test"]["map_avg"] > 0.6  # chance is about 1/3


def test_raw_mode_codes_equal_those_of_the_towers_outputs():
    """With the towers (as a saved tower-feature run), pixels and token ids give the codes of
    the pooled features, the last block's region map and the words the towers produce."""
    from PIL import Image

    from hf_xmodal.models import add_towers
    from hf_xmodal.models.processing_xmodal import XmodalTowerProcessor

    torch.manual_seed(0)
    config = CMSLConfig(
        num_labels=3, image_feature_dim=1280, text_feature_dim=384, hidden_dim=16, embed_dim=8
    )
    model = add_towers(CMSLModel(config)).eval()
    processor = XmodalTowerProcessor.from_towers()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))] * 2
    batch = processor(images=images, text=["a red bus on a street", "two dogs play"])
    with torch.no_grad():
        codes = model(**batch)
        block_map, pooled = model.inputs.image_tower.regions_and_pooled(batch["pixel_values"])
        sentences = model.inputs.text_tower(batch["input_ids"], batch["attention_mask"])
        regions = block_map.flatten(2).transpose(1, 2)
        assert regions.shape == (2, 49, 320)
        torch.testing.assert_close(pooled, model.inputs.image_tower(batch["pixel_values"]))
        torch.testing.assert_close(
            codes.image_embeds, model.get_image_features(pooled, region_features=regions)
        )
        torch.testing.assert_close(
            codes.text_embeds, model.get_text_features(sentences, word_ids=batch["input_ids"])
        )
