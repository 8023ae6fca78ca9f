"""Output class shared by every hf_xmodal model."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class CrossModalOutput(ModelOutput):
    """Output of a cross-modal model's forward pass.

    Args:
        loss: total training loss, present when labels are given (or `return_loss=True`).
        image_embeds: what retrieval uses for images, `(batch, embed_dim)`.
        text_embeds: what retrieval uses for texts, `(batch, embed_dim)`.
        image_logits: per-image label scores `(batch, num_labels)`, if the method predicts labels.
        text_logits: per-text label scores, `(batch, num_labels)`.
        loss_terms: every weighted loss term by the name used in the config, detached.
        modality_embeds: every given modality's embeddings by name, for models that take more
            than two modalities (MHTN).
    """

    loss: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_logits: torch.Tensor | None = None
    text_logits: torch.Tensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    modality_embeds: dict[str, torch.Tensor] | None = None
