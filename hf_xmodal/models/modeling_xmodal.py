"""The base of every hf_xmodal model: weight initialisation, embedding the media given, and the
hooks `scripts/train.py` calls (each with a no-op default, so a method fills only what it needs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .layers import gather_batch
from .losses import info_nce

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

LABEL_COLUMNS = ("label", "labels", "image_index")
"""Where a split keeps its relevance: class labels, multi-hot labels, or (caption data) the row
of the image a text describes, which makes each training image its own class."""


def label_column(split: Dataset) -> str:
    """The first of `LABEL_COLUMNS` that `split` has."""
    for name in LABEL_COLUMNS:
        if name in split.column_names:
            return name
    raise ValueError(
        f"the dataset has no {', '.join(map(repr, LABEL_COLUMNS))} column "
        f"(columns: {split.column_names})"
    )


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

    requires_source_dataset: bool = False
    """Whether training needs a labelled source dataset besides the target (transfer methods);
    the script then requires `--source_dataset`, and refuses one for any other model."""

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
        """The dataset columns `forward` takes besides the labels (evaluation streams them)."""
        return ("image_features", "text_features")

    def _init_weights(self, module: nn.Module):
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    @classmethod
    def config_from_datasets(cls, target: DatasetDict, source: DatasetDict | None = None) -> dict:
        """Config fields read from the training data: feature sizes and labels of the target's
        train split (`id2label` for class labels, `num_labels` for multi-hot labels or captions)."""
        from datasets import ClassLabel  # only training reads datasets; checkpoints need not

        split = target["train"]
        first = split[0]
        fields = {
            "image_feature_dim": len(first["image_features"]),
            "text_feature_dim": len(first["text_features"]),
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
