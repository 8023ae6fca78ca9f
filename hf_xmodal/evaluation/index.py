"""A small retrieval index over gallery embeddings or binary codes.

Float embeddings live in a FAISS `IndexFlatIP` (metric "cosine" normalises on add and search, or
"inner_product"); binary codes in an `IndexBinaryFlat`, packed to bits, with metric "hamming"
(scores are negative distances). Codes are given as {-1, +1} or {0, 1} values `[n, bits]`, or
already packed: uint8 `[n, ceil(bits / 8)]` as `np.packbits` writes them. A callable metric (a
learned metric network, such as a model's `similarity`, reported as "learned") scores the whole
gallery in torch as `scorer(queries, gallery, query_modality=...)`; the index is told which medium
its queries are.

Each vector is stored once, in the FAISS index; torch reads it in place. `search` returns the top
k, best first. Codes are searched by FAISS's exhaustive Hamming top k, whose equal distances come
in gallery order (lower index first), the tie rule of `hf_xmodal.evaluation.metrics`: a single
query on one thread with a heap, a batch on all of FAISS's threads counting per distance, with
few waits for each other (see `_hamming_search`). Floats are searched by torch, a matrix
product per block of the gallery and a top k narrowed by slab maxima (FAISS's flat search is
slower here: one thread for a single query, its own BLAS for batches; see
`scripts/benchmark_search.py`); exact ties among float scores may come in either order. `scores`
returns the full score matrix computed in torch: evaluation ranks that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ..files import atomic_write
from ..models.layers import to_float32
from .metrics import QUERY_MODALITIES, Scorer, _as_tensor, _hamming_from_signed, _signed_codes

_INDEX_FILE = "index.faiss"
_CONFIG_FILE = "index.json"
_FLOAT_METRICS = ("cosine", "inner_product")
_SEARCH_ELEMENTS = 1 << 22
# A float top k first keeps the k best columns of the rows' maxima over this many slabs, when it
# selects from at least _SLAB_MIN_SCORES scores (below, its extra steps, each a wait for all
# threads, risk more on a busy machine than they save).
_SLABS = 16
_SLAB_MIN_SCORES = 1 << 21
# Counters FAISS's counting Hamming top k may allocate (queries x k x (bits + 1)); beyond, a heap.
_COUNTING_MAX_SLOTS = 1 << 22
# Bytes of codes a batch's Hamming threads scan between two waits for each other.
_HAMMING_BLOCK_BYTES = 32 << 20


def _check_scores(scores: torch.Tensor, what: str) -> torch.Tensor:
    """`scores` if every one is finite; otherwise an error saying where they came from."""
    if scores.is_floating_point() and not torch.isfinite(scores).all():
        rows = (~torch.isfinite(scores)).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what} NaN or inf scores (query rows {rows}...)")
    return scores


def _code_bits(codes: torch.Tensor, name: str) -> np.ndarray:
    """The bits of codes given as {-1, +1} or {0, 1} values (or bool), checked in numpy (a few
    microseconds for a query); other values get `_signed_codes`' error."""
    if codes.is_complex():
        raise ValueError(f"{name} must hold real binary codes, got {codes.dtype}")
    values = (codes.float() if codes.dtype == torch.bfloat16 else codes).numpy()
    bits = values > 0
    if values.dtype == np.bool_:
        return bits
    low, high = values.min(), values.max()
    if values.dtype.kind in "iu":  # within [-1, 1], and no 0 beside a -1
        valid = low >= -1 and high <= 1 and (low >= 0 or np.count_nonzero(values) == values.size)
    else:
        valid = ((values == bits) if low >= 0 else (np.abs(values) == 1)).all()
    if not valid:
        _signed_codes(codes, name)  # raises, naming what is wrong
    return bits


def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`scores.topk(k, dim=1)`, selecting from fewer values: each row's columns are cut into
    `_SLABS` slabs, and only the k columns with the best maxima across slabs can hold the k best
    scores (every score above the k-th best lies in a column whose maximum is above it too)."""
    rows, n = scores.shape
    width = n // _SLABS
    if width < 32 * k or rows * n < _SLAB_MIN_SCORES:
        return scores.topk(k, dim=1)
    covered = width * _SLABS
    columns = scores[:, :covered].view(rows, _SLABS, width).amax(dim=1).topk(k, dim=1).indices
    slabs = torch.arange(0, covered, width)
    candidates = (columns[:, None, :] + slabs[:, None]).view(rows, _SLABS * k)
    if covered < n:
        candidates = torch.cat([candidates, torch.arange(covered, n).expand(rows, -1)], dim=1)
    values, order = scores.gather(1, candidates).topk(k, dim=1)
    return values, candidates.gather(1, order)


class RetrievalIndex:
    """Gallery index for cross-media search.

    Args:
        dim: embedding size, or number of bits for metric "hamming".
        metric: "cosine", "inner_product", "hamming", or a callable
            `scorer(queries, gallery, query_modality=...)` returning a `[Q, N]` score matrix
            (higher = more similar).
        query_modality: with a callable metric, the medium of the queries, "image" (the
            gallery holds texts) or "text" (it holds images).
    """

    def __init__(
        self, dim: int, metric: str | Scorer = "cosine", query_modality: str | None = None
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not callable(metric) and metric not in (*_FLOAT_METRICS, "hamming"):
            raise ValueError(
                f"metric must be 'cosine', 'inner_product', 'hamming' or a callable, got {metric!r}"
            )
        if callable(metric) and query_modality not in QUERY_MODALITIES:
            raise ValueError(
                f"a callable metric needs query_modality in {QUERY_MODALITIES}, "
                f"got {query_modality!r}"
            )
        if not callable(metric) and query_modality is not None:
            raise ValueError("query_modality only applies to a callable metric")
        self.query_modality = query_modality
        self.dim = int(dim)
        self._scorer = metric if callable(metric) else None
        self.metric = "learned" if callable(metric) else metric
        self._code_bytes = (self.dim + 7) // 8
        if self.metric in _FLOAT_METRICS:
            self._faiss = faiss.IndexFlatIP(self.dim)
            self._view = torch.empty(0, self.dim)  # the gallery as torch reads it, see `_stored`
        elif self.metric == "hamming":
            self._faiss = faiss.IndexBinaryFlat(8 * self._code_bytes)
        else:
            self._faiss = None
            self._embeddings = torch.empty(0, self.dim)  # what a learned scorer compares

    def __len__(self) -> int:
        return len(self._embeddings) if self._faiss is None else self._faiss.ntotal

    def __repr__(self) -> str:
        return f"RetrievalIndex(dim={self.dim}, metric={self.metric!r}, size={len(self)})"

    def _prepare(self, x: Any, name: str) -> torch.Tensor | np.ndarray:
        """Validate a batch and bring it to the stored form: packed codes (uint8 numpy), or
        contiguous float32 (normalised for "cosine"), or as given for a learned scorer."""
        t = _as_tensor(x, name)
        if self._is_packed(t):
            return self._check_packed(t.numpy(), name)
        if t.ndim != 2 or t.shape[1] != self.dim:
            expected = f"[n, {self.dim}]"
            if self.metric == "hamming":
                expected += f" (or packed bits: uint8 [n, {self._code_bytes}])"
            raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
        if self.metric == "hamming":
            if not len(t):
                return np.zeros((0, self._code_bytes), np.uint8)
            return np.packbits(_code_bits(t, name), axis=1)
        t = to_float32(t, name)
        if self._scorer is not None:
            return t
        return (F.normalize(t, dim=1) if self.metric == "cosine" else t).contiguous()

    def _is_packed(self, t: torch.Tensor) -> bool:
        """Codes of more than one bit given packed: uint8 `[n, ceil(dim / 8)]`."""
        packed_shape = t.ndim == 2 and t.shape[1] == self._code_bytes != self.dim
        return self.metric == "hamming" and t.dtype == torch.uint8 and packed_shape

    def _check_packed(self, packed: np.ndarray, name: str) -> np.ndarray:
        """Packed codes whose bits beyond `dim` (the padding of the last byte) are zero."""
        spare = 8 * self._code_bytes - self.dim
        if spare and (packed[:, -1] & ((1 << spare) - 1)).any():
            raise ValueError(
                f"{name}: packed codes of {self.dim} bits must leave the last {spare} bits of "
                "each row zero (np.packbits does)"
            )
        return np.ascontiguousarray(packed)

    def _stored(self) -> torch.Tensor:
        """The gallery as `scores` compares it: ±1 float codes, or a view of the stored floats."""
        n = len(self)
        if self._faiss is None:
            return self._embeddings
        if self.metric == "hamming":
            packed = faiss.rev_swig_ptr(self._faiss.xb.data(), n * self._code_bytes)
            bits = np.unpackbits(packed.reshape(n, self._code_bytes), axis=1, count=self.dim)
            return torch.from_numpy(bits).float() * 2 - 1
        # A view of FAISS's own storage, valid until the next `add` (which changes the size).
        if len(self._view) != n:
            data = faiss.rev_swig_ptr(self._faiss.get_xb(), n * self.dim)
            self._view = torch.from_numpy(data).view(n, self.dim)
        return self._view

    def add(self, embeddings: Any) -> None:
        """Append `[n, dim]` embeddings (or codes) to the gallery; their ids continue from len()."""
        x = self._prepare(embeddings, "embeddings")
        if self._faiss is None:
            self._embeddings = torch.cat([self._embeddings.to(x.dtype), x])
        elif self.metric == "hamming":
            self._faiss.add(x)
        else:
            self._faiss.add(x.numpy())

    def scores(self, queries: Any) -> torch.Tensor:
        """Full score matrix `[Q, len(self)]` computed in torch (negative distances for codes)."""
        q = self._prepare(queries, "queries")
        if self.metric == "hamming":
            signed = torch.from_numpy(np.unpackbits(q, axis=1, count=self.dim)).float() * 2 - 1
            return -_hamming_from_signed(signed, self._stored())
        if self._scorer is not None:
            scores = self._scorer(q, self._embeddings, query_modality=self.query_modality)
            scores = _as_tensor(scores, "scorer output")
            if scores.shape != (len(q), len(self)):
                raise ValueError(
                    f"scorer returned shape {tuple(scores.shape)}, expected {(len(q), len(self))}"
                )
            return _check_scores(scores, "the scorer returned")
        return _check_scores(q @ self._stored().T, "inner products overflow float32:")

    def search(self, queries: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k `(scores, indices)`, both `[Q, k]`, best first.

        k larger than the index is clamped to its size. For "hamming" the scores are negative
        distances, and equal distances come in gallery order, as do tied learned scores.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n = len(self)
        if n == 0:
            raise ValueError("cannot search an empty index: add embeddings first")
        q = self._prepare(queries, "queries")
        k = min(int(k), n)
        if self.metric == "hamming":
            return self._hamming_search(q, k)
        if self._scorer is None:
            scores, indices = self._float_search(q, k)
            return _check_scores(scores, "inner products overflow float32:"), indices
        rows = max(1, _SEARCH_ELEMENTS // len(self))
        top_scores, top_indices = [], []
        for start in range(0, len(q), rows):
            scores = self.scores(q[start : start + rows])
            values, order = torch.sort(scores, dim=1, descending=True, stable=True)
            top_scores.append(values[:, :k])
            top_indices.append(order[:, :k])
        return torch.cat(top_scores), torch.cat(top_indices)

    def _hamming_search(self, q: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FAISS's exhaustive Hamming top k, which keeps the lowest gallery index among equal
        distances, whether it selects with a heap or by counting per distance.

        FAISS shares out queries, not gallery rows, and its threads wait for each other after
        each block of the gallery. A single query runs on one thread with a heap, without idle
        threads to wait for (on a busy machine they stall it). A batch runs on all of FAISS's
        threads, all its queries at once over blocks of `_HAMMING_BLOCK_BYTES` (a few waits, not
        one per 64k codes), counting per distance (faster than the heap for a batch) unless the
        counters would exceed `_COUNTING_MAX_SLOTS`.
        """
        batch = len(q) > 1
        slots = len(q) * k * (8 * self._code_bytes + 1)
        self._faiss.use_heap = not batch or slots > _COUNTING_MAX_SLOTS
        self._faiss.query_batch_size = len(q)
        # FAISS's thread count (of the calling thread) and gallery block, restored after.
        threads, block = faiss.omp_get_max_threads(), faiss.cvar.hamming_batch_size
        try:
            if batch:
                faiss.cvar.hamming_batch_size = max(block, _HAMMING_BLOCK_BYTES // self._code_bytes)
            else:
                faiss.omp_set_num_threads(1)
            distances, indices = self._faiss.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)
            faiss.cvar.hamming_batch_size = block
        return torch.from_numpy(np.negative(distances, out=distances)), torch.from_numpy(indices)

    def _float_search(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top k by matrix products over blocks of the gallery (each read once per batch), the
        k best of each block merged at the end."""
        gallery = self._stored()
        block = max(k, _SEARCH_ELEMENTS // max(1, len(q)))
        if block >= len(gallery):
            return _topk(q @ gallery.T, k)
        values, indices = [], []
        for start in range(0, len(gallery), block):
            part = gallery[start : start + block]
            top_values, top_indices = _topk(q @ part.T, min(k, len(part)))
            values.append(top_values)
            indices.append(top_indices + start)
        best = torch.cat(values, dim=1).topk(k, dim=1)
        return best.values, torch.cat(indices, dim=1).gather(1, best.indices)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `index.faiss` and `index.json` (metric, dim, size) into `directory`, atomically."""
        if self._scorer is not None:
            raise ValueError(
                "an index with a learned metric cannot be saved: the scorer is the model, not "
                "part of the index; save the model and rebuild the index from its embeddings"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.metric == "hamming":
            data = faiss.serialize_index_binary(self._faiss)
        else:
            data = faiss.serialize_index(self._faiss)
        atomic_write(directory / _INDEX_FILE, data.tobytes())
        config = {"metric": self.metric, "dim": self.dim, "size": len(self)}
        atomic_write(directory / _CONFIG_FILE, json.dumps(config, indent=2).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RetrievalIndex:
        """Load an index written by `save`."""
        directory = Path(directory)
        config_path, index_path = directory / _CONFIG_FILE, directory / _INDEX_FILE
        if not config_path.is_file() or not index_path.is_file():
            raise ValueError(
                f"no saved index in {directory} (expected {_CONFIG_FILE}, {_INDEX_FILE})"
            )
        try:
            config = json.loads(config_path.read_text())
            index = cls(config["dim"], config["metric"])
            size = int(config["size"])
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(
                f"{config_path} is damaged: expected JSON with metric, dim and size as "
                f"written by RetrievalIndex.save ({type(e).__name__}: {e})"
            ) from None
        data = np.frombuffer(index_path.read_bytes(), dtype=np.uint8)
        kind = "binary" if index.metric == "hamming" else "float"
        width = index._faiss.d
        try:
            if index.metric == "hamming":
                index._faiss = faiss.deserialize_index_binary(data)
            else:
                index._faiss = faiss.deserialize_index(data)
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1]
            raise ValueError(
                f"{index_path} is damaged or truncated ({len(data)} bytes): expected a FAISS "
                f"{kind} index of {size} vectors of dim {index.dim} ({reason})"
            ) from None
        if index._faiss.d != width:
            raise ValueError(f"{index_path} holds vectors of width {index._faiss.d}, not {width}")
        n = index._faiss.ntotal
        if n != size:
            raise ValueError(f"{index_path} holds {n} vectors but {config_path} says {size}")
        return index
