"""The base of every hf_xmodal model: weight initialisation, embedding the media given, and the
hooks `scripts/train.py` calls (each with a no-op default, so a method fills only what it needs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import logging

from .layers import gather_batch
from .losses import info_nce

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

PRECISIONS = ("float32", "binary")
RAW_INPUTS = {"image": "images", "text": "text"}
"""The processor argument that takes each medium's raw items (photos, sentences)."""
LABEL_COLUMNS = ("label", "labels", "image_index")
"""Where a split keeps its relevance: class labels, multi-hot labels, or (caption data) the row
of the image a text describes, which makes each training image its own class."""


def is_feature_matrix(inputs: Any) -> bool:
    """Whether `inputs` are feature rows (a tensor, an array, or a sequence of rows) rather than
    raw items (photos, strings)."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return True
    return len(inputs) > 0 and isinstance(inputs[0], (list, tuple, np.ndarray, torch.Tensor))


def label_column(split: Dataset) -> str:
    """The first of `LABEL_COLUMNS` that `split` has."""
    for name in LABEL_COLUMNS:
        if name in split.column_names:
            return name
    raise ValueError(
        f"the dataset has no {', '.join(map(repr, LABEL_COLUMNS))} column "
        f"(columns: {split.column_names})"
    )


def extra_feature_columns(split: Dataset) -> list[str]:
    """The `<modality>_features` columns besides image and text features that hold one vector per
    row: extra modalities (MHTN's tags). Region maps (2-D per row) are not."""
    from datasets import Value

    return [
        name
        for name, feature in split.features.items()
        if name.endswith("_features") and name not in ("image_features", "text_features")
        if isinstance(getattr(feature, "feature", None), Value)
    ]


def paired_stream(
    split: Dataset,
    index: bool = False,
    columns: tuple[str, ...] = ("image_features", "text_features"),
) -> Dataset:
    """`split` as a stream of labelled pairs: its input `columns` (by default `image_features`,
    `text_features`), `labels`, and with `index=True` each row's position in `split` as `index`
    (to weight or select rows)."""
    label = label_column(split)
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise ValueError(f"the dataset lacks the column(s) {missing}; it has {split.column_names}")
    stream = split.select_columns([*columns, label])
    if index:
        stream = stream.add_column("index", list(range(len(split))))
    return stream.rename_column(label, "labels") if label != "labels" else stream


def _readable(path: Path) -> bool:
    """Whether a .safetensors file opens: its header is whole and covers the file exactly."""
    try:
        with safe_open(path, "pt"):
            return True
    except (SafetensorError, OSError):
        return False


class XmodalPreTrainedModel(PreTrainedModel):
    """Xavier-initialised linear layers; a model defines `get_image_features` and
    `get_text_features`, and its `forward` embeds whichever media it is given.

    Training hooks (as peft's `BaseTuner` declares what a tuner fills): the script never asks
    whether a model has one, it calls them all; the defaults describe one stage of in-domain
    training on labelled pairs.
    """

    main_input_name = "image_features"

    modalities: tuple[str, ...] = ("image", "text")
    """The media the model embeds; a split gives each as a `<medium>_features` column."""

    requires_source_dataset: bool = False
    """Whether the model trains with a labelled source dataset besides the target (transfer
    methods): the script requires `--source_dataset` when `uses_source()`, and refuses one for
    any other model."""

    has_unused_parameters: bool = False
    """Whether some trainable parameters get no gradient in some step (e.g. a stage leaves a
    network out of the loss); distributed training then looks for them
    (DDP `find_unused_parameters`), which costs a little time per step."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a damaged local weights file is named in the error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as e:
            folder = Path(pretrained_model_name_or_path)
            damaged = [p.name for p in sorted(folder.glob("*.safetensors")) if not _readable(p)]
            raise OSError(
                f"cannot load the weights in {folder}: {', '.join(damaged) or 'a weights file'} "
                f"is truncated or damaged ({e}); expected safetensors as save_pretrained writes"
            ) from None

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The dataset columns `forward` takes besides the labels (evaluation streams them):
        `<medium>_features` of each of `modalities`."""
        return tuple(f"{m}_features" for m in self.modalities)

    def _init_weights(self, module: nn.Module):
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    @classmethod
    def config_from_datasets(cls, target: DatasetDict, source: DatasetDict | None = None) -> dict:
        """Config fields read from the training data: feature sizes (of the media it has) and labels
        of the target's train split (`id2label` for class labels, `num_labels` for multi-hot labels
        or captions)."""
        from datasets import ClassLabel  # only training reads datasets; checkpoints need not

        split = target["train"]
        first = split[0]
        fields = {
            f"{medium}_feature_dim": len(first[f"{medium}_features"])
            for medium in ("image", "text")
            if f"{medium}_features" in first
        }
        label = label_column(split)
        feature = split.features[label]
        if isinstance(feature, ClassLabel):
            return {**fields, "id2label": dict(enumerate(feature.names))}
        if label == "image_index":  # each training image is its own class
            return {**fields, "num_labels": max(split[label]) + 1}
        return {**fields, "num_labels": feature.length}

    def training_datasets(
        self, target: DatasetDict, source: DatasetDict | None = None
    ) -> dict[str, Dataset]:
        """The named streams training draws batches from, each a `Dataset` whose columns are
        `forward` arguments.

        The first stream defines the epoch; the others are cycled alongside it, and their columns
        reach `forward` prefixed by the stream's name (`source_image_features`, ...). Default:
        the target's train pairs (`paired_stream`).
        """
        return {"target": paired_stream(target["train"])}

    def uses_source(self) -> bool:
        """Whether training, as configured, reads the source dataset. Default: whether the model
        `requires_source_dataset`; a transfer model says so per config (its source terms on)."""
        return self.requires_source_dataset

    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        """`[(stage name, number of epochs), ...]` covering `epochs`; each stage starts with fresh
        optimizer moments and its own learning-rate decay. Default: one stage, "train"."""
        return [("train", epochs)]

    def set_training_stage(self, stage: str) -> None:
        """Called before each epoch with its stage from `training_stages`. Default: nothing."""

    def set_training_progress(self, progress: float) -> None:
        """Called before each step with the fraction of training done, in [0, 1] (e.g. for a
        schedule inside the loss). Default: nothing."""

    def on_epoch_end(self, epoch: int, data: dict[str, Dataset]) -> dict[str, float]:
        """Called on every process after each training epoch with the `training_datasets`
        streams (e.g. to refresh codes or select pairs); returns metrics to log with the epoch.
        Default: nothing, no metrics."""
        return {}

    def embed_features(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """Embeddings of one medium's feature vectors (`get_image_features` for "image",
        `get_text_features` for "text"; a model with other media extends it)."""
        if modality == "image":
            return self.get_image_features(image_features=features)
        if modality == "text":
            return self.get_text_features(text_features=features)
        raise ValueError(f"{type(self).__name__} embeds {self.modalities}, not {modality!r}")

    def encode_images(self, images_or_features: Any, **kwargs) -> torch.Tensor:
        """Embeddings of images given as feature vectors `(n, image_feature_dim)`, or as photos
        with `processor=`; the options are those of `encode`."""
        return self.encode(images_or_features, modality="image", **kwargs)

    def encode_texts(self, texts_or_features: Any, **kwargs) -> torch.Tensor:
        """Embeddings of texts given as feature vectors `(n, text_feature_dim)`, or as strings
        with `processor=`; the options are those of `encode`."""
        return self.encode(texts_or_features, modality="text", **kwargs)

    @torch.no_grad()
    def encode(
        self,
        inputs: Any,
        modality: str = "image",
        batch_size: int = 256,
        show_progress_bar: bool | None = None,
        normalize: bool = False,
        precision: str = "float32",
        processor: Any = None,
    ) -> torch.Tensor:
        """Embed many items of one medium in batches, in eval mode, on the model's device.

        Args:
            inputs: a feature matrix (tensor, array or nested list, one row an item) or, with a
                `processor`, raw items (a list of PIL images, or of strings).
            modality: one of `modalities`.
            batch_size: items per forward pass.
            show_progress_bar: default: when there is more than one batch (and progress bars
                are enabled in `transformers.utils.logging`).
            normalize: scale each embedding to unit length.
            precision: `"float32"`, or `"binary"`: each dimension's sign bit (> 0), packed 8 to
                a byte (numpy `packbits` order), `uint8 (n, ceil(dim / 8))`, for Hamming search.
            processor: the model's saved processor (e.g. `AutoProcessor.from_pretrained`); it
                standardises features and turns photos and sentences into tower inputs.

        Returns: `(n, embed_dim)` float32 embeddings on the CPU (packed bits for `"binary"`).
        """
        if modality not in self.modalities:
            raise ValueError(f"modality must be one of {self.modalities}, got {modality!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(inputs) == 0:
            raise ValueError(f"no {modality} inputs to encode")
        is_features = is_feature_matrix(inputs)
        if not is_features and processor is None:
            raise ValueError(
                f"raw {modality} inputs need the model's processor: encode(..., processor=...)"
            )
        starts = range(0, len(inputs), batch_size)
        if show_progress_bar is None:
            show_progress_bar = len(starts) > 1
        was_training = self.training
        self.eval()
        try:
            parts = [
                self._embed_batch(
                    inputs[start : start + batch_size], modality, processor, is_features
                )
                for start in logging.tqdm(
                    starts, desc=f"{modality}s", disable=not show_progress_bar
                )
            ]
        finally:
            self.train(was_training)
        embeds = torch.cat(parts)
        if normalize:
            embeds = F.normalize(embeds, dim=1)
        if precision == "binary":
            return torch.from_numpy(np.packbits((embeds > 0).numpy(), axis=1))
        return embeds

    def _embed_batch(
        self, items: Any, modality: str, processor: Any, is_features: bool
    ) -> torch.Tensor:
        """Float32 CPU embeddings of one batch of features (or, with `processor`, raw items)."""
        if processor is None:
            if not isinstance(items, torch.Tensor):
                items = torch.from_numpy(np.asarray(items, dtype=np.float32))
            return self.embed_features(modality, items.to(self.device)).float().cpu()
        key = f"{modality}_features" if is_features else RAW_INPUTS[modality]
        batch = {k: v.to(self.device) for k, v in processor(**{key: items}).items()}
        return self(**batch)[f"{modality}_embeds"].float().cpu()

    def embed_given(
        self,
        image_features: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        text_features: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(image embeddings, text embeddings), None for a medium not given."""
        u = v = None
        if image_features is not None or pixel_values is not None:
            u = self.get_image_features(image_features, pixel_values)
        if text_features is not None or input_ids is not None:
            v = self.get_text_features(text_features, input_ids, attention_mask)
        return u, v

    def instance_contrastive(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """The optional instance-level term (`config.instance_contrastive_weight`): symmetric
        InfoNCE over the whole batch across processes, items sharing a label (caption data: the
        same image) left out of each other's negatives."""
        u, v, labels = gather_batch(image_embeds), gather_batch(text_embeds), gather_batch(labels)
        if labels.ndim == 1:
            same = labels[:, None] == labels[None, :]
        else:
            same = labels.float() @ labels.float().T > 0
        return info_nce(u, v, self.config.instance_temperature, same)

    @staticmethod
    def loss_requested(labels: torch.Tensor | None, return_loss: bool | None) -> bool:
        """A loss is computed when labels are given, unless `return_loss=False`."""
        return return_loss is not False and (labels is not None or bool(return_loss))
