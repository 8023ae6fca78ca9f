"""RetrievalIndex against brute-force scoring."""

import json

import faiss
import numpy as np
import pytest
import torch

from hf_xmodal.evaluation import RetrievalIndex, hamming_distance, pairwise_scores
from hf_xmodal.evaluation import index as index_module


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def codes(n, bits, seed, zero_one=False):
    c = torch.randint(0, 2, (n, bits), generator=torch.Generator().manual_seed(seed))
    return c if zero_one else c * 2 - 1


@pytest.mark.parametrize("block_elements", [None, 60])  # the whole gallery, or blocks of it
@pytest.mark.parametrize("n_queries", [1, 7])
@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_float_search_matches_brute_force(metric, n_queries, block_elements, monkeypatch):
    if block_elements:
        monkeypatch.setattr(index_module, "_SEARCH_ELEMENTS", block_elements)
    gallery, queries = randn(50, 8, seed=1), randn(n_queries, 8, seed=2)
    index = RetrievalIndex(8, metric)
    index.add(gallery[:20])
    index.search(queries, 5)  # reads the first 20 in place; adding more must not leave them stale
    index.add(gallery[20:].numpy())
    assert len(index) == 50
    expected = pairwise_scores(queries, gallery, metric)
    torch.testing.assert_close(index.scores(queries), expected)
    scores, indices = index.search(queries, 5)
    top_scores, top_indices = expected.topk(5, dim=1)
    assert indices.dtype == torch.int64 and torch.equal(indices, top_indices)
    torch.testing.assert_close(scores, top_scores, rtol=1e-5, atol=1e-5)


def test_k_is_clamped_to_the_index_size():
    index = RetrievalIndex(4)
    index.add(randn(3, 4))
    scores, indices = index.search(randn(2, 4, seed=1), 10)
    assert scores.shape == indices.shape == (2, 3)
    assert sorted(indices[0].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_save_load_round_trip(tmp_path, metric):
    index = RetrievalIndex(6, metric)
    index.add(randn(30, 6, seed=3) * 5)
    queries = randn(4, 6, seed=4)
    path = index.save(tmp_path / "idx")
    assert json.loads((path / "index.json").read_text()) == {
        "metric": metric,
        "dim": 6,
        "size": 30,
    }
    assert sorted(p.name for p in path.iterdir()) == ["index.faiss", "index.json"]
    loaded = RetrievalIndex.load(path)
    assert (loaded.metric, loaded.dim, len(loaded)) == (metric, 6, 30)
    for a, b in zip(index.search(queries, 7), loaded.search(queries, 7), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(index.scores(queries), loaded.scores(queries))
    loaded.add(randn(2, 6, seed=5))  # a loaded index keeps growing
    assert len(loaded) == 32


@pytest.mark.parametrize("bits", [8, 12, 32])
@pytest.mark.parametrize("zero_one", [False, True])
def test_binary_index_matches_hamming_distance(tmp_path, bits, zero_one):
    gallery, queries = codes(60, bits, 6, zero_one), codes(9, bits, 7, not zero_one)
    index = RetrievalIndex(bits, "hamming")
    index.add(gallery)
    dist = hamming_distance(queries, gallery)
    assert torch.equal(index.scores(queries), -dist)
    scores, indices = index.search(queries, 10)
    values, order = dist.sort(dim=1, stable=True)  # equal distances in gallery order
    assert torch.equal(-scores, values[:, :10]) and torch.equal(indices, order[:, :10])
    loaded = RetrievalIndex.load(index.save(tmp_path))
    assert torch.equal(loaded.scores(queries), -dist)
    for a, b in zip(loaded.search(queries, 10), (scores, indices), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("n_queries", "counting"), [(1, False), (40, False), (40, True)]
)  # FAISS's heap (always for one query) or counting selection
def test_hamming_ties_come_in_gallery_order(n_queries, counting, monkeypatch):
    """Few distinct codes, so that nearly every distance is shared by many gallery items; a
    batch scans the gallery in several blocks."""
    if not counting:
        monkeypatch.setattr(index_module, "_COUNTING_MAX_SLOTS", 0)
    monkeypatch.setattr(index_module, "_HAMMING_BLOCK_BYTES", 2 * 512)  # 512 codes of 16 bits
    monkeypatch.setattr(faiss.cvar, "hamming_batch_size", 256)
    distinct = codes(6, 16, 11)
    pick = torch.randint(0, 6, (3000,), generator=torch.Generator().manual_seed(12))
    gallery, queries = distinct[pick], codes(n_queries, 16, 13)
    index = RetrievalIndex(16, "hamming")
    index.add(gallery[:1000])
    index.add(gallery[1000:])
    threads = faiss.omp_get_max_threads()
    scores, indices = index.search(queries, 700)
    assert index._faiss.use_heap != counting
    assert (faiss.omp_get_max_threads(), faiss.cvar.hamming_batch_size) == (threads, 256)
    values, order = hamming_distance(queries, gallery).sort(dim=1, stable=True)
    assert torch.equal(-scores, values[:, :700]) and torch.equal(indices, order[:, :700])


def test_float_top_k_by_slab_maxima_equals_top_k(monkeypatch):
    """The slab narrowing keeps the k best, also when they crowd into one column, over columns
    not divisible by the slabs, and with ties (then any of the tied columns)."""
    monkeypatch.setattr(index_module, "_SLAB_MIN_SCORES", 0)
    k, width = 5, 32 * 5
    n = index_module._SLABS * width + 7
    scores = randn(3, n, seed=20)
    scores[1, torch.arange(index_module._SLABS) * width + 4] += 10  # one column holds the best
    scores[2, -3:] += 10  # the best beyond the last whole slab
    values, indices = index_module._topk(scores, k)
    expected = scores.topk(k, dim=1)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)
    ties = torch.randint(0, 4, (3, n), generator=torch.Generator().manual_seed(21)).float()
    values, indices = index_module._topk(ties, k)
    assert torch.equal(values, ties.topk(k, dim=1).values)
    assert torch.equal(ties.gather(1, indices), values)
    assert all(len(row.unique()) == k for row in indices)


@pytest.mark.parametrize("bits", [12, 64])
def test_packed_codes_equal_unpacked_ones(bits):
    gallery, queries = codes(80, bits, 14), codes(5, bits, 15)
    plain, packed = RetrievalIndex(bits, "hamming"), RetrievalIndex(bits, "hamming")
    plain.add(gallery)
    packed.add(np.packbits(gallery.numpy() > 0, axis=1))
    packed_queries = torch.from_numpy(np.packbits(queries.numpy() > 0, axis=1))
    assert packed_queries.shape == (5, (bits + 7) // 8)
    for a, b in zip(plain.search(queries, 9), packed.search(packed_queries, 9), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.scores(queries), packed.scores(packed_queries))
    assert torch.equal(packed.scores(queries), -hamming_distance(queries, gallery))
    if bits % 8:
        with pytest.raises(ValueError, match="last 4 bits of each row zero"):
            packed.add(np.full((1, 2), 255, dtype=np.uint8))


def test_learned_scorer_index():
    weight = randn(5, 5, seed=8)  # s(image, text) = image·W·text

    def scorer(queries, gallery, query_modality):
        if query_modality == "image":
            return queries @ weight @ gallery.T
        return (gallery @ weight @ queries.T).T

    gallery, queries = randn(40, 5, seed=9).round(decimals=0), randn(6, 5, seed=10)
    with pytest.raises(ValueError, match="query_modality"):
        RetrievalIndex(5, scorer)
    with pytest.raises(ValueError, match="only applies to a callable"):
        RetrievalIndex(5, "cosine", query_modality="text")
    images = RetrievalIndex(5, scorer, query_modality="text")  # a gallery of images
    images.add(gallery)
    assert torch.equal(images.scores(queries), (gallery @ weight @ queries.T).T)
    index = RetrievalIndex(5, scorer, query_modality="image")
    assert index.metric == "learned"
    index.add(gallery)
    expected = queries @ weight @ gallery.T
    assert torch.equal(index.scores(queries), expected)
    scores, indices = index.search(queries, 8)
    values, order = torch.sort(expected, dim=1, descending=True, stable=True)
    assert torch.equal(indices, order[:, :8]) and torch.equal(scores, values[:, :8])
    with pytest.raises(ValueError, match="the scorer is the model"):
        index.save("unused")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        RetrievalIndex(0)
    with pytest.raises(ValueError, match="metric must be"):
        RetrievalIndex(4, "l2")
    index = RetrievalIndex(4)
    with pytest.raises(ValueError, match="empty index"):
        index.search(randn(1, 4), 1)
    with pytest.raises(ValueError, match=r"shape \[n, 4\]"):
        index.add(randn(3, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        index.add(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))
    index.add(randn(3, 4))
    with pytest.raises(ValueError, match=r"shape \[n, 4\]"):
        index.search(randn(4), 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(randn(1, 4), 0)
    for bad in ([[0.5, 1.0, 0.0]], [[-1, 0, 1]], [[2, 1, 0]], [[-1.0, 0.0, 1.0]]):
        with pytest.raises(ValueError, match="binary codes"):
            RetrievalIndex(3, "hamming").add(torch.tensor(bad))
    with pytest.raises(ValueError, match="binary codes"):
        RetrievalIndex(3, "hamming").add(torch.tensor([[-1, 1, 1]]).to(torch.complex64))
    with pytest.raises(ValueError, match="no saved index"):
        RetrievalIndex.load(tmp_path / "missing")


def test_cosine_ranks_by_angle_not_length():
    """The nearest direction wins over a longer vector further in angle; scores are cosines."""
    query = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[30.0, 40.0], [1.0, 0.1], [-5.0, 0.0]])  # cosines 0.6, 0.995, -1
    cosines = torch.tensor([[0.6, 1 / 1.01**0.5, -1.0]])
    index = RetrievalIndex(2, "cosine")
    index.add(gallery)
    scores, indices = index.search(query * 7, 3)
    assert indices.tolist() == [[1, 0, 2]]
    torch.testing.assert_close(scores, cosines[:, [1, 0, 2]])
    torch.testing.assert_close(index.scores(query * 7), cosines)
    ip = RetrievalIndex(2, "inner_product")
    ip.add(gallery)
    assert ip.search(query, 3)[1].tolist() == [[0, 1, 2]]
