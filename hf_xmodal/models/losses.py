"""Losses shared by the methods: tensors in, tensors out, no config objects.

Pairwise losses take a distance matrix `d` `[anchors, partners]` and boolean masks of the same
shape (`relevant`, `positive`, `negative`), so the caller decides which pairs count.
"""

import math

import torch
import torch.nn.functional as F


def unit_distance(a: torch.Tensor, b: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Euclidean distances `[len(a), len(b)]` between unit-length rows: d² = 2 − 2·cos.

    `squared=False` returns d, its square clamped at 1e-12 before the root so the gradient of a
    zero distance stays finite.
    """
    d2 = 2 - 2 * a @ b.T
    return d2 if squared else d2.clamp(min=1e-12).sqrt()


def info_nce(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    temperature: float,
    same: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs: row i's only positive is its own pair, scored by
    cosine / `temperature`, against every other row of the other medium; pairs marked in the
    boolean `[batch, batch]` mask `same` (e.g. other captions of one image) are left out of the
    negatives. ½ (CE(image → text) + CE(text → image))."""
    u, v = F.normalize(image_embeds, dim=1), F.normalize(text_embeds, dim=1)
    logits = u @ v.T / temperature
    if same is not None:
        same = same.clone().fill_diagonal_(False)
        logits = logits.masked_fill(same, -math.inf)
    target = torch.arange(len(u), device=u.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def weighted_sum(
    terms: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = Σ_name weight[name] · term[name]; returns L and each weighted term, detached."""
    weighted = {name: weights[name] * term for name, term in terms.items()}
    return sum(weighted.values()), {name: t.detach() for name, t in weighted.items()}


def balanced_pair_mean(values: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """Mean over anchors (rows) of ½·(mean over relevant pairs) + ½·(mean over the others)."""
    rel = relevant.float()
    irr = 1 - rel
    pos = (values * rel).sum(1) / rel.sum(1).clamp(min=1)
    neg = (values * irr).sum(1) / irr.sum(1).clamp(min=1)
    return ((pos + neg) / 2).mean()


def contrastive_loss(d: torch.Tensor, relevant: torch.Tensor, margin: float) -> torch.Tensor:
    """L = y·d² + (1 − y)·max(0, m − d)², balanced over each anchor's pairs."""
    values = torch.where(relevant, d.square(), F.relu(margin - d).square())
    return balanced_pair_mean(values, relevant)


def triplet_loss(
    d: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float, mining: str
) -> torch.Tensor:
    """max(0, m + d(a, p) − d(a, n)) per anchor row a of `d`, averaged over the anchors.

    "all": each anchor's mean over its valid (p, n) triplets; "hard": its farthest positive
    against its nearest negative. Anchors without a positive or a negative add 0.
    """
    if mining == "hard":
        farthest = d.masked_fill(~positive, -math.inf).amax(1)
        nearest = d.masked_fill(~negative, math.inf).amin(1)
        return F.relu(margin + farthest - nearest).mean()
    valid = positive[:, :, None] & negative[:, None, :]
    losses = F.relu(margin + d[:, :, None] - d[:, None, :]) * valid
    return (losses.sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)).mean()


def metric_loss(
    d2: torch.Tensor,
    sim: torch.Tensor,
    positive_fraction: torch.Tensor,
    margin: float,
    mining: str = "all",
) -> torch.Tensor:
    """Mean d² over same-class pairs + the push of different-class pairs beyond the margin.

    The push is the mean [margin − d²]_+ over different-class pairs ("all") or, per row, that of
    its nearest different-class item ("hard"), averaged over the rows. `sim` marks the same-class
    pairs among this process's rows × the whole batch; means are taken with the positive fraction
    of the whole batch, so N processes average to the value of one process holding the batch.
    """
    pull = (sim * d2).mean() / positive_fraction.clamp_min(1e-12)
    hinge = (1 - sim) * F.relu(margin - d2)
    if mining == "hard":
        return pull + hinge.amax(1).mean()
    return pull + hinge.mean() / (1 - positive_fraction).clamp_min(1e-12)


def mmd(
    x: torch.Tensor, y: torch.Tensor, kernels: int = 5, kernel_mul: float = 2.0
) -> torch.Tensor:
    """Squared maximum mean discrepancy between the rows of `x` and of `y` (biased estimate).

    MMD² = mean k(x, x') + mean k(y, y') − 2·mean k(x, y), with k a sum of `kernels` Gaussian
    kernels exp(−‖a − b‖² / σ_i) whose bandwidths σ_i are the mean squared distance of the pooled
    rows (a constant, no gradient) times `kernel_mul` ** (i − kernels // 2): one kernel is the
    single Gaussian of DCKT's authors, several the multi-kernel MMD of DAN (Long et al., 2015).
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"mmd needs (n, d) and (m, d) inputs, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    z = torch.cat([x, y])
    squared = (z * z).sum(1)
    d2 = (squared[:, None] + squared[None, :] - 2 * z @ z.T).clamp_min(0)
    n = len(z)
    bandwidth = (d2.detach().sum() / max(n * n - n, 1)).clamp_min(1e-12)
    bandwidth = bandwidth / kernel_mul ** (kernels // 2)
    k = sum(torch.exp(-d2 / (bandwidth * kernel_mul**i)) for i in range(kernels))
    m = len(x)
    return k[:m, :m].mean() + k[m:, m:].mean() - 2 * k[:m, m:].mean()
