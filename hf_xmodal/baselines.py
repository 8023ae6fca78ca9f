"""Baselines every results table carries: CCA and label prediction (PROTOCOL.md), and a pair of
linear heads trained with symmetric InfoNCE (the reference for caption data).

All take per-modality feature matrices, return retrieval vectors compared by cosine, and choose
their hyperparameters on the validation split only (:func:`select_on_validation`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from .evaluation import evaluate_retrieval
from .models.losses import info_nce


def _check_pair(image_features: Any, text_features: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(image_features, dtype=np.float64)
    y = np.asarray(text_features, dtype=np.float64)
    for name, a in (("image_features", x), ("text_features", y)):
        if a.ndim != 2 or len(a) == 0:
            raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} image rows but {len(y)} text rows: pairs must align")
    return x, y


class CCA:
    """Canonical correlation analysis with ridge-regularised covariances (correlation matching).

    Args:
        n_components: canonical directions kept (default: all, `min` of the two widths).
        reg: added to the diagonal of each modality's covariance.
    """

    def __init__(self, n_components: int | None = None, reg: float = 1e-6):
        if reg < 0:
            raise ValueError(f"reg must be >= 0, got {reg}")
        self.n_components = n_components
        self.reg = reg

    def fit(self, image_features: Any, text_features: Any) -> CCA:
        x, y = _check_pair(image_features, text_features)
        max_components = min(x.shape[1], y.shape[1])
        k = self.n_components or max_components
        if not 0 < k <= max_components:
            raise ValueError(f"n_components must be in [1, {max_components}], got {k}")
        self.image_mean_, self.text_mean_ = x.mean(0), y.mean(0)
        x, y = x - self.image_mean_, y - self.text_mean_
        n = len(x) - 1
        wx = _inverse_sqrt(x.T @ x / n + self.reg * np.eye(x.shape[1]))
        wy = _inverse_sqrt(y.T @ y / n + self.reg * np.eye(y.shape[1]))
        u, corr, vt = np.linalg.svd(wx @ (x.T @ y / n) @ wy, full_matrices=False)
        self.image_weights_ = wx @ u[:, :k]
        self.text_weights_ = wy @ vt.T[:, :k]
        self.correlations_ = corr[:k]
        return self

    def truncated(self, n_components: int) -> CCA:
        """This fit keeping its first `n_components` directions: what a fit with that many
        gives, so one fit serves a grid over the number of components."""
        if not 0 < n_components <= len(self.correlations_):
            raise ValueError(f"n_components must be in [1, {len(self.correlations_)}]")
        kept = CCA(n_components, self.reg)
        kept.image_mean_, kept.text_mean_ = self.image_mean_, self.text_mean_
        kept.image_weights_ = self.image_weights_[:, :n_components]
        kept.text_weights_ = self.text_weights_[:, :n_components]
        kept.correlations_ = self.correlations_[:n_components]
        return kept

    def transform_image(self, image_features: Any) -> np.ndarray:
        return (np.asarray(image_features, np.float64) - self.image_mean_) @ self.image_weights_

    def transform_text(self, text_features: Any) -> np.ndarray:
        return (np.asarray(text_features, np.float64) - self.text_mean_) @ self.text_weights_

    def embed(self, image_features: Any, text_features: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.transform_image(image_features), self.transform_text(text_features)

    @property
    def num_parameters(self) -> int:
        return self.image_weights_.size + self.text_weights_.size


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    values, vectors = linalg.eigh(cov)
    if values.min() <= 0:
        raise ValueError("a covariance is singular: increase reg")
    return (vectors / np.sqrt(values)) @ vectors.T


class LabelPrediction:
    """Retrieval by predicted class distributions (Liu et al., 2017).

    One logistic regression per modality (one-vs-rest for multi-hot labels); an item's retrieval
    vector is its predicted class-probability vector, compared by cosine.

    Args:
        C: inverse regularisation strength of the logistic regressions.
    """

    def __init__(self, C: float = 1.0):
        if C <= 0:
            raise ValueError(f"C must be positive, got {C}")
        self.C = C

    def fit(self, image_features: Any, text_features: Any, labels: Any) -> LabelPrediction:
        x, y = _check_pair(image_features, text_features)
        labels = np.asarray(labels)
        if len(labels) != len(x):
            raise ValueError(f"{len(labels)} labels for {len(x)} pairs")

        def classifier():
            model = LogisticRegression(C=self.C, max_iter=2000)
            return OneVsRestClassifier(model) if labels.ndim == 2 else model

        self.image_classifier_ = classifier().fit(x, labels)
        self.text_classifier_ = classifier().fit(y, labels)
        return self

    def embed(self, image_features: Any, text_features: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = _check_pair(image_features, text_features)
        return self.image_classifier_.predict_proba(x), self.text_classifier_.predict_proba(y)

    @property
    def num_parameters(self) -> int:
        def count(clf):
            estimators = getattr(clf, "estimators_", [clf])
            return sum(e.coef_.size + e.intercept_.size for e in estimators)

        return count(self.image_classifier_) + count(self.text_classifier_)


class InfoNCEHeads:
    """One linear map per modality into a shared space, trained with symmetric InfoNCE
    (:func:`info_nce`, CLIP-style: the in-batch pair is the only positive), input dropout and
    Adam; the epoch is chosen on validation when `fit` is given a validation split.

    Args:
        embed_dim: size of the shared space.
        temperature: the InfoNCE temperature.
        input_dropout: dropout on the input features during training.
        epochs: training epochs (the best validation epoch is kept).
        batch_size: pairs per batch.
        learning_rate: Adam learning rate.
        seed: seed of the initialisation, dropout and batch order.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        temperature: float = 0.05,
        input_dropout: float = 0.5,
        epochs: int = 20,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        seed: int = 0,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= input_dropout < 1:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        for name, value in (
            ("embed_dim", embed_dim),
            ("epochs", epochs),
            ("batch_size", batch_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.embed_dim, self.temperature, self.input_dropout = embed_dim, temperature, input_dropout
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.seed = seed

    def fit(
        self,
        image_features: Any,
        text_features: Any,
        groups: Any = None,
        validation: tuple[Any, Any, Any] | None = None,
        score: Callable[[np.ndarray, np.ndarray, Any], dict[str, float]] | None = None,
        key: str = "map_avg",
    ) -> InfoNCEHeads:
        """Train on the pairs; `groups` (e.g. each caption's image) keeps same-group items out of
        each other's negatives; with `validation` = (images, texts, labels), keep the epoch of
        the best `score(...)[key]` (default: cosine MAP)."""
        x, y = _check_pair(image_features, text_features)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        images, texts = (
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.float32),
        )
        group = None if groups is None else torch.as_tensor(np.asarray(groups))
        self.image_head_ = torch.nn.Linear(x.shape[1], self.embed_dim)
        self.text_head_ = torch.nn.Linear(y.shape[1], self.embed_dim)
        parameters = [*self.image_head_.parameters(), *self.text_head_.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=self.learning_rate)
        score = score or (lambda u, v, labels: evaluate_retrieval(u, v, labels, labels))
        self.curve_, best = [], None
        for epoch in range(1, self.epochs + 1):
            for rows in torch.randperm(len(x), generator=generator).split(self.batch_size):
                u = self.image_head_(F.dropout(images[rows], self.input_dropout))
                v = self.text_head_(F.dropout(texts[rows], self.input_dropout))
                same = None if group is None else group[rows, None] == group[None, rows]
                loss = info_nce(u, v, self.temperature, same)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if validation is None:
                continue
            value = score(*self.embed(validation[0], validation[1]), validation[2])[key]
            self.curve_.append({"epoch": epoch, key: value})
            if best is None or value > best[0]:
                state = [p.detach().clone() for p in parameters]
                best = (value, epoch, state)
        self.best_epoch_ = self.epochs
        if best is not None:
            self.best_epoch_ = best[1]
            with torch.no_grad():
                for p, kept in zip(parameters, best[2], strict=True):
                    p.copy_(kept)
        return self

    @torch.no_grad()
    def embed(self, image_features: Any, text_features: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = _check_pair(image_features, text_features)
        u = self.image_head_(torch.as_tensor(x, dtype=torch.float32))
        v = self.text_head_(torch.as_tensor(y, dtype=torch.float32))
        return u.numpy(), v.numpy()

    @property
    def num_parameters(self) -> int:
        heads = (self.image_head_, self.text_head_)
        return sum(p.numel() for head in heads for p in head.parameters())


@dataclass
class Selection:
    """The outcome of :func:`select_on_validation`."""

    model: CCA | LabelPrediction | InfoNCEHeads
    params: dict[str, Any]
    validation: dict[str, float]
    grid: list[dict[str, Any]]


def select_on_validation(
    fit: Callable[..., CCA | LabelPrediction | InfoNCEHeads],
    grid: dict[str, Iterable[Any]],
    validation: tuple[Any, Any, Any],
    score: Callable[[np.ndarray, np.ndarray, Any], dict[str, float]] | None = None,
    key: str = "map_avg",
) -> Selection:
    """Fit `fit(**params)` for every point of `grid`; keep the best `key` on validation.

    `validation` is `(image_features, text_features, labels)`; `score(image_vectors,
    text_vectors, labels)` defaults to cosine MAP (:func:`evaluate_retrieval`).
    """
    score = score or (lambda u, v, labels: evaluate_retrieval(u, v, labels, labels))
    best, points = None, []
    names = list(grid)
    for values in itertools.product(*(list(grid[n]) for n in names)):
        params = dict(zip(names, values, strict=True))
        model = fit(**params)
        metrics = score(*model.embed(validation[0], validation[1]), validation[2])
        points.append({**params, key: metrics[key]})
        if best is None or metrics[key] > best.validation[key]:
            best = Selection(model, params, metrics, points)
    return best


class SignOfRotation:
    """Binary codes from a float model: b = sign((x − μ) R) with R a random orthogonal `dim × dim`
    rotation and μ the mean training embedding (the plain "hash the float model" baseline; with
    the model's `embed_dim` equal to the bits, codes of equal length).

    Example:
        >>> codes = SignOfRotation(seed=0).fit(train_embeddings).transform(test_embeddings)
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, embeddings: Any) -> SignOfRotation:
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
            raise ValueError(f"embeddings must be a finite, non-empty 2-D array, got {x.shape}")
        rng = np.random.default_rng(self.seed)
        q, r = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))
        self.rotation = q * np.sign(np.diag(r))  # uniformly random (Haar) orthogonal matrix
        self.mean = x.mean(0)
        return self

    def transform(self, embeddings: Any) -> np.ndarray:
        """±1 codes `(n, dim)` (float32; 0 → +1)."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise ValueError(f"embeddings must be (n, {len(self.mean)}), got {x.shape}")
        return np.where((x - self.mean) @ self.rotation >= 0, 1.0, -1.0).astype(np.float32)
