"""Small building blocks shared by the models: tensors in, tensors out, no config objects."""

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather


def check_features(features: torch.Tensor, dim: int, name: str) -> torch.Tensor:
    """Return `features` as a float tensor after checking it is `(batch, dim)` and finite."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(features)
    if features.ndim != 2 or features.shape[1] != dim:
        raise ValueError(f"{name} must have shape (batch, {dim}), got {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty: the batch has no rows")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {features.dtype}")
    if not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf (rows {bad}...)")
    return features


def labels_to_targets(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Class indices `(batch,)` or multi-hot `(batch, num_labels)` → float multi-hot targets."""
    if labels.ndim == 1:
        if labels.is_floating_point():
            raise ValueError(f"labels of shape (batch,) must be class indices, got {labels.dtype}")
        if labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(
                f"labels must lie in [0, {num_labels}), got values in "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )
        return nn.functional.one_hot(labels, num_labels).float()
    if labels.ndim == 2 and labels.shape[1] == num_labels:
        return labels.float()
    raise ValueError(
        f"labels must be class indices (batch,) or multi-hot (batch, {num_labels}), "
        f"got shape {tuple(labels.shape)}"
    )


def loss_targets(
    image_embeds: torch.Tensor | None,
    text_embeds: torch.Tensor | None,
    labels: torch.Tensor | None,
    num_labels: int,
) -> torch.Tensor:
    """The multi-hot targets of a training batch, after checking it has both media and labels of
    one batch size."""
    if labels is None or image_embeds is None or text_embeds is None:
        raise ValueError("the loss needs image_features, text_features and labels")
    if not len(labels) == len(image_embeds) == len(text_embeds):
        raise ValueError(
            f"batch sizes differ: {len(image_embeds)} images, {len(text_embeds)} texts, "
            f"{len(labels)} labels"
        )
    return labels_to_targets(labels.to(image_embeds.device), num_labels)


class FeatureMLP(nn.Sequential):
    """Linear → ReLU (→ Dropout) for each hidden size: a per-modality feature network."""

    def __init__(self, input_dim: int, hidden_dims: list[int], dropout: float = 0.0):
        layers: list[nn.Module] = []
        for hidden in hidden_dims:
            layers += [nn.Linear(input_dim, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            input_dim = hidden
        super().__init__(*layers)


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Rows of `x` from every training process, concatenated in rank order, keeping gradients.

    In-batch pairwise losses use it so that N processes with batches of B/N see the same pairs
    as one process with a batch of B. Without distributed training it returns `x`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return torch.cat(all_gather(x))


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Gradient reversal layer: the identity forward; backward multiplies the gradient by −scale.

    A classifier behind it learns to tell its inputs apart while the layers before it learn to
    make them indistinguishable (Ganin & Lempitsky, ICML 2015).
    """
    return _ReverseGradient.apply(x, scale)


def reversal_schedule(progress: float, gamma: float = 10.0) -> float:
    """λ_p = 2 / (1 + exp(−γ·p)) − 1 for training progress p in [0, 1]: 0 at the start, → 1."""
    if not 0 <= progress <= 1:
        raise ValueError(f"training progress must be in [0, 1], got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
