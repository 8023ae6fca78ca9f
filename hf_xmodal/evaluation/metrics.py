"""Retrieval metrics for cross-media evaluation (see the evaluation protocol).

Ranking rule: for every query the whole gallery is sorted by score, highest first, with a *stable*
sort, so items with tied scores keep gallery-index order (lower index first). Binary codes are
ranked by Hamming distance, smallest first, with the same tie rule (their score is the negative
distance). `tie_averaged_average_precision` gives the expected AP over random orders of tied items
instead.

All functions accept torch tensors or numpy arrays, run on the CPU, are vectorised over queries
and gallery items, and process the queries in chunks so that memory stays bounded. Scores are
floats (float16/bfloat16/float32, float64) or integers; higher means more similar.

Sorting uses numpy's vectorised sort on unique int64 keys (score order, gallery index, relevance
bit), which orders exactly like a stable sort and is an order of magnitude faster than a stable
`torch.sort` on CPU; float64 and int64 scores, which do not fit in such a key, use
`torch.sort(stable=True)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.layers import check_multi_hot, to_float32

Scorer = Callable[..., Any]
"""A learned metric, called as `scorer(queries, gallery, query_modality=...) -> [Q, G]` (higher =
more similar); `query_modality` is "image" (queries are images, the gallery texts) or "text", so
that an asymmetric metric gets each medium in its own slot."""
QUERY_MODALITIES = ("image", "text")

# Elements per chunk of the [queries, gallery] matrices (about 4 MB of int64 keys).
_CHUNK_ELEMENTS = 1 << 19
_KEY_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT_KEY_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32)
_METRICS = ("cosine", "inner_product", "hamming")
_RECALL_LEVELS = 11


# --------------------------------------------------------------------------------------------------
# Inputs


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a tensor or array, got {type(x).__name__}") from err


def _check_matrix(x: Any, name: str) -> torch.Tensor:
    """A non-empty 2-D tensor of finite numbers."""
    t = _as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [num_items, dim], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_ks(ks: Sequence[int], name: str = "ks") -> tuple[int, ...]:
    ks = tuple(ks)
    if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0 for k in ks):
        raise ValueError(f"{name} must be positive integers, got {ks}")
    return tuple(int(k) for k in ks)


def _check_labels(
    query_labels: Any,
    gallery_labels: Any,
    names: tuple[str, str] = ("query_labels", "gallery_labels"),
) -> tuple[torch.Tensor, torch.Tensor]:
    ql = _as_tensor(query_labels, names[0])
    gl = _as_tensor(gallery_labels, names[1])
    if ql.ndim not in (1, 2) or ql.ndim != gl.ndim:
        raise ValueError(
            "labels must be both 1-D class ids or both 2-D multi-hot, got query_labels "
            f"{tuple(ql.shape)} and gallery_labels {tuple(gl.shape)}"
        )
    if ql.ndim == 2 and ql.shape[1] != gl.shape[1]:
        raise ValueError(
            f"multi-hot labels have {ql.shape[1]} (queries) and {gl.shape[1]} (gallery) classes"
        )
    for t, name in zip((ql, gl), names, strict=True):
        if t.ndim == 2:
            check_multi_hot(t, name)
        elif t.is_floating_point() and not (t == t.round()).all():
            raise ValueError(f"{name} must be integer class ids, got non-integer or NaN values")
    return ql, gl


def _check_ranking(
    scores: Any, query_labels: Any, gallery_labels: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = _as_tensor(scores, "scores")
    ql, gl = _check_labels(query_labels, gallery_labels)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [num_queries, gallery_size], got {tuple(s.shape)}")
    if s.shape != (len(ql), len(gl)):
        raise ValueError(
            f"scores have shape {tuple(s.shape)} but there are {len(ql)} query labels and "
            f"{len(gl)} gallery labels"
        )
    if s.numel() == 0:
        raise ValueError(f"no queries or empty gallery (scores shape {tuple(s.shape)})")
    return s, ql, gl


# --------------------------------------------------------------------------------------------------
# Relevance and ranking


def relevance(query_labels: Any, gallery_labels: Any) -> torch.Tensor:
    """Relevance matrix `[Q, G]` (bool).

    1-D integer labels: same class. 2-D multi-hot labels: at least one shared label.
    """
    ql, gl = _check_labels(query_labels, gallery_labels)
    if ql.ndim == 1:
        return ql[:, None] == gl[None, :]
    return ((ql != 0).float() @ (gl != 0).float().T) > 0


def _sort_keys(scores: torch.Tensor) -> torch.Tensor | None:
    """int64 keys whose ascending order is descending score, or None if they do not fit."""
    if scores.dtype in _KEY_DTYPES:
        # 0 - s reverses the order and turns -0.0 into +0.0 so that both zeros tie.
        bits = (0.0 - scores.float()).view(torch.int32)
        # Flip the magnitude bits of negative floats so that int32 order equals float order.
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)
    if scores.dtype in _INT_KEY_DTYPES:
        return -scores.to(torch.int64)
    return None


def _rank(
    scores: torch.Tensor, rel: torch.Tensor, ties: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Relevance in ranked order `[q, G]` and, if `ties`, where each group of tied scores starts."""
    n_gallery = scores.shape[1]
    index_bits = max(1, (n_gallery - 1).bit_length())
    keys = _sort_keys(scores) if index_bits <= 30 else None
    if keys is None:
        values, order = torch.sort(scores, dim=1, descending=True, stable=True)
        ranked = rel.gather(1, order)
    else:
        shift = index_bits + 1
        keys <<= shift
        keys |= torch.arange(n_gallery, dtype=torch.int64) << 1
        keys |= rel
        keys.numpy().sort(axis=1)  # in place: the keys are unique, so this is a stable order
        ranked = (keys & 1).bool()
        values = keys >> shift
    if not ties:
        return ranked, None
    starts = torch.ones_like(ranked)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    return ranked, starts


def _ranked_chunks(
    scores_for: Callable[[int, int], torch.Tensor],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    ties: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield `_rank` outputs for consecutive chunks of queries; `scores_for(start, end)`."""
    n_queries, n_gallery = len(query_labels), len(gallery_labels)
    rows = max(1, _CHUNK_ELEMENTS // n_gallery)
    for start in range(0, n_queries, rows):
        end = min(start + rows, n_queries)
        scores = _as_tensor(scores_for(start, end), "scores").contiguous()
        if scores.shape != (end - start, n_gallery):
            raise ValueError(
                f"scores for queries {start}:{end} have shape {tuple(scores.shape)}, expected "
                f"{(end - start, n_gallery)}"
            )
        if scores.is_floating_point() and torch.isnan(scores).any():
            raise ValueError("scores contain NaN")
        yield _rank(scores, relevance(query_labels[start:end], gallery_labels), ties)


def _matrix_chunks(scores: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    return lambda start, end: scores[start:end]


def _tie_averaged_ap(ranked: torch.Tensor, cum: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Expected AP over uniformly random orders within tie groups (McSherry & Najork, 2008).

    A group of n tied items at ranks a+1..a+n holding r relevant items, after c relevant items,
    adds sum_j (r/n)·(c + 1 + (j-1)(r-1)/(n-1)) / (a+j) to sum_k P(k)·rel(k).
    """
    n_gallery = ranked.shape[1]
    pos = torch.arange(n_gallery).expand_as(ranked)
    start = torch.where(starts, pos, 0).cummax(1).values
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    end = torch.where(ends, pos, n_gallery - 1).flip(1).cummin(1).values.flip(1)
    size = (end - start + 1).double()
    before = (cum - ranked.int()).gather(1, start).double()
    in_group = cum.gather(1, end).double() - before
    within = (pos - start).double()
    spread = torch.where(size > 1, within * (in_group - 1) / (size - 1).clamp(min=1), 0.0)
    terms = in_group / size * (before + 1 + spread) / (pos + 1)
    return terms.sum(1) / cum[:, -1].clamp(min=1)


def _query_stats(
    chunks: Iterator[tuple[torch.Tensor, torch.Tensor | None]],
    map_ks: Sequence[int] = (),
    precision_ks: Sequence[int] = (),
    hit_ks: Sequence[int] = (),
    tie_averaged: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-query statistics from ranked relevance chunks; k beyond the gallery is clamped."""
    out: dict[str, list[torch.Tensor]] = {}

    def put(key: str, value: torch.Tensor) -> None:
        out.setdefault(key, []).append(value)

    for ranked, starts in chunks:
        n_gallery = ranked.shape[1]
        cum = ranked.cumsum(1, dtype=torch.int32)
        n_rel = cum[:, -1]
        precision = cum / torch.arange(1, n_gallery + 1, dtype=torch.float32)
        contrib = precision.masked_fill_(~ranked, 0.0)
        put("num_relevant", n_rel)
        put("ap", contrib.sum(1, dtype=torch.float64) / n_rel.clamp(min=1))
        for k in map_ks:
            top = min(k, n_gallery)
            found = cum[:, top - 1].clamp(min=1)
            put(f"ap@{k}", contrib[:, :top].sum(1, dtype=torch.float64) / found)
        for k in precision_ks:
            top = min(k, n_gallery)
            put(f"p@{k}", cum[:, top - 1].double() / top)
        for k in hit_ks:
            put(f"hit@{k}", cum[:, min(k, n_gallery) - 1] > 0)
        if tie_averaged:
            put("ap_tie", _tie_averaged_ap(ranked, cum, starts))
    return {key: torch.cat(values) for key, values in out.items()}


# --------------------------------------------------------------------------------------------------
# Ranking metrics on a score matrix


def average_precision(
    scores: Any, query_labels: Any, gallery_labels: Any, k: int | None = None
) -> torch.Tensor:
    """Average precision of every query, `[Q]` (float64).

    AP@all = (1/R) Σ_k P(k)·rel(k) over the whole ranking, R = number of relevant gallery items.
    AP@k sums over the top k only and divides by the number of relevant items *within the top k*
    (the convention of public cross-modal code, e.g. DCMH's `calc_map_k`); k beyond the gallery
    size is clamped. A query with no relevant item (in the top k) gets AP 0.
    """
    s, ql, gl = _check_ranking(scores, query_labels, gallery_labels)
    if k is None:
        return _query_stats(_ranked_chunks(_matrix_chunks(s), ql, gl))["ap"]
    (k,) = _check_ks((k,), "k")
    return _query_stats(_ranked_chunks(_matrix_chunks(s), ql, gl), map_ks=(k,))[f"ap@{k}"]


def mean_average_precision(
    scores: Any, query_labels: Any, gallery_labels: Any, k: int | None = None
) -> float:
    """MAP: mean of `average_precision` over all queries (those without relevant items count 0)."""
    return average_precision(scores, query_labels, gallery_labels, k).mean().item()


def tie_averaged_average_precision(
    scores: Any, query_labels: Any, gallery_labels: Any
) -> torch.Tensor:
    """Expected AP@all of every query, `[Q]`, over uniformly random orders of tied items.

    McSherry & Najork (ECIR 2008); equals `average_precision` when there are no ties.
    """
    s, ql, gl = _check_ranking(scores, query_labels, gallery_labels)
    chunks = _ranked_chunks(_matrix_chunks(s), ql, gl, ties=True)
    return _query_stats(chunks, tie_averaged=True)["ap_tie"]


def precision_at_k(
    scores: Any, query_labels: Any, gallery_labels: Any, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Mean precision in the top k, `{k: P@k}`; k beyond the gallery size is clamped."""
    s, ql, gl = _check_ranking(scores, query_labels, gallery_labels)
    ks = _check_ks(ks)
    stats = _query_stats(_ranked_chunks(_matrix_chunks(s), ql, gl), precision_ks=ks)
    return {k: stats[f"p@{k}"].mean().item() for k in ks}


def precision_recall_curve(
    scores: Any, query_labels: Any, gallery_labels: Any
) -> dict[str, torch.Tensor]:
    """Precision-recall curves averaged over queries.

    Returns `precision` and `recall` `[G]`: mean precision and recall at rank cut-offs 1..G
    (recall of a query without relevant items is 0), and `recall_levels` (0, 0.1, ..., 1) with
    `interpolated_precision`: for each query the maximum precision at any cut-off whose recall is
    at least the level (0 for a query without relevant items), averaged over queries.
    """
    s, ql, gl = _check_ranking(scores, query_labels, gallery_labels)
    n_gallery = len(gl)
    ranks = torch.arange(1, n_gallery + 1, dtype=torch.float32)
    levels = torch.arange(_RECALL_LEVELS, dtype=torch.int64)
    precision_sum = torch.zeros(n_gallery, dtype=torch.float64)
    recall_sum = torch.zeros(n_gallery, dtype=torch.float64)
    interpolated_sum = torch.zeros(_RECALL_LEVELS, dtype=torch.float64)
    for ranked, _ in _ranked_chunks(_matrix_chunks(s), ql, gl):
        cum = ranked.cumsum(1, dtype=torch.int64)
        n_rel = cum[:, -1:]
        precision = cum / ranks
        precision_sum += precision.sum(0, dtype=torch.float64)
        recall_sum += (cum / n_rel.clamp(min=1)).sum(0, dtype=torch.float64)
        # First cut-off with recall >= level/10, compared exactly in integers: 10·cum >= level·R.
        first = torch.searchsorted((cum * (_RECALL_LEVELS - 1)).contiguous(), levels * n_rel)
        best_after = precision.flip(1).cummax(1).values.flip(1)
        interpolated_sum += best_after.gather(1, first).sum(0, dtype=torch.float64)
    n_queries = len(ql)
    return {
        "precision": precision_sum / n_queries,
        "recall": recall_sum / n_queries,
        "recall_levels": levels.double() / (_RECALL_LEVELS - 1),
        "interpolated_precision": interpolated_sum / n_queries,
    }


def recall_at_k(
    scores: Any, query_ids: Any, gallery_ids: Any, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Fraction of queries with at least one gallery item of the same id in the top k.

    Image→text on Flickr8k: a hit if any of the image's captions is in the top k; text→image: if
    the caption's own image is. Ids may be ints (or multi-hot, via `relevance`).
    """
    s, qi, gi = _check_ranking(scores, query_ids, gallery_ids)
    ks = _check_ks(ks)
    stats = _query_stats(_ranked_chunks(_matrix_chunks(s), qi, gi), hit_ks=ks)
    return {k: stats[f"hit@{k}"].double().mean().item() for k in ks}


# --------------------------------------------------------------------------------------------------
# Binary codes


def _signed_codes(codes: Any, name: str) -> torch.Tensor:
    """Binary codes given as {-1, +1}, {0, 1} or bool, as a float32 ±1 matrix."""
    c = _check_matrix(codes, name)
    if c.dtype == torch.bool or ((c == 0) | (c == 1)).all():
        return c.float() * 2 - 1
    if ((c == -1) | (c == 1)).all():
        return c.float()
    raise ValueError(f"{name} must hold binary codes with values in {{-1, +1}} or {{0, 1}}")


def _hamming_from_signed(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"codes have {queries.shape[1]} (queries) and {gallery.shape[1]} (gallery) bits"
        )
    # For ±1 codes of B bits: <q, g> = B - 2·distance.
    return ((queries.shape[1] - queries @ gallery.T) / 2).round_().to(torch.int32)


def hamming_distance(query_codes: Any, gallery_codes: Any) -> torch.Tensor:
    """Hamming distances `[Q, G]` (int32) between codes given as {-1, +1} or {0, 1} values."""
    return _hamming_from_signed(
        _signed_codes(query_codes, "query_codes"), _signed_codes(gallery_codes, "gallery_codes")
    )


def hamming_scores(query_codes: Any, gallery_codes: Any) -> torch.Tensor:
    """Negative Hamming distances, so that the ranking metrics apply to codes unchanged."""
    return -hamming_distance(query_codes, gallery_codes)


def precision_recall_within_hamming_radius(
    query_codes: Any,
    gallery_codes: Any,
    query_labels: Any,
    gallery_labels: Any,
    radii: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Precision and recall of the gallery items within Hamming distance ≤ r, per radius.

    Returns `radius`, `precision` and `recall` (averaged over queries). A query with nothing
    within r has precision 0; one without relevant items has recall 0. Default radii: 0..bits.
    """
    q = _signed_codes(query_codes, "query_codes")
    g = _signed_codes(gallery_codes, "gallery_codes")
    ql, gl = _check_labels(query_labels, gallery_labels)
    if len(ql) != len(q) or len(gl) != len(g):
        raise ValueError(
            f"{len(q)} query codes with {len(ql)} labels, {len(g)} gallery codes with {len(gl)}"
        )
    n_bits = q.shape[1]
    if radii is None:
        radii = range(n_bits + 1)
    radii = torch.as_tensor(list(radii), dtype=torch.int64)
    if radii.ndim != 1 or len(radii) == 0 or (radii < 0).any():
        raise ValueError(f"radii must be non-negative integers, got {radii.tolist()}")
    columns = radii.clamp(max=n_bits)
    precision_sum = torch.zeros(len(radii), dtype=torch.float64)
    recall_sum = torch.zeros(len(radii), dtype=torch.float64)
    rows = max(1, _CHUNK_ELEMENTS // len(g))
    for start in range(0, len(q), rows):
        dist = _hamming_from_signed(q[start : start + rows], g).long()
        rel = relevance(ql[start : start + rows], gl)
        # Histogram of distances per query (all items and relevant ones), then cumulate over r.
        within = torch.zeros(len(dist), n_bits + 1).scatter_add_(1, dist, torch.ones(dist.shape))
        within_rel = torch.zeros(len(dist), n_bits + 1).scatter_add_(1, dist, rel.float())
        within, within_rel = within.cumsum(1)[:, columns], within_rel.cumsum(1)[:, columns]
        n_rel = rel.sum(1, keepdim=True)
        precision_sum += (within_rel / within.clamp(min=1)).sum(0, dtype=torch.float64)
        recall_sum += (within_rel / n_rel.clamp(min=1)).sum(0, dtype=torch.float64)
    return {"radius": radii, "precision": precision_sum / len(q), "recall": recall_sum / len(q)}


def precision_at_hamming_radius(
    query_codes: Any, gallery_codes: Any, query_labels: Any, gallery_labels: Any, radius: int = 2
) -> float:
    """Mean precision of the items within Hamming radius `radius` (0 when there are none)."""
    curve = precision_recall_within_hamming_radius(
        query_codes, gallery_codes, query_labels, gallery_labels, radii=(radius,)
    )
    return curve["precision"].item()


# --------------------------------------------------------------------------------------------------
# Scoring and end-to-end evaluation


def pairwise_scores(
    queries: Any,
    gallery: Any,
    metric: str | Scorer = "cosine",
    query_modality: str | None = None,
) -> torch.Tensor:
    """Score matrix `[Q, G]`, higher = more similar.

    `metric`: "cosine" (L2-normalised inner product), "inner_product", "hamming" (negative
    Hamming distance of binary codes), or a callable `Scorer`, which needs `query_modality`
    ("image" or "text": the medium of the queries). Float scores are float32.
    """
    if callable(metric):
        if query_modality not in QUERY_MODALITIES:
            raise ValueError(
                f"a callable metric needs query_modality in {QUERY_MODALITIES}, "
                f"got {query_modality!r}"
            )
        scores = _as_tensor(
            metric(queries, gallery, query_modality=query_modality), "scorer output"
        )
        expected = (len(queries), len(gallery))
        if scores.shape != expected:
            raise ValueError(f"scorer returned shape {tuple(scores.shape)}, expected {expected}")
        return scores
    if metric == "hamming":
        return hamming_scores(queries, gallery)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS} or a callable, got {metric!r}")
    q = to_float32(_as_tensor(queries, "queries"), "queries")
    g = to_float32(_as_tensor(gallery, "gallery"), "gallery")
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(
            f"queries {tuple(q.shape)} and gallery {tuple(g.shape)} must be 2-D with equal dims"
        )
    if metric == "cosine":
        q, g = F.normalize(q, dim=1), F.normalize(g, dim=1)
    return q @ g.T


def _prepare_pair(
    image_embeds: Any, text_embeds: Any, metric: str | Scorer
) -> tuple[torch.Tensor, torch.Tensor, str | Scorer]:
    """Validate both embedding matrices and turn them into what per-chunk scoring needs."""
    if not callable(metric) and metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS} or a callable, got {metric!r}")
    images = _check_matrix(image_embeds, "image_embeds")
    texts = _check_matrix(text_embeds, "text_embeds")
    if callable(metric):
        return images, texts, metric
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"image_embeds have dim {images.shape[1]} but text_embeds have dim {texts.shape[1]}"
        )
    if metric == "hamming":
        return _signed_codes(images, "image_embeds"), _signed_codes(texts, "text_embeds"), metric
    images, texts = to_float32(images, "image_embeds"), to_float32(texts, "text_embeds")
    if metric == "cosine":
        images, texts = F.normalize(images, dim=1), F.normalize(texts, dim=1)
    return images, texts, "inner_product"


def _direction_scores(
    queries: torch.Tensor, gallery: torch.Tensor, metric: str | Scorer, query_modality: str
) -> Callable[[int, int], torch.Tensor]:
    if metric == "hamming":
        return lambda start, end: -_hamming_from_signed(queries[start:end], gallery)
    if callable(metric):
        return lambda start, end: pairwise_scores(
            queries[start:end], gallery, metric, query_modality
        )
    return lambda start, end: queries[start:end] @ gallery.T


def _check_lengths(embeds: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if len(embeds) != len(labels):
        raise ValueError(f"{len(embeds)} {what} embeddings but {len(labels)} {what} labels")


def evaluate_retrieval(
    image_embeds: Any,
    text_embeds: Any,
    image_labels: Any,
    text_labels: Any,
    metric: str | Scorer = "cosine",
    ks: Sequence[int] = (10, 50, 100),
    tie_averaged: bool = False,
) -> dict[str, float]:
    """Label-based cross-media retrieval in both directions.

    image→text ranks all texts for each image query; text→image all images for each text.
    `metric`: "cosine", "inner_product", "hamming" (binary codes) or a callable `Scorer`
    (higher = more similar), called on chunks of queries as
    `scorer(images, texts, query_modality="image")` for image→text and
    `scorer(texts, images, query_modality="text")` for text→image.

    Returns `map_{i2t,t2i,avg}` (MAP@all), `map@{k}_*` and `precision@{k}_*` for k in `ks`,
    `queries_without_relevant_*`, `num_queries_*`, with codes also `precision@hamming2_*`, and
    with `tie_averaged` the expected MAP over random orders of tied items, `map_tie_averaged_*`.
    """
    ks = _check_ks(ks)
    images, texts, metric = _prepare_pair(image_embeds, text_embeds, metric)
    il, tl = _check_labels(image_labels, text_labels, ("image_labels", "text_labels"))
    _check_lengths(images, il, "image")
    _check_lengths(texts, tl, "text")
    results: dict[str, float] = {}
    directions = {
        "i2t": ("image", images, texts, il, tl),
        "t2i": ("text", texts, images, tl, il),
    }
    for name, (modality, queries, gallery, ql, gl) in directions.items():
        scores_for = _direction_scores(queries, gallery, metric, modality)
        chunks = _ranked_chunks(scores_for, ql, gl, tie_averaged)
        stats = _query_stats(chunks, map_ks=ks, precision_ks=ks, tie_averaged=tie_averaged)
        results[f"map_{name}"] = stats["ap"].mean().item()
        for k in ks:
            results[f"map@{k}_{name}"] = stats[f"ap@{k}"].mean().item()
            results[f"precision@{k}_{name}"] = stats[f"p@{k}"].mean().item()
        if tie_averaged:
            results[f"map_tie_averaged_{name}"] = stats["ap_tie"].mean().item()
        if metric == "hamming":
            results[f"precision@hamming2_{name}"] = precision_at_hamming_radius(
                queries, gallery, ql, gl, radius=2
            )
        results[f"queries_without_relevant_{name}"] = int((stats["num_relevant"] == 0).sum())
        results[f"num_queries_{name}"] = len(queries)
    for key in ["map", "map_tie_averaged", *(f"map@{k}" for k in ks)]:
        if f"{key}_i2t" in results:
            results[f"{key}_avg"] = (results[f"{key}_i2t"] + results[f"{key}_t2i"]) / 2
    return results


def evaluate_caption_retrieval(
    image_embeds: Any,
    text_embeds: Any,
    text_image_index: Any,
    metric: str | Scorer = "cosine",
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K for pair-matched data such as Flickr8k (`text_image_index[i]` = image of caption i).

    Returns `r@{k}_i2t` (a hit if any of the image's captions is in the top k), `r@{k}_t2i` (a
    hit if the caption's own image is) as fractions in [0, 1], their sum `rsum` (the usual rsum
    divided by 100), and `queries_without_relevant_i2t` (images without any caption).
    """
    ks = _check_ks(ks)
    images, texts, metric = _prepare_pair(image_embeds, text_embeds, metric)
    text_ids = _as_tensor(text_image_index, "text_image_index")
    if text_ids.ndim != 1 or text_ids.is_floating_point() or text_ids.dtype == torch.bool:
        raise ValueError("text_image_index must be a 1-D integer array")
    _check_lengths(texts, text_ids, "text")
    if (text_ids < 0).any() or (text_ids >= len(images)).any():
        raise ValueError(f"text_image_index values must be image rows in [0, {len(images)})")
    image_ids = torch.arange(len(images))
    results: dict[str, float] = {}
    directions = {
        "i2t": ("image", images, texts, image_ids, text_ids),
        "t2i": ("text", texts, images, text_ids, image_ids),
    }
    for name, (modality, queries, gallery, qi, gi) in directions.items():
        chunks = _ranked_chunks(_direction_scores(queries, gallery, metric, modality), qi, gi)
        stats = _query_stats(chunks, hit_ks=ks)
        for k in ks:
            results[f"r@{k}_{name}"] = stats[f"hit@{k}"].double().mean().item()
        if name == "i2t":
            results["queries_without_relevant_i2t"] = int((stats["num_relevant"] == 0).sum())
    results["rsum"] = sum(results[f"r@{k}_{d}"] for k in ks for d in ("i2t", "t2i"))
    return results
