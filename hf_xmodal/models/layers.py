"""Small building blocks shared by the models: tensors in, tensors out, no config objects."""

import math

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_gather

FLOAT32_MAX = torch.finfo(torch.float32).max


def as_tensor(x, name: str) -> torch.Tensor:
    """`x` (tensor, numpy array or nested list of numbers) as a tensor, or an error naming it."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        array = np.asarray(x)
        return torch.as_tensor(array if min(array.strides, default=0) >= 0 else array.copy())
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{name} must be a tensor, array or list of equal-length rows of numbers, "
            f"got {type(x).__name__} ({e})"
        ) from None


def to_float32(t: torch.Tensor, name: str) -> torch.Tensor:
    """`t` cast to float32 after checking every value is finite and within float32's range
    (float64 is rounded to float32's precision; values it cannot hold are an error)."""
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {t.dtype}")
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not finite.all():
            rows = (~finite).reshape(len(t), -1).any(1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"{name} contains NaN or inf (rows {rows}...)")
    if t.dtype == torch.float64 and t.numel():
        largest = t.abs().max().item()
        if largest > FLOAT32_MAX:
            raise ValueError(
                f"{name} has values up to {largest:.3g}, beyond float32's range "
                f"(±{FLOAT32_MAX:.3g})"
            )
    return t.float()


def check_features(features, dim: int | None, name: str) -> torch.Tensor:
    """`features` as a float32 `(batch, dim)` tensor of finite values.

    Takes tensors, numpy arrays or lists of real numbers; `dim=None` takes any width.
    """
    t = as_tensor(features, name)
    if t.ndim != 2 or (dim is not None and t.shape[1] != dim):
        width = "dim" if dim is None else dim
        raise ValueError(f"{name} must have shape (batch, {width}), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: the batch has no rows")
    return to_float32(t, name)


def check_pixel_values(pixel_values) -> torch.Tensor:
    """Normalised pixels `(batch, 3, height, width)` as float32, as the tower processor makes."""
    t = as_tensor(pixel_values, "pixel_values")
    if t.ndim != 4 or t.shape[1] != 3 or 0 in t.shape:
        raise ValueError(f"pixel_values must be (batch, 3, height, width), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(
            f"pixel_values must be normalised floats (as XmodalTowerProcessor makes), got "
            f"{t.dtype}: pass images through the processor rather than raw 0-255 pixels"
        )
    return to_float32(t, "pixel_values")


def check_tokens(
    input_ids, attention_mask, vocab_size: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids `(batch, length)` — or `(batch, windows, length)` for texts cut into windows —
    within the vocabulary and position table, and an attention mask of 0/1 with at least one
    token per text (all ones when not given)."""
    ids = as_tensor(input_ids, "input_ids")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"input_ids must be integer token ids, got {ids.dtype}")
    if ids.ndim not in (2, 3) or 0 in ids.shape:
        raise ValueError(
            "input_ids must be (batch, length) with at least one token (or (batch, windows, "
            f"length) for a text cut into windows), got {tuple(ids.shape)}"
        )
    if ids.shape[-1] > max_length:
        raise ValueError(
            f"input_ids have {ids.shape[-1]} tokens, more than the text tower's {max_length} "
            "positions: cut them into windows (the tower processor does)"
        )
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(
            f"input_ids must lie in [0, {vocab_size}) (the tower's vocabulary), got values in "
            f"[{ids.min().item()}, {ids.max().item()}]"
        )
    if attention_mask is None:
        return ids, torch.ones_like(ids)
    mask = as_tensor(attention_mask, "attention_mask")
    if mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(ids.shape)}"
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("attention_mask must hold 0 and 1 only")
    empty = (mask == 0).flatten(1).all(1).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"attention_mask rows {empty[:5].tolist()} mask every token: such a text has no "
            "embedding"
        )
    return ids, mask.to(ids.dtype)


def check_multi_hot(labels: torch.Tensor, name: str) -> torch.Tensor:
    """Multi-hot labels as bool, after checking every value is 0 or 1 (or boolean)."""
    if labels.dtype != torch.bool and not ((labels == 0) | (labels == 1)).all():
        bad = labels[(labels != 0) & (labels != 1)][:3].tolist()
        raise ValueError(
            f"{name} must be multi-hot: 0/1 or boolean, got values such as {bad} "
            "(soft or NaN labels do not say what is relevant)"
        )
    return labels != 0


def labels_to_targets(labels, num_labels: int) -> torch.Tensor:
    """Class indices `(batch,)` or multi-hot `(batch, num_labels)` → float multi-hot targets."""
    labels = as_tensor(labels, "labels")
    if labels.ndim == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"labels of shape (batch,) must be integer class indices, got {labels.dtype}"
            )
        if labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(
                f"labels must lie in [0, {num_labels}), got values in "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )
        return nn.functional.one_hot(labels.long(), num_labels).float()
    if labels.ndim == 2 and labels.shape[1] == num_labels:
        return check_multi_hot(labels, "labels").float()
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
    labels = as_tensor(labels, "labels")
    if labels.ndim == 0:
        raise ValueError(
            "labels must be one per pair (batch,) or (batch, num_labels), got a scalar"
        )
    if not len(labels) == len(image_embeds) == len(text_embeds):
        raise ValueError(
            f"batch sizes differ: {len(image_embeds)} images, {len(text_embeds)} texts, "
            f"{len(labels)} labels"
        )
    return labels_to_targets(labels, num_labels).to(image_embeds.device)


def distributed() -> bool:
    """Whether more than one training process runs."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batch_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout whose mask is drawn for the batch of every process and cut to this process's
    rows: the processes' random states agree, so N processes drop what one process with the
    whole batch drops (on CPU, exactly what `F.dropout` drops)."""
    if not training or p == 0:
        return x
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed() else (1, 0)
    n = len(x)
    noise = x.new_empty((n * world, *x.shape[1:])).bernoulli_(1 - p)[rank * n : (rank + 1) * n]
    return x * noise.div_(1 - p)


class BatchDropout(nn.Dropout):
    """`nn.Dropout` with `batch_dropout`'s mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_dropout(x, self.p, self.training)


class FeatureMLP(nn.Sequential):
    """Linear → ReLU (→ Dropout) for each hidden size: a per-modality feature network."""

    def __init__(self, input_dim: int, hidden_dims: list[int], dropout: float = 0.0):
        layers: list[nn.Module] = []
        for hidden in hidden_dims:
            layers += [nn.Linear(input_dim, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(BatchDropout(dropout))
            input_dim = hidden
        super().__init__(*layers)


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Rows of `x` from every training process, concatenated in rank order, keeping gradients.

    In-batch pairwise losses use it so that N processes with batches of B/N see the same pairs
    as one process with a batch of B. Without distributed training it returns `x`.
    """
    return torch.cat(all_gather(x)) if distributed() else x


class GatheredBatchNorm1d(nn.BatchNorm1d):
    """`BatchNorm1d` whose training statistics are those of the batch gathered from every
    process (`gather_batch`), so N processes normalise as one process with the whole batch
    (SyncBatchNorm's job, on any device). Same parameters and buffers as `BatchNorm1d`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed()):
            return super().forward(x)
        whole = gather_batch(x)
        mean, var = whole.mean(0), whole.var(0, unbiased=False)
        with torch.no_grad():
            n, momentum = len(whole), self.momentum
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * n / (n - 1), momentum)
            self.num_batches_tracked += 1
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


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
