"""DAML: Deep Adversarial Metric Learning for cross-modal retrieval (Xu et al., WWW 2019)."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_daml import DAMLConfig
from .inputs import ModalityInputs
from .layers import (
    FeatureMLP,
    gather_batch,
    loss_targets,
    reversal_schedule,
    reverse_gradient,
)
from .losses import metric_loss, unit_distance, weighted_sum
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel


def modality_map(input_dim: int, hidden_dims: list[int], embed_dim: int, dropout: float):
    """One modality's map into the shared space: the hidden MLP (if any), then a linear layer."""
    last = hidden_dims[-1] if hidden_dims else input_dim
    return nn.Sequential(FeatureMLP(input_dim, hidden_dims, dropout), nn.Linear(last, embed_dim))


class DAMLPreTrainedModel(XmodalPreTrainedModel):
    config_class = DAMLConfig
    base_model_prefix = "daml"


class DAMLModel(DAMLPreTrainedModel):
    """Per-modality maps into a shared space; metric, pair and adversarial losses shape it."""

    def __init__(self, config: DAMLConfig):
        super().__init__(config)
        image_hidden = list(config.image_hidden_dims) if config.nonlinear_maps else []
        text_hidden = list(config.text_hidden_dims) if config.nonlinear_maps else []
        self.inputs = ModalityInputs(config)
        self.image_map = modality_map(
            config.image_feature_dim, image_hidden, config.embed_dim, config.dropout
        )
        self.text_map = modality_map(
            config.text_feature_dim, text_hidden, config.embed_dim, config.dropout
        )
        # A switched-off component builds no module, so every parameter is trained.
        self.modality_classifier = None
        if config.adversarial_weight > 0:
            dims = list(config.modality_classifier_dims)
            self.modality_classifier = nn.Sequential(
                FeatureMLP(config.embed_dim, dims), nn.Linear(dims[-1], 1)
            )
        self.label_classifier = None
        if config.label_classification_weight > 0:
            self.label_classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.training_progress = 0.0
        self.post_init()

    def set_training_progress(self, progress: float) -> None:
        """Training progress p in [0, 1]; the gradient reversal scale is λ_p (0 at p = 0)."""
        reversal_schedule(progress)  # checks the range
        self.training_progress = float(progress)

    def get_image_features(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shared-space image embeddings `(batch, embed_dim)`, compared by cosine."""
        return self.image_map(self.inputs.image(image_features, pixel_values))

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shared-space text embeddings `(batch, embed_dim)`, compared by cosine."""
        return self.text_map(self.inputs.text(text_features, input_ids, attention_mask))

    def forward(
        self,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> CrossModalOutput:
        """Embed whichever modalities are given; with `labels` and both modalities, add the loss."""
        u, v = self.embed_given(
            image_features, pixel_values, text_features, input_ids, attention_mask
        )
        out = CrossModalOutput(image_embeds=u, text_embeds=v)
        if self.label_classifier is not None:
            out.image_logits = self.label_classifier(u) if u is not None else None
            out.text_logits = self.label_classifier(v) if v is not None else None
        if not self.loss_requested(labels, return_loss):
            return out
        config = self.config
        y = loss_targets(u, v, labels, config.num_labels)
        terms = {}
        if config.metric_learning_weight > 0:
            # Pairs of this batch's rows with the whole batch across processes.
            all_u, all_v, all_y = gather_batch(u), gather_batch(v), gather_batch(y)
            sim = (y @ all_y.T > 0).float()
            positive_fraction = (all_y @ all_y.T > 0).float().mean()

            # L_met = ½ (m(image → text) + m(text → image)) + m(image → image) + m(text → text),
            # m = mean_{same class} d² + push of different-class pairs beyond the margin
            def m(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                d2 = unit_distance(F.normalize(a, dim=1), F.normalize(b, dim=1), squared=True)
                return metric_loss(
                    d2, sim, positive_fraction, config.margin, config.negative_mining
                )

            terms["metric_learning"] = (m(u, all_v) + m(v, all_u)) / 2 + m(u, all_u) + m(v, all_v)
        if config.pair_consistency_weight > 0:
            # L_pair = mean_i ||û_i − v̂_i||² (unit-normalised embeddings of the same pair)
            terms["pair_consistency"] = (2 - 2 * F.cosine_similarity(u, v)).mean()
        if self.modality_classifier is not None:
            # L_adv = BCE(D(R_λ(û)), image) + BCE(D(R_λ(v̂)), text); R_λ reverses the gradient
            # scaled by λ_p, so D learns to tell the modalities apart and the maps to fool it.
            shared = torch.cat([F.normalize(u, dim=1), F.normalize(v, dim=1)])
            scale = reversal_schedule(self.training_progress)
            logits = self.modality_classifier(reverse_gradient(shared, scale)).squeeze(1)
            modality = torch.cat([u.new_zeros(len(u)), u.new_ones(len(v))])
            terms["adversarial"] = 2 * F.binary_cross_entropy_with_logits(logits, modality)
        if self.label_classifier is not None:
            # L_label = CE(C(u), y) + CE(C(v), y); multi-hot labels as uniform target distributions
            target = y / y.sum(1, keepdim=True).clamp_min(1)
            terms["label_classification"] = F.cross_entropy(
                out.image_logits, target
            ) + F.cross_entropy(out.text_logits, target)
        if config.instance_contrastive_weight > 0:
            terms["instance_contrastive"] = self.instance_contrastive(u, v, labels)
        weights = {name: getattr(config, f"{name}_weight") for name in terms}
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
