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
from .towers import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD, RESIZE_SIZE, TEXT_MAX_LENGTH, minilm_folder


class XmodalProcessor(ProcessorMixin):
    """Turns per-modality feature arrays into the tensors a model's `forward` takes.

    Checks each array's width against the model's input sizes and rejects NaN/inf, so a wrong
    input fails here with its name rather than deep inside the network.

    Args:
        image_feature_dim: width of the image features the model expects.
        text_feature_dim: width of the text features the model expects.

    Example:
        >>> processor = XmodalProcessor(image_feature_dim=128, text_feature_dim=10)
        >>> batch = processor(image_features=np.zeros((2, 128)), text_features=np.ones((2, 10)))
        >>> batch["image_features"].shape
        torch.Size([2, 128])
    """

    def __init__(self, image_feature_dim: int = 128, text_feature_dim: int = 10, **kwargs):
        self.image_feature_dim = image_feature_dim
        self.text_feature_dim = text_feature_dim
        super().__init__(**kwargs)

    def __call__(
        self,
        image_features: np.ndarray | torch.Tensor | list | None = None,
        text_features: np.ndarray | torch.Tensor | list | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        if image_features is None and text_features is None:
            raise ValueError("give image_features, text_features or both")
        data = {}
        for name, values, dim in (
            ("image_features", image_features, self.image_feature_dim),
            ("text_features", text_features, self.text_feature_dim),
        ):
            if values is not None:
                data[name] = check_features(values, dim, name)
        return BatchFeature(data, tensor_type=return_tensors)


class XmodalTowerProcessor(ProcessorMixin):
    """Images and texts → the inputs of a raw-mode model's pretrained towers.

    Pairs the image processor of the image tower (resize 256 bicubic, centre crop 224,
    mean = std = 0.5) with the text tower's tokenizer (MiniLM, at most 64 tokens). Precomputed
    tower features pass through checked, as with :class:`XmodalProcessor`.

    Example:
        >>> processor = XmodalTowerProcessor.from_towers()
        >>> batch = processor(images=[Image.new("RGB", (320, 240))], text=["a red bus"])
        >>> sorted(batch)
        ['attention_mask', 'input_ids', 'pixel_values']
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_towers(cls) -> "XmodalTowerProcessor":
        """The processor of the packaged towers (no download)."""
        from transformers import AutoTokenizer, CLIPImageProcessor

        image_processor = CLIPImageProcessor(
            size={"shortest_edge": RESIZE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            resample=3,  # bicubic
            image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD),
        )
        tokenizer = AutoTokenizer.from_pretrained(minilm_folder(), model_max_length=TEXT_MAX_LENGTH)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        image_features=None,
        text_features=None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        if all(x is None for x in (images, text, image_features, text_features)):
            raise ValueError("give images, text, image_features or text_features")
        data = {}
        if images is not None:
            data["pixel_values"] = self.image_processor(
                images=_check_images(images), return_tensors="pt"
            )["pixel_values"]
        if text is not None:
            data.update(
                self.tokenizer(
                    _check_texts(text), padding=True, truncation=True, return_tensors="pt"
                )
            )
            data.pop("token_type_ids", None)
        for name, values, dim in (
            ("image_features", image_features, TOWER_DIMS["image_feature_dim"]),
            ("text_features", text_features, TOWER_DIMS["text_feature_dim"]),
        ):
            if values is not None:
                data[name] = check_features(values, dim, name)
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
