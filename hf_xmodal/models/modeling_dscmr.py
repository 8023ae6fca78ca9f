"""DSCMR-style supervised common-space model (Hu et al., CVPR 2019)."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_dscmr import DSCMRConfig
from .inputs import ModalityInputs
from .layers import FeatureMLP, gather_batch, loss_targets
from .losses import weighted_sum
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel


def label_similarity_nll(a: torch.Tensor, b: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """Mean of log(1 + e^θ) − S·θ with θ = cos(a, b) / 2 (DSCMR eq. 3)."""
    theta = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 2
    return (F.softplus(theta) - sim * theta).mean()


class DSCMRPreTrainedModel(XmodalPreTrainedModel):
    config_class = DSCMRConfig
    base_model_prefix = "dscmr"


class DSCMRModel(DSCMRPreTrainedModel):
    """Per-modality MLPs → shared linear common space → shared linear label layer."""

    def __init__(self, config: DSCMRConfig):
        super().__init__(config)
        hidden = list(config.hidden_dims)
        self.inputs = ModalityInputs(config)
        self.image_encoder = FeatureMLP(config.image_feature_dim, hidden, config.dropout)
        self.text_encoder = FeatureMLP(config.text_feature_dim, hidden, config.dropout)
        self.common_projection = nn.Linear(hidden[-1], config.embed_dim)
        self.label_classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.post_init()

    def get_image_features(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Common-space image embeddings `(batch, embed_dim)`, compared by cosine."""
        x = self.inputs.image(image_features, pixel_values)
        return self.common_projection(self.image_encoder(x))

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Common-space text embeddings `(batch, embed_dim)`, compared by cosine."""
        x = self.inputs.text(text_features, input_ids, attention_mask)
        return self.common_projection(self.text_encoder(x))

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
        out = CrossModalOutput(
            image_embeds=u,
            text_embeds=v,
            image_logits=self.label_classifier(u) if u is not None else None,
            text_logits=self.label_classifier(v) if v is not None else None,
        )
        if not self.loss_requested(labels, return_loss):
            return out
        y = loss_targets(u, v, labels, self.config.num_labels)
        # Pairs of this batch's rows with the whole batch across processes.
        all_u, all_v, all_y = gather_batch(u), gather_batch(v), gather_batch(y)
        sim = (y @ all_y.T > 0).float()
        terms = {
            # J1 = ||P^T U - Y||_F + ||P^T V - Y||_F (row-wise L2, averaged)
            "label_space": (out.image_logits - y).norm(dim=1).mean()
            + (out.text_logits - y).norm(dim=1).mean(),
            # J2 = likelihood of label similarity for image-image, image-text and text-text pairs
            "common_space": label_similarity_nll(u, all_u, sim)
            + label_similarity_nll(u, all_v, sim)
            + label_similarity_nll(v, all_v, sim),
            # J3 = ||U - V||_F (row-wise L2, averaged)
            "modality_invariance": (u - v).norm(dim=1).mean(),
        }
        if self.config.instance_contrastive_weight > 0:
            terms["instance_contrastive"] = self.instance_contrastive(u, v, labels)
        weights = {name: getattr(self.config, f"{name}_weight") for name in terms}
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
