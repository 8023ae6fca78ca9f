"""A small retrieval index over gallery embeddings or binary codes.

Float embeddings live in a FAISS `IndexFlatIP` (metric "cosine" normalises on add and search, or
"inner_product"); binary codes ({-1, +1} or {0, 1}) in an `IndexBinaryFlat`, packed to bits, with
metric "hamming" (scores are negative distances). A callable metric (a learned metric network,
such as a model's `similarity`, reported as "learned") scores the whole gallery in torch as
`scorer(queries, gallery, query_modality=...)`; the index is told which medium its queries are.

`search` returns the top k; FAISS does not guarantee an order among tied scores. `scores` returns
the full score matrix computed in torch from the stored vectors: evaluation ranks that, so that
the tie rule of `hf_xmodal.evaluation.metrics` holds.
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


def _check_scores(scores: torch.Tensor, what: str) -> torch.Tensor:
    """`scores` if every one is finite; otherwise an error saying where they came from."""
    if scores.is_floating_point() and not torch.isfinite(scores).all():
        rows = (~torch.isfinite(scores)).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what} NaN or inf scores (query rows {rows}...)")
    return scores


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
        if self.metric in _FLOAT_METRICS:
            self._faiss = faiss.IndexFlatIP(self.dim)
        elif self.metric == "hamming":
            self._faiss = faiss.IndexBinaryFlat(8 * ((self.dim + 7) // 8))
        else:
            self._faiss = None
        # What `scores` compares against: normalised floats, ±1 codes, or the raw embeddings.
        self._vectors = torch.empty(0, self.dim)

    def __len__(self) -> int:
        return len(self._vectors)

    def __repr__(self) -> str:
        return f"RetrievalIndex(dim={self.dim}, metric={self.metric!r}, size={len(self)})"

    def _prepare(self, x: Any, name: str) -> torch.Tensor:
        """Validate a batch and bring it to the stored form."""
        t = _as_tensor(x, name)
        if t.ndim != 2 or t.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape [n, {self.dim}], got {tuple(t.shape)}")
        if self.metric == "hamming":
            return _signed_codes(t, name) if len(t) else t.float()
        t = to_float32(t, name)
        return F.normalize(t, dim=1) if self.metric == "cosine" else t

    @staticmethod
    def _pack(codes: torch.Tensor) -> np.ndarray:
        return np.packbits((codes > 0).numpy(), axis=1)

    def add(self, embeddings: Any) -> None:
        """Append `[n, dim]` embeddings (or codes) to the gallery; their ids continue from len()."""
        x = self._prepare(embeddings, "embeddings")
        if self.metric == "hamming":
            self._faiss.add(self._pack(x))
            x = x.to(torch.int8)
        elif self._faiss is not None:
            self._faiss.add(np.ascontiguousarray(x.numpy()))
        self._vectors = torch.cat([self._vectors.to(x.dtype), x])

    def _stored(self) -> torch.Tensor:
        return self._vectors.float() if self.metric == "hamming" else self._vectors

    def scores(self, queries: Any) -> torch.Tensor:
        """Full score matrix `[Q, len(self)]` computed in torch (negative distances for codes)."""
        q = self._prepare(queries, "queries")
        if self.metric == "hamming":
            return -_hamming_from_signed(q, self._stored())
        if self._scorer is not None:
            scores = self._scorer(q, self._vectors, query_modality=self.query_modality)
            scores = _as_tensor(scores, "scorer output")
            if scores.shape != (len(q), len(self)):
                raise ValueError(
                    f"scorer returned shape {tuple(scores.shape)}, expected {(len(q), len(self))}"
                )
            return _check_scores(scores, "the scorer returned")
        return _check_scores(q @ self._vectors.T, "inner products overflow float32:")

    def search(self, queries: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k `(scores, indices)`, both `[Q, k]`, best first.

        k larger than the index is clamped to its size. For "hamming" the scores are negative
        distances. Tied scores come in FAISS's order, except for a callable metric, which uses a
        stable sort (lower index first).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if len(self) == 0:
            raise ValueError("cannot search an empty index: add embeddings first")
        q = self._prepare(queries, "queries")
        k = min(int(k), len(self))
        if self.metric == "hamming":
            distances, indices = self._faiss.search(self._pack(q), k)
            return -torch.from_numpy(distances), torch.from_numpy(indices)
        if self._faiss is not None:
            scores, indices = self._faiss.search(np.ascontiguousarray(q.numpy()), k)
            if (indices < 0).any():
                raise ValueError("FAISS found fewer than k results (non-finite scores)")
            scores = _check_scores(torch.from_numpy(scores), "inner products overflow float32:")
            return scores, torch.from_numpy(indices)
        rows = max(1, _SEARCH_ELEMENTS // len(self))
        top_scores, top_indices = [], []
        for start in range(0, len(q), rows):
            scores = self.scores(q[start : start + rows])
            values, order = torch.sort(scores, dim=1, descending=True, stable=True)
            top_scores.append(values[:, :k])
            top_indices.append(order[:, :k])
        return torch.cat(top_scores), torch.cat(top_indices)

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
        if n and index.metric == "hamming":
            bits = np.unpackbits(index._faiss.reconstruct_n(0, n), axis=1)[:, : index.dim]
            index._vectors = torch.from_numpy(bits.astype(np.int8) * 2 - 1)
        elif n:
            index._vectors = torch.from_numpy(index._faiss.reconstruct_n(0, n))
        return index
