"""Retrieval metrics against slow pure-Python references."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from hf_xmodal.evaluation import (
    average_precision,
    evaluate_caption_retrieval,
    evaluate_retrieval,
    hamming_distance,
    hamming_scores,
    mean_average_precision,
    metrics,
    pairwise_scores,
    plot_pr_curves,
    precision_at_hamming_radius,
    precision_at_k,
    precision_recall_curve,
    precision_recall_within_hamming_radius,
    recall_at_k,
    relevance,
    tie_averaged_average_precision,
)

# ------------------------------------------------------------------------------------------------
# References: plain Python, one query at a time.


def ref_relevant(q, g):
    q, g = np.asarray(q), np.asarray(g)
    if q.ndim == 0:
        return bool(q == g)
    return bool(any(a != 0 and b != 0 for a, b in zip(q, g, strict=True)))


def ref_ranking(row):
    """Gallery indices by score descending; ties by gallery index ascending (the stated rule)."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def ref_ranked_rel(scores, ql, gl, i):
    row = [float(x) for x in scores[i]]
    return [ref_relevant(ql[i], gl[j]) for j in ref_ranking(row)]


def ref_ap(rel, k=None):
    top = rel if k is None else rel[:k]
    hits, total = 0, 0.0
    for rank, r in enumerate(top, start=1):
        if r:
            hits += 1
            total += hits / rank
    denominator = sum(rel) if k is None else hits
    return total / denominator if denominator else 0.0


def ref_precision_at(rel, k):
    k = min(k, len(rel))
    return sum(rel[:k]) / k


def ref_curve(rel):
    n_rel = sum(rel)
    precision, recall, hits = [], [], 0
    for rank, r in enumerate(rel, start=1):
        hits += r
        precision.append(Fraction(hits, rank))
        recall.append(Fraction(hits, n_rel) if n_rel else Fraction(0))
    interpolated = []
    for level in range(11):
        candidates = [
            p for p, r in zip(precision, recall, strict=True) if n_rel and r >= Fraction(level, 10)
        ]
        interpolated.append(max(candidates) if candidates else 0)
    return precision, recall, interpolated


def ref_hamming(a, b):
    bits = lambda c: [1 if x > 0 else 0 for x in c]  # noqa: E731
    return sum(x != y for x, y in zip(bits(a), bits(b), strict=True))


def ref_tie_averaged_ap(row, rel):
    """Average AP over every permutation of the gallery that keeps scores non-increasing."""
    aps = []
    for perm in itertools.permutations(range(len(row))):
        if all(row[perm[i]] >= row[perm[i + 1]] for i in range(len(perm) - 1)):
            aps.append(ref_ap([rel[j] for j in perm]))
    return sum(aps) / len(aps)


# ------------------------------------------------------------------------------------------------
# Random data with heavy ties and queries without relevant items.


def make_case(seed, n_queries, n_gallery, multi_label, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.rand(n_queries, n_gallery, generator=gen) * 2 - 1).round(decimals=1)
    scores = scores.to(dtype)
    if multi_label:
        ql = (torch.rand(n_queries, 5, generator=gen) < 0.3).long()
        gl = (torch.rand(n_gallery, 5, generator=gen) < 0.3).long()
        ql[0] = 0  # a query without labels: nothing is relevant
        gl[:, 4] = 0  # class 4 never in the gallery
        ql[1] = torch.tensor([0, 0, 0, 0, 1])
    else:
        ql = torch.randint(0, 6, (n_queries,), generator=gen)
        gl = torch.randint(0, 5, (n_gallery,), generator=gen)  # class 5 is never relevant
        ql[0] = 5
    return scores, ql, gl


CASES = [
    (0, 9, 23, False),
    (1, 23, 9, False),
    (2, 12, 30, True),
    (3, 30, 12, True),
    (4, 1, 1, False),
]


@pytest.fixture(params=[False, True], ids=["one-chunk", "many-chunks"])
def chunked(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 40)
    return request.param


@pytest.mark.parametrize("case", CASES)
def test_relevance_matches_reference(case):
    _, ql, gl = make_case(*case)
    rel = relevance(ql, gl)
    assert rel.dtype == torch.bool
    expected = [[ref_relevant(q, g) for g in gl.numpy()] for q in ql.numpy()]
    assert rel.tolist() == expected


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [None, 1, 3, 8, 1000])
def test_average_precision_matches_reference(case, k, chunked):
    scores, ql, gl = make_case(*case)
    got = average_precision(scores, ql, gl, k=k)
    expected = [ref_ap(ref_ranked_rel(scores, ql, gl, i), k) for i in range(len(ql))]
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert mean_average_precision(scores, ql, gl, k=k) == pytest.approx(np.mean(expected))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64]
)
def test_score_dtypes_and_numpy_inputs(dtype):
    scores, ql, gl = make_case(5, 11, 17, False)
    scores = (scores * 10).to(dtype)  # integers in [-10, 10]: exact in every dtype
    expected = [ref_ap(ref_ranked_rel(scores.double(), ql, gl, i)) for i in range(len(ql))]
    got = average_precision(scores, ql, gl)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    if dtype not in (torch.bfloat16,):
        got_np = average_precision(scores.numpy(), ql.numpy(), gl.numpy())
        np.testing.assert_allclose(got_np.numpy(), expected, rtol=1e-6)


def test_signed_zeros_and_infinities_follow_the_rule():
    scores = torch.tensor([[0.0, -0.0, float("inf"), -float("inf"), 0.0, -0.0]])
    ql, gl = torch.tensor([1]), torch.tensor([0, 1, 0, 1, 1, 0])
    expected = ref_ap(ref_ranked_rel(scores, ql, gl, 0))
    assert average_precision(scores, ql, gl).item() == pytest.approx(expected)
    assert average_precision(scores.double(), ql, gl).item() == pytest.approx(expected)


def test_tie_rule_on_hand_made_example():
    # Ties 0.9 (items 1, 3) and 0.5 (items 0, 2); relevant: items 0 and 3.
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1]])
    ql, gl = torch.tensor([1]), torch.tensor([1, 0, 0, 1, 0])
    # Stable order 1, 3, 0, 2, 4 -> relevance 0, 1, 1, 0, 0 -> AP = (1/2 + 2/3) / 2.
    for s in (scores, scores.double()):
        assert average_precision(s, ql, gl).item() == pytest.approx(7 / 12, abs=1e-6)
    assert precision_at_k(scores, ql, gl, ks=(1, 2))[1] == 0.0
    assert recall_at_k(scores, ql, gl, ks=(1, 2)) == {1: 0.0, 2: 1.0}
    # Same rule for Hamming ranking: distances 2, 1, 2, 1, 3 to the query code.
    query = torch.tensor([[1, 1, 1, 1]])
    codes = torch.tensor([[-1, -1, 1, 1], [-1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, 1], [-1] * 4])
    codes[4, 3] = 1
    assert hamming_distance(query, codes).tolist() == [[2, 1, 2, 1, 3]]
    assert average_precision(hamming_scores(query, codes), ql, gl).item() == pytest.approx(7 / 12)


@pytest.mark.parametrize("case", CASES)
def test_precision_at_k_matches_reference(case, chunked):
    scores, ql, gl = make_case(*case)
    ks = (1, 2, 5, 10, 100)
    got = precision_at_k(scores, ql, gl, ks)
    for k in ks:
        expected = np.mean(
            [ref_precision_at(ref_ranked_rel(scores, ql, gl, i), k) for i in range(len(ql))]
        )
        assert got[k] == pytest.approx(expected)


@pytest.mark.parametrize("case", CASES)
def test_precision_recall_curve_matches_reference(case, chunked):
    scores, ql, gl = make_case(*case)
    got = precision_recall_curve(scores, ql, gl)
    refs = [ref_curve(ref_ranked_rel(scores, ql, gl, i)) for i in range(len(ql))]
    mean = lambda values: np.mean(np.array(values, dtype=float), axis=0)  # noqa: E731
    np.testing.assert_allclose(got["precision"].numpy(), mean([r[0] for r in refs]), rtol=1e-6)
    np.testing.assert_allclose(got["recall"].numpy(), mean([r[1] for r in refs]), rtol=1e-6)
    np.testing.assert_allclose(
        got["interpolated_precision"].numpy(), mean([r[2] for r in refs]), rtol=1e-6
    )
    np.testing.assert_allclose(got["recall_levels"].numpy(), np.linspace(0, 1, 11))
    assert got["precision"].shape == (len(gl),)


def test_interpolation_at_exact_recall_levels():
    # 10 relevant items: recall hits exactly 0.3 at rank 3, where floating point 0.1 * 3 > 0.3.
    scores = -torch.arange(20.0)[None]
    gl = torch.tensor([1] * 3 + [0] * 7 + [1] * 7 + [0] * 3)
    got = precision_recall_curve(scores, torch.tensor([1]), gl)["interpolated_precision"]
    assert got[3].item() == pytest.approx(1.0)


@pytest.mark.parametrize("case", CASES)
def test_recall_at_k_matches_reference(case, chunked):
    scores, ql, gl = make_case(*case)
    ks = (1, 3, 10, 50)
    got = recall_at_k(scores, ql, gl, ks)
    for k in ks:
        hits = [any(ref_ranked_rel(scores, ql, gl, i)[:k]) for i in range(len(ql))]
        assert got[k] == pytest.approx(np.mean(hits))


@pytest.mark.parametrize("seed", range(6))
def test_tie_averaged_ap_matches_permutation_average(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (4, 7), generator=gen).float() / 2
    ql = torch.randint(0, 3, (4,), generator=gen)
    gl = torch.randint(0, 2, (7,), generator=gen)
    got = tie_averaged_average_precision(scores, ql, gl)
    for i in range(len(ql)):
        rel = [ref_relevant(ql[i], g) for g in gl]
        expected = ref_tie_averaged_ap(scores[i].tolist(), rel)
        assert got[i].item() == pytest.approx(expected, abs=1e-12)


def test_tie_averaged_ap_without_ties_equals_ap():
    scores, ql, gl = make_case(6, 8, 15, True)
    scores = torch.rand(scores.shape, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        tie_averaged_average_precision(scores, ql, gl).numpy(),
        average_precision(scores, ql, gl).numpy(),
        rtol=1e-6,
    )


# ------------------------------------------------------------------------------------------------
# Binary codes


def make_codes(seed, n, bits=8, zero_one=False):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2, (n, bits), generator=gen)
    return codes if zero_one else codes * 2 - 1


@pytest.mark.parametrize("zero_one", [False, True])
def test_hamming_distance_matches_reference(zero_one):
    q, g = make_codes(0, 7, zero_one=zero_one), make_codes(1, 13, zero_one=not zero_one)
    got = hamming_distance(q, g)
    assert got.dtype == torch.int32
    assert got.tolist() == [[ref_hamming(a, b) for b in g.tolist()] for a in q.tolist()]
    assert torch.equal(hamming_scores(q, g), -got)
    assert torch.equal(hamming_distance(q.numpy(), g > 0), got)


def test_hamming_ranking_with_heavy_ties_matches_reference(chunked):
    q, g = make_codes(2, 15), make_codes(3, 40)
    gen = torch.Generator().manual_seed(1)
    ql, gl = torch.randint(0, 4, (15,), generator=gen), torch.randint(0, 4, (40,), generator=gen)
    scores = hamming_scores(q, g)
    expected = [ref_ap(ref_ranked_rel(scores, ql, gl, i)) for i in range(len(ql))]
    np.testing.assert_allclose(average_precision(scores, ql, gl).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("multi_label", [False, True])
def test_precision_recall_within_hamming_radius_matches_reference(multi_label, chunked):
    _, ql, gl = make_case(7, 11, 25, multi_label)
    q, g = make_codes(4, 11), make_codes(5, 25, zero_one=True)
    radii = [0, 1, 2, 3, 5, 8, 12]
    got = precision_recall_within_hamming_radius(q, g, ql, gl, radii)
    for n, r in enumerate(radii):
        precisions, recalls = [], []
        for i in range(len(q)):
            within = [j for j in range(len(g)) if ref_hamming(q[i], g[j]) <= r]
            rel = [ref_relevant(ql[i], gl[j]) for j in range(len(g))]
            found = sum(rel[j] for j in within)
            precisions.append(found / len(within) if within else 0.0)
            recalls.append(found / sum(rel) if sum(rel) else 0.0)
        assert got["precision"][n].item() == pytest.approx(np.mean(precisions))
        assert got["recall"][n].item() == pytest.approx(np.mean(recalls))
    assert got["radius"].tolist() == radii
    assert precision_at_hamming_radius(q, g, ql, gl) == pytest.approx(got["precision"][2].item())
    default = precision_recall_within_hamming_radius(q, g, ql, gl)
    assert default["radius"].tolist() == list(range(9))
    assert default["recall"][-1].item() == pytest.approx(
        np.mean([relevance(ql[i : i + 1], gl).any().item() for i in range(len(ql))])
    )


def test_hamming_errors():
    with pytest.raises(ValueError, match="binary codes"):
        hamming_distance(torch.tensor([[0.5, 1.0]]), torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="binary codes"):
        hamming_distance(torch.tensor([[-1, 0, 1]]), torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="bits"):
        hamming_distance(torch.ones(2, 8), torch.ones(3, 16))
    with pytest.raises(ValueError, match="radii"):
        precision_recall_within_hamming_radius(
            torch.ones(2, 8), torch.ones(3, 8), torch.zeros(2), torch.zeros(3), radii=[-1]
        )


# ------------------------------------------------------------------------------------------------
# End-to-end evaluation


def test_evaluate_retrieval_cosine_matches_reference():
    gen = torch.Generator().manual_seed(0)
    images, texts = torch.randn(14, 6, generator=gen), torch.randn(21, 6, generator=gen)
    il, tl = torch.randint(0, 4, (14,), generator=gen), torch.randint(0, 3, (21,), generator=gen)
    got = evaluate_retrieval(images.numpy(), texts, il, tl, ks=(5, 50))
    cos = (images / images.norm(dim=1, keepdim=True)) @ (texts / texts.norm(dim=1, keepdim=True)).T
    i2t = [ref_ranked_rel(cos, il, tl, i) for i in range(14)]
    t2i = [ref_ranked_rel(cos.T, tl, il, i) for i in range(21)]
    assert got["map_i2t"] == pytest.approx(np.mean([ref_ap(r) for r in i2t]))
    assert got["map_t2i"] == pytest.approx(np.mean([ref_ap(r) for r in t2i]))
    assert got["map_avg"] == pytest.approx((got["map_i2t"] + got["map_t2i"]) / 2)
    assert got["map@5_t2i"] == pytest.approx(np.mean([ref_ap(r, 5) for r in t2i]))
    assert got["map@50_i2t"] == pytest.approx(got["map_i2t"])
    assert got["precision@5_i2t"] == pytest.approx(np.mean([ref_precision_at(r, 5) for r in i2t]))
    assert got["queries_without_relevant_i2t"] == int((il == 3).sum())
    assert got["queries_without_relevant_t2i"] == 0
    assert got["num_queries_i2t"] == 14 and got["num_queries_t2i"] == 21
    ip = evaluate_retrieval(images, texts, il, tl, metric="inner_product")
    assert ip["map_i2t"] == pytest.approx(mean_average_precision(images @ texts.T, il, tl))


def test_evaluate_retrieval_hamming_and_tie_average(chunked):
    _, il, tl = make_case(8, 12, 18, True)
    images, texts = make_codes(6, 12), make_codes(7, 18, zero_one=True)
    got = evaluate_retrieval(images, texts, il, tl, metric="hamming", ks=(3,), tie_averaged=True)
    dist = hamming_distance(images, texts)
    assert got["map_i2t"] == pytest.approx(mean_average_precision(-dist, il, tl))
    assert got["map_t2i"] == pytest.approx(mean_average_precision(-dist.T, tl, il))
    assert got["map_tie_averaged_t2i"] == pytest.approx(
        tie_averaged_average_precision(-dist.T, tl, il).mean().item()
    )
    assert got["precision@hamming2_i2t"] == pytest.approx(
        precision_at_hamming_radius(images, texts, il, tl, radius=2)
    )
    assert "map_tie_averaged_avg" in got and "map@3_avg" in got


def test_evaluate_retrieval_with_a_scorer():
    """An asymmetric scorer on same-size embeddings gets the images in its image slot both ways."""
    gen = torch.Generator().manual_seed(1)
    images, texts = torch.randn(9, 4, generator=gen), torch.randn(13, 4, generator=gen)
    il, tl = torch.randint(0, 3, (9,), generator=gen), torch.randint(0, 3, (13,), generator=gen)
    weight = torch.randn(4, 4, generator=gen)  # s(image, text) = image·W·text, W not symmetric

    def scorer(queries, gallery, query_modality):
        if query_modality == "image":
            return queries @ weight @ gallery.T
        return (gallery @ weight @ queries.T).T

    scores = images @ weight @ texts.T
    got = evaluate_retrieval(images, texts, il, tl, metric=scorer)
    assert got["map_i2t"] == pytest.approx(mean_average_precision(scores, il, tl))
    assert got["map_t2i"] == pytest.approx(mean_average_precision(scores.T, tl, il))
    swapped = mean_average_precision(texts @ weight @ images.T, tl, il)
    assert got["map_t2i"] != pytest.approx(swapped)  # the slots matter for this scorer

    owner = torch.randint(0, 9, (13,), generator=gen)
    caption = evaluate_caption_retrieval(images, texts, owner, metric=scorer, ks=(1, 3))
    for k in (1, 3):
        t2i = [owner[i] in ref_ranking(scores[:, i].tolist())[:k] for i in range(13)]
        assert caption[f"r@{k}_t2i"] == pytest.approx(np.mean(t2i))
    with pytest.raises(ValueError, match="scorer returned shape"):
        evaluate_retrieval(images, texts, il, tl, metric=lambda q, g, query_modality: q[:, :1])
    with pytest.raises(ValueError, match="query_modality"):
        pairwise_scores(images, texts, scorer)


def test_evaluate_caption_retrieval_matches_reference():
    gen = torch.Generator().manual_seed(2)
    images, texts = torch.randn(6, 5, generator=gen), torch.randn(25, 5, generator=gen)
    owner = torch.randint(0, 5, (25,), generator=gen)  # image 5 has no caption
    got = evaluate_caption_retrieval(images, texts, owner, ks=(1, 5, 10))
    cos = pairwise_scores(images, texts)
    for k in (1, 5, 10):
        i2t = [any(owner[j] == i for j in ref_ranking(cos[i].tolist())[:k]) for i in range(6)]
        t2i = [owner[i] in ref_ranking(cos[:, i].tolist())[:k] for i in range(25)]
        assert got[f"r@{k}_i2t"] == pytest.approx(np.mean(i2t))
        assert got[f"r@{k}_t2i"] == pytest.approx(np.mean(t2i))
    assert got["rsum"] == pytest.approx(sum(v for key, v in got.items() if key.startswith("r@")))
    assert got["queries_without_relevant_i2t"] == 6 - len(set(owner.tolist()))
    with pytest.raises(ValueError, match="text_image_index values"):
        evaluate_caption_retrieval(images, texts, torch.full((25,), 6))
    with pytest.raises(ValueError, match="25 text embeddings but 24"):
        evaluate_caption_retrieval(images, texts, owner[:24])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_labels": torch.zeros(4, dtype=torch.long)}, "5 image embeddings but 4 image"),
        ({"text_labels": torch.zeros(8, dtype=torch.long)}, "7 text embeddings but 8 text"),
        ({"text_embeds": torch.randn(7, 4)}, "dim 3 but text_embeds have dim 4"),
        ({"image_embeds": torch.full((5, 3), float("nan"))}, "image_embeds contains NaN or inf"),
        ({"text_embeds": torch.full((7, 3), float("inf"))}, "text_embeds contains NaN or inf"),
        ({"image_embeds": torch.empty(0, 3)}, "image_embeds is empty"),
        ({"text_embeds": torch.randn(7)}, "text_embeds must be 2-D"),
        ({"image_labels": torch.zeros(5, 2)}, "both 1-D class ids or both 2-D"),
        ({"metric": "euclidean"}, "metric must be one of"),
        ({"ks": (0,)}, "ks must be positive integers"),
    ],
)
def test_evaluate_retrieval_errors(change, message):
    args = {
        "image_embeds": torch.randn(5, 3),
        "text_embeds": torch.randn(7, 3),
        "image_labels": torch.zeros(5, dtype=torch.long),
        "text_labels": torch.zeros(7, dtype=torch.long),
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        evaluate_retrieval(**args)


def test_ranking_input_errors():
    ql, gl = torch.zeros(2), torch.zeros(3)
    with pytest.raises(ValueError, match="scores have shape"):
        average_precision(torch.zeros(2, 4), ql, gl)
    with pytest.raises(ValueError, match="NaN"):
        average_precision(torch.tensor([[0.0, float("nan"), 1.0]] * 2), ql, gl)
    with pytest.raises(ValueError, match="no queries"):
        mean_average_precision(torch.zeros(0, 3), torch.zeros(0), gl)
    with pytest.raises(ValueError, match="classes"):
        relevance(torch.zeros(2, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="k must be positive"):
        average_precision(torch.zeros(2, 3), ql, gl, k=0)


def test_large_matrix_matches_float64_sort_path():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(300, 700, generator=gen).round(decimals=2)
    ql, gl = (
        torch.randint(0, 10, (300,), generator=gen),
        torch.randint(0, 10, (700,), generator=gen),
    )
    fast = average_precision(scores, ql, gl)
    exact = average_precision(scores.double(), ql, gl)  # torch.sort(stable=True) path
    np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=1e-6)
    assert math.isfinite(fast.mean().item())


def test_plot_pr_curves(tmp_path):
    scores, ql, gl = make_case(9, 10, 20, False)
    curve = precision_recall_curve(scores, ql, gl)
    points = {k: curve[k] for k in ("recall_levels", "interpolated_precision")}
    path = plot_pr_curves({"image→text": curve, "text→image": points}, tmp_path / "pr" / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="needs"):
        plot_pr_curves({"bad": {"precision": [1.0]}}, tmp_path / "b.png")


def test_pr_curves_of_a_code_model_include_precision_and_recall_per_radius(tmp_path):
    """A model whose retrieval metric is "hamming" gets PR within each radius 0..bits too."""
    from types import SimpleNamespace

    from hf_xmodal.evaluation import plot_pr_curves
    from hf_xmodal.training import pr_curves

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (2, 30, 8), generator=g) * 2 - 1
    labels = torch.randint(0, 3, (30,), generator=g)
    embeds = {"image_embeds": codes[0], "text_embeds": codes[1], "labels": labels}
    model = SimpleNamespace(config=SimpleNamespace(retrieval_metric="hamming"))
    curves = pr_curves(model, embeds)
    within = curves["text→image, within Hamming radius"]
    expected = precision_recall_within_hamming_radius(codes[1], codes[0], labels, labels)
    for key in ("radius", "precision", "recall"):
        torch.testing.assert_close(within[key], expected[key])
    assert within["radius"].tolist() == list(range(9))
    assert "image→text, within Hamming radius" in curves
    assert plot_pr_curves(curves, tmp_path / "pr.png").stat().st_size > 0
