"""UNCSM: Unified Network for Cross-media Similarity Metric (Qi, Huang & Peng, MTAP 2017)."""

import itertools
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .configuration_uncsm import UNCSMConfig
from .inputs import ModalityInputs
from .layers import FeatureMLP, check_features, gather_batch, loss_targets
from .losses import balanced_pair_mean, contrastive_loss, triplet_loss, unit_distance, weighted_sum
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel

STAGES = ("pretrain", "finetune")
QUERY_MODALITIES = ("image", "text")
# Floats per [queries, gallery, width] block when `similarity` runs the metric network.
_SCORE_ELEMENTS = 1 << 23


def batch_offset(n: int) -> int:
    """Row of this process's first sample in `gather_batch` output (batches of `n` rows)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() * n
    return 0


class MetricNetwork(nn.Module):
    """s(u, v): an MLP on `[u, v, u ⊙ v]` giving one similarity logit; u an image's, v a text's
    shared representation (the order matters).

    The first layer is split by input block, W·[u, v, u⊙v] + b = W_u·u + W_v·v + W_p·(u⊙v) + b:
    `forward` broadcasts u against v (pairs, or candidate lists); `grid` scores every image
    against every text with one matrix product instead of materialising u ⊙ v for every pair:
    for each row r of the smaller side, [c, 1]·[r ⊙ W_pᵀ + W_cᵀ; W_r·r + b] over the columns c.
    """

    def __init__(self, embed_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.image_proj = nn.Linear(embed_dim, hidden_dims[0], bias=False)
        self.text_proj = nn.Linear(embed_dim, hidden_dims[0], bias=False)
        self.product_proj = nn.Linear(embed_dim, hidden_dims[0])
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        for a, b in itertools.pairwise(hidden_dims):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(hidden_dims[-1], 1))
        self.head = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits of broadcast pairs: `[..., D]` images and texts → `[...]`."""
        h = self.image_proj(image) + self.text_proj(text) + self.product_proj(image * text)
        return self.head(h).squeeze(-1)

    def grid(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Logits `[I, T]` of every image `[I, D]` against every text `[T, D]`."""
        if len(image) <= len(text):
            return self._grid(image, self.image_proj, text, self.text_proj).T
        return self._grid(text, self.text_proj, image, self.image_proj)

    def _grid(self, rows, rows_proj: nn.Linear, cols, cols_proj: nn.Linear) -> torch.Tensor:
        """Logits `[C, R]`: first layer [c, 1]·[r ⊙ W_pᵀ + W_colsᵀ; W_rows·r + b] for each row r."""
        per_row = rows[:, :, None] * self.product_proj.weight.T + cols_proj.weight.T  # [R, D, H]
        bias = rows_proj(rows) + self.product_proj.bias
        per_row = torch.cat([per_row, bias[:, None]], dim=1).transpose(0, 1)  # [D+1, R, H]
        hidden = F.pad(cols, (0, 1), value=1.0) @ per_row.reshape(len(per_row), -1)
        return self.head(hidden.view(len(cols), len(rows), -1)).squeeze(-1)


def pathway(input_dim: int, config: UNCSMConfig) -> nn.Sequential:
    """A medium's pathway: `pathway_layers` hidden layers, then a linear map to the shared space."""
    hidden = [config.hidden_dim] * config.pathway_layers
    width = hidden[-1] if hidden else input_dim
    return nn.Sequential(
        FeatureMLP(input_dim, hidden, config.dropout), nn.Linear(width, config.embed_dim)
    )


class UNCSMPreTrainedModel(XmodalPreTrainedModel):
    config_class = UNCSMConfig
    base_model_prefix = "uncsm"


class UNCSMModel(UNCSMPreTrainedModel):
    """Two pathways into a shared unit-norm space; a metric network scores image-text pairs."""

    has_unused_parameters = True  # pre-training leaves the metric network out of the loss

    def __init__(self, config: UNCSMConfig):
        super().__init__(config)
        self.inputs = ModalityInputs(config)
        self.image_pathway = pathway(config.image_feature_dim, config)
        self.text_pathway = pathway(config.text_feature_dim, config)
        self.metric_network = (
            MetricNetwork(config.embed_dim, list(config.metric_hidden_dims))
            if config.metric_weight > 0
            else None
        )
        self.training_stage = "finetune" if self._finetunes() else "pretrain"
        self.post_init()

    def _finetunes(self) -> bool:
        return self.config.triplet_weight > 0 or self.config.metric_weight > 0

    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        """`[("pretrain", n), ("finetune", epochs − n)]`, n = `pretrain_fraction` of the epochs
        (rounded, leaving fine-tuning at least one); a stage switched off gets 0 epochs."""
        if not self._finetunes():
            return [("pretrain", epochs), ("finetune", 0)]
        n = min(math.floor(epochs * self.config.pretrain_fraction + 0.5), epochs - 1)
        return [("pretrain", n), ("finetune", epochs - n)]

    def set_training_stage(self, stage: str) -> None:
        """Choose the loss of `forward`: the contrastive pre-training or the fine-tuning terms."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage == "finetune" and not self._finetunes():
            raise ValueError(
                "the finetune stage has no loss: triplet_weight and metric_weight are 0"
            )
        self.training_stage = stage

    def get_image_features(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Shared representations of images `(batch, embed_dim)`, unit length."""
        x = self.inputs.image(image_features, pixel_values)
        return F.normalize(self.image_pathway(x), dim=1)

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shared representations of texts `(batch, embed_dim)`, unit length."""
        x = self.inputs.text(text_features, input_ids, attention_mask)
        return F.normalize(self.text_pathway(x), dim=1)

    def _pair_logits(self, queries: torch.Tensor, gallery: torch.Tensor, query_modality: str):
        """Metric network logits `[Q, G]` with the image side in its image slot: `gallery` is
        `[G, D]` (every pair) or `[Q, K, D]` (candidates per query)."""
        image_query = query_modality == "image"
        if gallery.ndim == 2:
            net = self.metric_network
            return net.grid(queries, gallery) if image_query else net.grid(gallery, queries).T
        queries = queries[:, None]
        if image_query:
            return self.metric_network(queries, gallery)
        return self.metric_network(gallery, queries)

    @torch.no_grad()
    def similarity(
        self,
        query_embeds: torch.Tensor,
        gallery_embeds: torch.Tensor,
        query_modality: str = "image",
        rerank_top_k: int | None = None,
    ) -> torch.Tensor:
        """Retrieval scores `[Q, G]` of each query against each gallery item, higher = better.

        `query_modality`: "image" (queries are image embeddings, the gallery texts) or "text".
        The metric network scores the pairs (cosine if it is off, or untrained in the
        pre-training stage). `rerank_top_k` (default `config.rerank_top_k`): 0 scores every
        pair; K > 0 scores only each query's top K by cosine, and ranks the rest below them in
        cosine order. Queries are scored in chunks.
        """
        if query_modality not in QUERY_MODALITIES:
            raise ValueError(
                f"query_modality must be one of {QUERY_MODALITIES}, got {query_modality!r}"
            )
        k = self.config.rerank_top_k if rerank_top_k is None else rerank_top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"rerank_top_k must be an integer >= 0, got {k!r}")
        dim = self.config.embed_dim
        query_embeds = check_features(query_embeds, dim, "query_embeds")
        gallery_embeds = check_features(gallery_embeds, dim, "gallery_embeds")
        q = query_embeds.to(self.device, self.dtype)
        g = gallery_embeds.to(self.device, self.dtype)
        if self.metric_network is None or self.training_stage == "pretrain":
            return (F.normalize(q, dim=1) @ F.normalize(g, dim=1).T).to(query_embeds.device)
        cols = min(k, len(g)) if k else len(g)
        width = max(dim, *self.config.metric_hidden_dims)
        rows = max(1, _SCORE_ELEMENTS // max(cols * width, len(g)))
        unit_gallery = F.normalize(g, dim=1)
        scores = torch.empty(len(q), len(g), device=q.device, dtype=q.dtype)
        for start in range(0, len(q), rows):
            chunk, out = q[start : start + rows], scores[start : start + rows]
            if not k:
                out.copy_(self._pair_logits(chunk, g, query_modality))
                continue
            cosine = F.normalize(chunk, dim=1) @ unit_gallery.T
            top = cosine.topk(cols, dim=1).indices
            learned = self._pair_logits(chunk, g[top], query_modality)
            # The rest: below every re-scored item (cosine is in [-1, 1]), in cosine order.
            out.copy_(learned.amin(1, keepdim=True) - 3 + cosine).scatter_(1, top, learned)
        return scores.to(query_embeds.device)

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
        """Embed whichever media are given; with `labels` and both media, add the loss of the
        current training stage (`set_training_stage`)."""
        u, v = self.embed_given(
            image_features, pixel_values, text_features, input_ids, attention_mask
        )
        out = CrossModalOutput(image_embeds=u, text_embeds=v)
        if not self.loss_requested(labels, return_loss):
            return out
        y = loss_targets(u, v, labels, self.config.num_labels)
        # Anchors: this process's rows; pair partners: the whole batch across processes.
        all_u, all_v, all_y = gather_batch(u), gather_batch(v), gather_batch(y)
        relevant = y @ all_y.T > 0
        c = self.config
        terms, weights = {}, {}
        if self.training_stage == "pretrain":
            # L = y·d² + (1 − y)·max(0, m − d)² over image-text pairs, anchored on each medium
            terms["contrastive"] = contrastive_loss(
                unit_distance(u, all_v), relevant, c.contrastive_margin
            ) + contrastive_loss(unit_distance(v, all_u), relevant, c.contrastive_margin)
            weights["contrastive"] = 1.0
        if self.training_stage == "finetune" and c.triplet_weight > 0:
            # L = Σ max(0, m + d(a, p) − d(a, n)), anchored on an image and on a text
            anchored = [(u, all_v, relevant), (v, all_u, relevant)]
            if c.intra_media_triplets:  # (image, image, image) and (text, text, text) too
                self_pair = torch.arange(len(u), device=u.device)[:, None] + batch_offset(len(u))
                own = relevant & (self_pair != torch.arange(len(all_u), device=u.device))
                anchored += [(u, all_u, own), (v, all_v, own)]
            terms["triplet"] = sum(
                triplet_loss(
                    unit_distance(a, b), pos, ~relevant, c.triplet_margin, c.triplet_mining
                )
                for a, b, pos in anchored
            )
            weights["triplet"] = c.triplet_weight
        if self.training_stage == "finetune" and self.metric_network is not None:
            # L = BCE(s(u, v), y) over the pairs of this process's images with all texts
            logits = self.metric_network.grid(u, all_v)
            bce = F.binary_cross_entropy_with_logits(logits, relevant.float(), reduction="none")
            terms["metric"] = balanced_pair_mean(bce, relevant)
            weights["metric"] = c.metric_weight
        if c.instance_contrastive_weight > 0:
            terms["instance_contrastive"] = self.instance_contrastive(u, v, labels)
            weights["instance_contrastive"] = c.instance_contrastive_weight
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
