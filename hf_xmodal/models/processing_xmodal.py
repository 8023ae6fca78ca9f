"""Processors: precomputed features, or images and texts for the pretrained towers."""

import os
import warnings
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature, ProcessorMixin

from .configuration_xmodal import TOWER_DIMS
from .layers import check_features
from .towers import (
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    MAX_TEXT_CHUNKS,
    RESIZE_SIZE,
    TEXT_MAX_LENGTH,
    minilm_folder,
)


def feature_statistics(features: np.ndarray | torch.Tensor, name: str) -> dict[str, list[float]]:
    """Per-feature mean and scale of `features` (computed in float64): the scale is the feature's
    standard deviation (1 for a constant feature) times √dim, so that a standardised row has an
    expected squared norm of 1 (about the size of a normalised histogram or topic vector) whatever
    the number of features."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"fitting {name} needs a (rows >= 2, dim) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"cannot fit on {name}: it contains NaN or inf")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = scale <= 1e-12 * np.maximum(1.0, np.abs(mean))
    scale[constant] = 1.0
    scale *= np.sqrt(x.shape[1])
    return {"mean": mean.tolist(), "scale": scale.tolist()}


class FeatureStandardization:
    """Per-feature standardisation of image, text and extra modalities' features (e.g. MHTN's
    `tags_features`, sized by `extra_feature_dims`), learned from training features.

    `fit` stores each modality's mean and scale in `feature_statistics` (saved with the
    processor's config; see :func:`feature_statistics`); every call then maps features `x` to
    `(x − mean) / scale`, so inputs on any affine scale per feature reach the model alike.
    `standardize=False` switches it off; an unfitted processor passes features through unchanged.
    """

    standardize: bool
    feature_statistics: dict[str, dict[str, list[float]]] | None
    extra_feature_dims: dict[str, int]

    def fit(
        self,
        image_features: np.ndarray | torch.Tensor | None = None,
        text_features: np.ndarray | torch.Tensor | None = None,
        **extra_features: np.ndarray | torch.Tensor,
    ):
        """Learn the mean and scale of the modalities given (the training split's features)."""
        given = self._given(image_features, text_features, extra_features)
        statistics = dict(self.feature_statistics or {})
        for name, values in given.items():
            statistics[name] = feature_statistics(values, name)
            dim = len(statistics[name]["mean"])
            if dim != self.feature_dims()[name]:
                raise ValueError(f"{name} have {dim} columns, expected {self.feature_dims()[name]}")
        self.feature_statistics = statistics
        return self

    def _given(self, image_features, text_features, extra_features: dict) -> dict:
        """The feature arrays passed, by column name; an unknown modality is an error."""
        unknown = sorted(set(extra_features) - set(self.feature_dims()))
        if unknown:
            raise ValueError(
                f"unknown feature column(s) {unknown}: the processor takes "
                f"{sorted(self.feature_dims())} (extra modalities: `extra_feature_dims`)"
            )
        given = {"image_features": image_features, "text_features": text_features}
        given = {n: v for n, v in {**given, **extra_features}.items() if v is not None}
        if not given:
            extra = sorted(self._extra_dims())
            raise ValueError(
                "give image_features, text_features or both" + (f" (or {extra})" if extra else "")
            )
        return given

    def _extra_dims(self) -> dict[str, int]:
        return {f"{m}_features": d for m, d in (self.extra_feature_dims or {}).items()}

    @property
    def applied_statistics(self) -> dict[str, dict[str, list[float]]] | None:
        """The statistics every call applies: None when switched off or not fitted."""
        return self.feature_statistics if self.standardize and self.feature_statistics else None

    def feature_dims(self) -> dict[str, int]:
        raise NotImplementedError

    def standardized(self, name: str, features: torch.Tensor) -> torch.Tensor:
        """`features` of modality `name` after standardisation (unchanged if switched off or
        unfitted)."""
        statistics = (self.applied_statistics or {}).get(name)
        if statistics is None:
            return features
        mean = torch.tensor(statistics["mean"], dtype=torch.float64)
        scale = torch.tensor(statistics["scale"], dtype=torch.float64)
        return ((features.double() - mean) / scale).to(features.dtype)

    def _features(self, values, name: str) -> torch.Tensor:
        return self.standardized(name, check_features(values, self.feature_dims()[name], name))


class XmodalProcessor(FeatureStandardization, ProcessorMixin):
    """Turns per-modality feature arrays into the tensors a model's `forward` takes.

    Checks each array's width against the model's input sizes and rejects NaN/inf, so a wrong
    input fails here with its name rather than deep inside the network; then standardises each
    feature with the mean and scale learned by `fit` on the training split (`scripts/train.py`
    fits it; the statistics are saved in `processor_config.json` and applied at inference).

    Args:
        image_feature_dim: width of the image features the model expects.
        text_feature_dim: width of the text features the model expects.
        standardize: apply the fitted standardisation (default True; False passes features
            through as they are).
        feature_statistics: `{"image_features": {"mean": [...], "scale": [...]}, ...}`, as
            written by `fit`.
        extra_feature_dims: `{modality: width}` of extra modalities (e.g. `{"tags": 56}` for
            MHTN), taken and standardised as `<modality>_features`.

    Example:
        >>> train = np.random.default_rng(0).normal(5, 100, size=(50, 128))
        >>> processor = XmodalProcessor(image_feature_dim=128, text_feature_dim=10)
        >>> processor = processor.fit(image_features=train, text_features=np.ones((50, 10)))
        >>> batch = processor(image_features=train[:2], text_features=np.ones((2, 10)))
        >>> batch["image_features"].shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        image_feature_dim: int = 128,
        text_feature_dim: int = 10,
        standardize: bool = True,
        feature_statistics: dict | None = None,
        extra_feature_dims: dict | None = None,
        **kwargs,
    ):
        self.image_feature_dim = image_feature_dim
        self.text_feature_dim = text_feature_dim
        self.standardize = standardize
        self.feature_statistics = feature_statistics
        self.extra_feature_dims = dict(extra_feature_dims or {})
        super().__init__(**kwargs)

    def feature_dims(self) -> dict[str, int]:
        return {
            "image_features": self.image_feature_dim,
            "text_features": self.text_feature_dim,
            **self._extra_dims(),
        }

    def __call__(
        self,
        image_features: np.ndarray | torch.Tensor | list | None = None,
        text_features: np.ndarray | torch.Tensor | list | None = None,
        return_tensors: str = "pt",
        **extra_features: np.ndarray | torch.Tensor | list,
    ) -> BatchFeature:
        given = self._given(image_features, text_features, extra_features)
        data = {n: self._features(v, n) for n, v in given.items()}
        return BatchFeature(data, tensor_type=return_tensors)


class XmodalTowerProcessor(FeatureStandardization, ProcessorMixin):
    """Images and texts → the inputs of a raw-mode model's pretrained towers.

    Pairs the image processor of the image tower (resize 256 bicubic, centre crop 224,
    mean = std = 0.5) with the text tower's tokenizer (MiniLM, windows of 64 tokens). A text
    longer than one window is cut into consecutive windows (at most `max_text_chunks`), each
    with its own `[CLS]`/`[SEP]`; `input_ids` is then `(texts, windows, 64)`, all-padding windows
    filling the shorter texts, and the tower averages the windows' sentence vectors. When every
    text fits one window, `input_ids` is `(texts, length)` as usual. Precomputed tower features
    pass through checked and standardised as with :class:`XmodalProcessor`; a raw-mode model
    standardises its towers' outputs with the same statistics (:func:`add_towers`).

    Example:
        >>> processor = XmodalTowerProcessor.from_towers()
        >>> batch = processor(images=[Image.new("RGB", (320, 240))], text=["a red bus"])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'pixel_values']
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        standardize: bool = True,
        feature_statistics: dict | None = None,
        max_text_chunks: int = MAX_TEXT_CHUNKS,
        extra_feature_dims: dict | None = None,
        **kwargs,
    ):
        if max_text_chunks < 1:
            raise ValueError(f"max_text_chunks must be >= 1, got {max_text_chunks}")
        self.standardize = standardize
        self.feature_statistics = feature_statistics
        self.max_text_chunks = max_text_chunks
        self.extra_feature_dims = dict(extra_feature_dims or {})
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_towers(cls, **kwargs) -> "XmodalTowerProcessor":
        """The processor of the packaged towers (no download); `kwargs` as in `__init__`."""
        from transformers import AutoTokenizer, CLIPImageProcessor

        image_processor = CLIPImageProcessor(
            size={"shortest_edge": RESIZE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            resample=3,  # bicubic
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
        )
        tokenizer = AutoTokenizer.from_pretrained(minilm_folder(), model_max_length=TEXT_MAX_LENGTH)
        return cls(image_processor=image_processor, tokenizer=tokenizer, **kwargs)

    def feature_dims(self) -> dict[str, int]:
        return {
            "image_features": TOWER_DIMS["image_feature_dim"],
            "text_features": TOWER_DIMS["text_feature_dim"],
            **self._extra_dims(),
        }

    def tokenize(self, text: str | list[str]) -> dict[str, torch.Tensor]:
        """Token windows of each text: `(texts, length)` if all fit one window, else
        `(texts, windows, 64)`."""
        texts = _check_texts(text)
        tokens = self.tokenizer(
            texts,
            truncation=True,
            max_length=TEXT_MAX_LENGTH,
            return_overflowing_tokens=True,
            padding=True,
            return_tensors="pt",
        )
        owner = tokens["overflow_to_sample_mapping"]
        if len(owner) == len(texts):
            return {k: tokens[k] for k in ("input_ids", "attention_mask")}
        first = torch.searchsorted(owner, owner, right=False)
        window = torch.arange(len(owner)) - first
        keep = window < self.max_text_chunks
        n_windows = int(window[keep].max()) + 1
        out = {}
        for key in ("input_ids", "attention_mask"):
            values = tokens[key]
            padded = values.new_zeros(len(texts), n_windows, values.shape[1])
            padded[owner[keep], window[keep]] = values[keep]
            out[key] = padded
        return out

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        image_features=None,
        text_features=None,
        return_tensors: str = "pt",
        **extra_features,
    ) -> BatchFeature:
        features = (image_features, text_features, *extra_features.values())
        if images is None and text is None and all(x is None for x in features):
            raise ValueError("give images, text, image_features or text_features")
        data = {}
        if images is not None:
            data["pixel_values"] = self.image_processor(
                images=_check_images(images), return_tensors="pt"
            )["pixel_values"]
        if text is not None:
            data.update(self.tokenize(text))
        if any(x is not None for x in features):
            given = self._given(image_features, text_features, extra_features)
            data.update({n: self._features(v, n) for n, v in given.items()})
        return BatchFeature(data, tensor_type=return_tensors)


def open_image(source: str | os.PathLike | IO[bytes], name: str) -> Image.Image:
    """The RGB image in a file (a path or a binary file object), decoded in full.

    Errors name the file: one PIL cannot identify, a truncated or corrupt one, and one whose
    pixel count passes PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, which PIL
    itself only warns about up to twice that).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                return opened.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(
            f"{name} is too large to decode safely ({e}); raise PIL.Image.MAX_IMAGE_PIXELS "
            "if it is trusted"
        ) from None
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{name} cannot be read as an image ({type(e).__name__}: {e})") from None


def _check_images(images) -> list[Image.Image]:
    images = images if isinstance(images, list | tuple) else [images]
    if not images:
        raise ValueError("images is an empty list")
    checked = []
    for i, image in enumerate(images):
        if isinstance(image, str | os.PathLike):
            checked.append(open_image(image, f"image {i} ({image})"))
            continue
        if not isinstance(image, Image.Image):
            raise ValueError(f"image {i} must be a PIL image or a path, got {type(image).__name__}")
        try:
            checked.append(image.convert("RGB"))
        except OSError as e:
            raise ValueError(f"image {i} is corrupt: {e}") from None
    return checked


def _check_texts(text) -> list[str]:
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ValueError("text is an empty list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text {i} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"text {i} is empty")
    return texts
