"""MHTN: Modal-adversarial Hybrid Transfer Network (Huang, Peng & Yuan, IEEE TCyb)."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mhtn import MHTNConfig
from .inputs import ModalityInputs
from .layers import (
    check_features,
    gather_batch,
    labels_to_targets,
    loss_targets,
    reversal_schedule,
    reverse_gradient,
)
from .losses import mmd, weighted_sum
from .modeling_dckt import DomainNetwork, fc_block, pair_distance, represent
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel, extra_feature_columns, label_column

INPUT_SUFFIXES = ("features", "input_ids", "attention_mask")


def labelled_columns(split, columns: list[str]):
    """`split`'s `columns` and its labels as `labels`, after checking the columns exist."""
    label = label_column(split)
    missing = [c for c in columns if c not in split.column_names]
    if missing:
        raise ValueError(f"the training split lacks {missing}; it has {split.column_names}")
    stream = split.select_columns([*columns, label])
    return stream if label == "labels" else stream.rename_column(label, "labels")


class MHTNPreTrainedModel(XmodalPreTrainedModel):
    config_class = MHTNConfig
    base_model_prefix = "mhtn"


class MHTNModel(MHTNPreTrainedModel):
    """The target network (`DomainNetwork`: per-modality fc6 → fc7 branches, then fc8 → fc9 →
    fc10 common to every target modality), a source image branch aligned to the target image
    branch by MMD, a star of pair distances from the image branch to every other modality, and
    a gradient-reversed modality discriminator on fc9.

    Besides `get_image_features` / `get_text_features`, `get_modality_features(name, ...)`
    embeds any modality of `config.modality_dims()`; `forward` takes an extra modality `m` as
    `m_features` (or `m_input_ids` / `m_attention_mask` in raw mode) and returns every given
    modality's embeddings in `modality_embeds`.
    """

    requires_source_dataset = True

    def __init__(self, config: MHTNConfig):
        super().__init__(config)
        h, bn, p = config.hidden_dim, config.batch_norm, config.dropout
        self.modalities = list(config.modality_dims())
        self.inputs = ModalityInputs(config)
        self.target = DomainNetwork(config.modality_dims(), config.num_labels, config)
        # A switched-off component builds no module, so every parameter is trained.
        self.source_branch = self.source_classifier = None
        if self.uses_source():
            self.source_branch = nn.ModuleList(
                [fc_block(config.image_feature_dim, h, bn, p), fc_block(h, h, bn, p)]
            )
        if config.source_semantic_weight > 0:
            self.source_classifier = nn.Linear(h, config.source_num_labels or config.num_labels)
        self.discriminator_bottleneck = self.discriminator = None
        if config.adversarial_weight > 0:
            b, dims = config.discriminator_bottleneck, list(config.discriminator_hidden_dims)
            self.discriminator_bottleneck = nn.Sequential(nn.Linear(config.fc9_dim, b), nn.ReLU())
            layers: list[nn.Module] = []
            for width in dims:
                layers += [nn.Linear(b, width), nn.ReLU()]
                b = width
            self.discriminator = nn.Sequential(*layers, nn.Linear(b, len(self.modalities)))
        self.training_progress = 0.0
        self.post_init()

    @classmethod
    def config_from_datasets(cls, target, source=None) -> dict:
        """The target's feature sizes and labels, each `extra_feature_columns` of its training
        split as an extra modality, and the source's number of classes."""
        fields = super().config_from_datasets(target)
        split = target["train"]
        extra = {
            column.removesuffix("_features"): len(split[0][column])
            for column in extra_feature_columns(split)
        }
        if extra:
            fields["extra_modalities"] = extra
        if source is not None:
            own = super().config_from_datasets(source)
            fields["source_num_labels"] = (
                len(own["id2label"]) if "id2label" in own else own["num_labels"]
            )
        return fields

    def training_datasets(self, target, source=None) -> dict:
        """The target's training rows with every modality's features and `labels` and, when the
        source is used, the source's training images and `labels`."""
        split = target["train"]
        label = label_column(split)
        columns = [f"{m}_features" for m in self.modalities]
        missing = [c for c in columns if c not in split.column_names]
        if missing:
            raise ValueError(f"the target's train split lacks {missing}: {split.column_names}")
        streams = {"target": split.select_columns([*columns, label]).rename_column(label, "labels")}
        if self.uses_source():
            if source is None:
                raise ValueError("MHTN transfers from a source: give a labelled image dataset")
            label = label_column(source["train"])
            streams["source"] = (
                source["train"]
                .select_columns(["image_features", label])
                .rename_column(label, "labels")
            )
        return streams

    def uses_source(self) -> bool:
        """Whether training uses the source images: its classifier or the MMD is on."""
        c = self.config
        return c.source_semantic_weight > 0 or c.single_modal_mmd_weight > 0

    def set_training_progress(self, progress: float) -> None:
        """Training progress p in [0, 1]; the gradient reversal scale is λ_p (0 at p = 0)."""
        reversal_schedule(progress)  # checks the range
        self.training_progress = float(progress)

    # ----------------------------------------------------------------------------------------
    # Embedding

    def _inputs(
        self,
        modality: str,
        features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Checked features of one modality (extra modalities go through the text tower)."""
        if modality not in self.modalities:
            raise ValueError(f"unknown modality {modality!r}: the model has {self.modalities}")
        if modality == "image":
            return self.inputs.image(features, pixel_values)
        if modality == "text":
            return self.inputs.text(features, input_ids, attention_mask)
        if input_ids is not None:
            return self.inputs.text(None, input_ids, attention_mask)
        if features is None:
            raise ValueError(f"give {modality}_features (or {modality}_input_ids in raw mode)")
        dim = self.config.modality_dims()[modality]
        return check_features(features, dim, f"{modality}_features")

    def _represent(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return represent(acts, self.config.retrieval_representation)

    def get_modality_features(
        self,
        modality: str,
        features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Common representations `(batch, dim)` of any target modality (softmax(fc10) or fc9),
        compared by cosine across every pair of modalities."""
        x = self._inputs(modality, features, input_ids, attention_mask, pixel_values)
        return self._represent(self.target(x, modality))

    def get_image_features(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Common representations of images `(batch, dim)`, compared by cosine."""
        return self.get_modality_features("image", image_features, pixel_values=pixel_values)

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Common representations of texts `(batch, dim)`, compared by cosine."""
        return self.get_modality_features("text", text_features, input_ids, attention_mask)

    # ----------------------------------------------------------------------------------------
    # Loss

    def _extra_inputs(self, kwargs: dict) -> dict[str, dict[str, torch.Tensor]]:
        """`{modality: {suffix: tensor}}` of the extra modalities' `<modality>_<suffix>` inputs."""
        kwargs = dict(kwargs)
        extra = {}
        for m in self.modalities[2:]:
            given = {s: kwargs.pop(f"{m}_{s}") for s in INPUT_SUFFIXES if f"{m}_{s}" in kwargs}
            given = {s: value for s, value in given.items() if value is not None}
            if given:
                extra[m] = given
        if kwargs:
            expected = [f"{m}_{s}" for m in self.modalities[2:] for s in INPUT_SUFFIXES]
            raise TypeError(
                f"unexpected inputs {sorted(kwargs)}: the extra modalities' inputs are {expected}"
            )
        return extra

    def _source_loss(self, source_image_features, source_labels, target_image, terms) -> None:
        if source_image_features is None or source_labels is None:
            raise ValueError(
                "the loss needs source_image_features and source_labels (a source dataset)"
            )
        x = check_features(
            source_image_features, self.config.image_feature_dim, "source_image_features"
        )
        if len(source_labels) != len(x):
            raise ValueError(
                f"source batch sizes differ: {len(x)} images, {len(source_labels)} labels"
            )
        fc6, fc7 = self.source_branch
        s6 = fc6(x)
        s7 = fc7(s6)
        c = self.config
        if self.source_classifier is not None:
            # CE of the source classifier on the source images' fc7
            y = labels_to_targets(source_labels.to(x.device), c.source_num_labels or c.num_labels)
            y = y / y.sum(1, keepdim=True).clamp_min(1)
            terms["source_semantic"] = F.cross_entropy(self.source_classifier(s7), y)
        if c.single_modal_mmd_weight > 0:
            # MMD(source images, target images) at fc6 and fc7, over every process's batch
            terms["single_modal_mmd"] = sum(
                mmd(gather_batch(s), gather_batch(target_image[k]), c.mmd_kernels, c.mmd_kernel_mul)
                for k, s in (("fc6", s6), ("fc7", s7))
            )

    def forward(
        self,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        source_image_features: torch.Tensor | None = None,
        source_labels: torch.Tensor | None = None,
        **modality_inputs: torch.Tensor,
    ) -> CrossModalOutput:
        """Embed whichever modalities are given; with `labels` (and every target modality and
        the source batch `source_image_features`, `source_labels`), add the loss."""
        given = {}
        if image_features is not None or pixel_values is not None:
            given["image"] = self._inputs("image", image_features, pixel_values=pixel_values)
        if text_features is not None or input_ids is not None:
            given["text"] = self._inputs("text", text_features, input_ids, attention_mask)
        for modality, inputs in self._extra_inputs(modality_inputs).items():
            given[modality] = self._inputs(modality, **inputs)
        acts = {m: self.target(x, m) for m, x in given.items()}
        embeds = {m: self._represent(a) for m, a in acts.items()}
        out = CrossModalOutput(
            image_embeds=embeds.get("image"),
            text_embeds=embeds.get("text"),
            image_logits=acts["image"]["fc10"] if "image" in acts else None,
            text_logits=acts["text"]["fc10"] if "text" in acts else None,
            modality_embeds=embeds,
        )
        if not self.loss_requested(labels, return_loss):
            return out
        c = self.config
        y = loss_targets(embeds.get("image"), embeds.get("text"), labels, c.num_labels)
        missing = [m for m in self.modalities if m not in acts]
        if missing:
            raise ValueError(f"the loss needs every target modality; missing {missing}")
        if any(len(a["fc10"]) != len(y) for a in acts.values()):
            sizes = {m: len(a["fc10"]) for m, a in acts.items()}
            raise ValueError(f"batch sizes differ between modalities: {sizes}")
        terms = {}
        # Σ_m CE(fc10(m), y): the semantic classifier on every target modality
        target = y / y.sum(1, keepdim=True).clamp_min(1)
        terms["semantic"] = sum(F.cross_entropy(a["fc10"], target) for a in acts.values())
        if c.cross_modal_weight > 0:
            # Star: ½‖fc_image − fc_m‖² at fc6 and fc7 for every other modality m
            terms["cross_modal"] = sum(
                pair_distance(acts["image"], acts[m]).mean() for m in self.modalities[1:]
            )
        if self.discriminator is not None:
            # CE(D(R_λ(B(fc9_m))), m): the discriminator learns the modality, the network
            # before the reversal R_λ learns to hide it.
            fc9 = torch.cat([acts[m]["fc9"] for m in self.modalities])
            scale = reversal_schedule(self.training_progress)
            hidden = reverse_gradient(self.discriminator_bottleneck(fc9), scale)
            modality = torch.arange(len(self.modalities), device=fc9.device)
            terms["adversarial"] = F.cross_entropy(
                self.discriminator(hidden), modality.repeat_interleave(len(y))
            )
        if c.instance_contrastive_weight > 0:
            # the optional instance-level term of every model, on the image and text embeddings
            terms["instance_contrastive"] = self.instance_contrastive(
                embeds["image"], embeds["text"], labels
            )
        if self.uses_source():
            self._source_loss(source_image_features, source_labels, acts["image"], terms)
        weights = {name: getattr(c, f"{name}_weight") for name in terms}
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
