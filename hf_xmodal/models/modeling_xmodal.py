"""The base of every hf_xmodal model: weight initialisation and embedding the media given."""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init


class XmodalPreTrainedModel(PreTrainedModel):
    """Xavier-initialised linear layers; a model defines `get_image_features` and
    `get_text_features`, and its `forward` embeds whichever media it is given."""

    main_input_name = "image_features"

    def _init_weights(self, module: nn.Module):
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

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

    @staticmethod
    def loss_requested(labels: torch.Tensor | None, return_loss: bool | None) -> bool:
        """A loss is computed when labels are given, unless `return_loss=False`."""
        return return_loss is not False and (labels is not None or bool(return_loss))
