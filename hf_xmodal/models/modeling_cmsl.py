"""CMSL: fine-grained cross-media representation learning with a deep quantization attention
network (Liang, Du et al., ACM MM 2019): binary codes searched by Hamming distance."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import logging

from .configuration_cmsl import CMSLConfig
from .inputs import ModalityInputs
from .layers import FeatureMLP, gather_batch, loss_targets
from .losses import weighted_sum
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel, paired_stream
from .semantic_graph import build_semantic_graph, deepwalk, expansion_words, word_vocabulary

logger = logging.get_logger(__name__)


def pairwise_likelihood(theta: torch.Tensor, sim: torch.Tensor, weights=None) -> torch.Tensor:
    """Negative log-likelihood of the label similarity S under σ(θ): mean of log(1 + e^θ) − S·θ,
    each pair weighted by `weights` when given."""
    nll = F.softplus(theta) - sim * theta
    return (nll if weights is None else nll * weights).mean()


def balance_weights(sim: torch.Tensor) -> torch.Tensor:
    """Weights under which the similar and the dissimilar pairs of `sim` (counted over every
    process's pairs) each make half of a mean; all ones when one kind is missing."""
    counts = torch.stack([sim.sum(), sim.new_tensor(sim.numel())])
    similar, total = gather_batch(counts[None]).sum(0)
    if not 0 < similar < total:
        return torch.ones_like(sim)
    return torch.where(sim > 0, total / (2 * similar), total / (2 * (total - similar)))


def binarize(h: torch.Tensor) -> torch.Tensor:
    """b = sign(h) in {−1, +1} (0 → +1)."""
    return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """±1 codes `(batch, bits)` → bits packed into bytes `(batch, bits / 8)` (uint8, first bit the
    most significant, as `numpy.packbits`)."""
    bits = (codes > 0).to(torch.uint8).view(len(codes), -1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=codes.device)
    return (bits * weights).sum(-1, dtype=torch.uint8)


def attention_pool(items: torch.Tensor, mask: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Σ_k α_k x_k with α = softmax over the unmasked items of ⟨x_k, guide⟩ / √d; 0 when none."""
    logits = torch.einsum("bkd,bd->bk", items, guide) / items.shape[-1] ** 0.5
    alpha = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)
    return torch.einsum("bk,bkd->bd", alpha, items)


def local_similarity(
    words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Local saliency similarity `(texts, images)` of every text with every image at one scale.

    Each word attends over the image's regions by softmax(λ·cos(word, region)); its score is the
    attention-weighted cosine; the text's score is the mean over its words (0 without words).
    """
    cos = torch.einsum("tld,ind->tlin", F.normalize(words, dim=-1), F.normalize(regions, dim=-1))
    per_word = (torch.softmax(temperature * cos, dim=-1) * cos).sum(-1)
    mask = word_mask.unsqueeze(-1).to(per_word.dtype)
    return (per_word * mask).sum(1) / mask.sum(1).clamp_min(1)


class CMSLPreTrainedModel(XmodalPreTrainedModel):
    config_class = CMSLConfig
    base_model_prefix = "cmsl"

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=0.1)


class CMSLModel(CMSLPreTrainedModel):
    """Global and local-saliency representations of images and texts → binary codes."""

    def __init__(self, config: CMSLConfig):
        super().__init__(config)
        d = config.embed_dim
        self.inputs = ModalityInputs(config)
        self.image_global = nn.Sequential(
            FeatureMLP(config.image_feature_dim, [config.hidden_dim], config.dropout),
            nn.Linear(config.hidden_dim, d),
        )
        self.text_global = nn.Sequential(
            FeatureMLP(config.text_feature_dim, [config.hidden_dim], config.dropout),
            nn.Linear(config.hidden_dim, d),
        )
        self.image_hash = nn.Linear(d, config.code_bits)
        self.text_hash = nn.Linear(d, config.code_bits)
        self.region_embedding = self.word_embeddings = self.word_projection = None
        if config.local_saliency:
            self.region_embedding = nn.Linear(config.region_channels, d)
            if not config.graph_word_embeddings:  # else the fixed DeepWalk embeddings
                self.word_embeddings = nn.Embedding(config.word_vocab_size, config.graph_dim)
            self.word_projection = nn.Linear(config.graph_dim, d)
        # The semantic graph's word nodes (all words until it is built) and their DeepWalk
        # embeddings: the semantic word embeddings, and what chooses the expansion words.
        graph_words = torch.ones(config.word_vocab_size, dtype=torch.bool)
        graph_words[config.pad_word_id] = False
        self.register_buffer("graph_words", graph_words)
        self.register_buffer(
            "graph_embeddings", torch.zeros(config.word_vocab_size, config.graph_dim)
        )
        self.post_init()

    # ---------------------------------------------------------------------------------------------
    # Semantic graph (component 1)

    @torch.no_grad()
    def fit_semantic_graph(
        self, word_ids: torch.Tensor, image_index: torch.Tensor, seed: int = 0
    ) -> dict[str, float]:
        """Build the image-word graph of the training texts (`word_ids` `(texts, length)`, text t
        of image `image_index[t]`), run DeepWalk, and set the word nodes, the expansion
        embeddings (the semantic word embeddings) from it."""
        config = self.config
        if word_ids.ndim != 2 or word_ids.is_floating_point():
            raise ValueError(f"word_ids must be (texts, length) integers, got {word_ids.dtype}")
        if word_ids.min() < 0 or word_ids.max() >= config.word_vocab_size:
            raise ValueError(f"word_ids must lie in [0, word_vocab_size={config.word_vocab_size})")
        vocabulary = word_vocabulary(
            word_ids, config.pad_word_id, config.min_word_count, config.max_word_frequency
        )
        if len(vocabulary) == 0:
            raise ValueError(
                "no word is in at least min_word_count texts and at most max_word_frequency of "
                "them: the semantic graph would be empty"
            )
        self.graph_words.zero_()
        self.graph_words[vocabulary] = True
        stats = {"graph_words": len(vocabulary), "graph_nodes": len(vocabulary)}
        if not config.local_saliency or not (
            config.graph_word_embeddings or config.expansion_words
        ):
            return stats
        graph = build_semantic_graph(word_ids, image_index, vocabulary, config.pad_word_id)
        nodes = deepwalk(
            graph,
            dim=config.graph_dim,
            walks_per_node=config.walks_per_node,
            walk_length=config.walk_length,
            window=config.walk_window,
            seed=seed,
        )
        # Centred before normalising: skip-gram vectors share a common direction.
        words = nodes[: len(vocabulary)]
        words = F.normalize(words - words.mean(0), dim=1)
        self.graph_embeddings.zero_()
        self.graph_embeddings[vocabulary] = words.to(self.graph_embeddings)
        return {**stats, "graph_nodes": graph.num_nodes, "graph_edges": graph.num_edges}

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Pooled features, plus the region maps and words local saliency needs."""
        local = ("region_features", "word_ids") if self.config.local_saliency else ()
        return ("image_features", "text_features", *local)

    @classmethod
    def config_from_datasets(cls, target, source=None) -> dict:
        """The base fields, and the region map's size and channels when the data has maps."""
        fields = super().config_from_datasets(target, source)
        split = target["train"]
        if "region_features" in split.column_names:
            regions, channels = split.features["region_features"].shape
            side = round(regions**0.5)
            if side * side != regions:
                raise ValueError(f"region_features hold {regions} regions, not a square grid")
            fields |= {"region_size": side, "region_channels": channels}
        return fields

    def training_datasets(self, target, source=None) -> dict:
        """The target's training pairs with their region maps and words, after building the
        semantic graph from its words (`word_ids`) and images (`image_index` for caption data,
        else one image a row)."""
        train = target["train"]
        if self.config.local_saliency:
            if "word_ids" not in train.column_names:
                raise ValueError(
                    f"CMSL's local saliency needs 'region_features' and 'word_ids' (e.g. the "
                    f"dataset 'fashion_regions'); the training split has {train.column_names}"
                )
            columns = train.with_format("torch", columns=["word_ids"])[:]
            word_ids = columns["word_ids"].long()
            if "image_index" in train.column_names:
                image_index = torch.as_tensor(train["image_index"])
            else:
                image_index = torch.arange(len(train))
            stats = self.fit_semantic_graph(word_ids, image_index, seed=torch.initial_seed())
            logger.info(f"semantic graph: {stats}")
        return {"target": paired_stream(train, columns=self.input_columns)}

    # ---------------------------------------------------------------------------------------------
    # Representations

    def _scales(self, regions: torch.Tensor) -> list[torch.Tensor]:
        """Region sets `(batch, n_s, channels)` at each switched-on scale of a region map."""
        config = self.config
        n, c, side = config.region_size**2, config.region_channels, config.region_size
        if regions.ndim != 3 or regions.shape[1:] != (n, c):
            raise ValueError(
                f"region_features must have shape (batch, {n}, {c}) (a {side}×{side} map of "
                f"{c} channels, regions first), got {tuple(regions.shape)}"
            )
        if not regions.is_floating_point() or not torch.isfinite(regions).all():
            raise ValueError("region_features must be finite floating-point values")
        regions = regions.float()
        scales = [regions] if config.fine_regions else []
        if config.coarse_grid:
            grid = regions.transpose(1, 2).reshape(len(regions), c, side, side)
            grid = F.adaptive_avg_pool2d(grid, config.coarse_grid)
            scales.append(grid.flatten(2).transpose(1, 2))
        return scales

    def _image(self, image_features, region_features, pixel_values):
        """Global vector `(batch, d)` and region embeddings per scale (None without local)."""
        if pixel_values is not None and self.config.local_saliency and region_features is None:
            image_features, region_features = self.inputs.image_with_regions(pixel_values)
            pixel_values = None
        g = self.image_global(self.inputs.image(image_features, pixel_values))
        if not self.config.local_saliency:
            return g, None
        if region_features is None:
            raise ValueError("give region_features (or pixel_values in raw mode): local saliency")
        if len(region_features) != len(g):
            raise ValueError(f"{len(region_features)} region maps for {len(g)} images")
        return g, [self.region_embedding(r) for r in self._scales(region_features)]

    def _text(self, text_features, word_ids, input_ids, attention_mask):
        """Global vector `(batch, d)`, word embeddings `(batch, words, d)` and their mask."""
        g = self.text_global(self.inputs.text(text_features, input_ids, attention_mask))
        if not self.config.local_saliency:
            return g, None, None
        if word_ids is None:
            word_ids = input_ids
        if word_ids is None:
            raise ValueError("give word_ids (or input_ids in raw mode): local saliency")
        if word_ids.ndim != 2 or word_ids.is_floating_point() or len(word_ids) != len(g):
            raise ValueError(
                f"word_ids must be integers of shape ({len(g)}, words), got "
                f"{tuple(word_ids.shape)} {word_ids.dtype}"
            )
        if word_ids.min() < 0 or word_ids.max() >= self.config.word_vocab_size:
            raise ValueError(f"word_ids must lie in [0, {self.config.word_vocab_size})")
        # Trailing columns that are padding in every row cost attention and change nothing.
        used = (word_ids != self.config.pad_word_id).any(0).nonzero()
        word_ids = word_ids[:, : int(used.max()) + 1 if len(used) else 1].long()
        mask = self.graph_words[word_ids]
        if self.config.expansion_words:
            extra, score = expansion_words(
                word_ids, mask, self.graph_embeddings, self.graph_words, self.config.expansion_words
            )
            word_ids = torch.cat([word_ids, extra], 1)
            mask = torch.cat([mask, torch.isfinite(score)], 1)
        if self.word_embeddings is None:
            vectors = self.graph_embeddings[word_ids]
        else:
            vectors = self.word_embeddings(word_ids)
        return g, self.word_projection(vectors), mask

    def _image_code(self, g, regions) -> torch.Tensor:
        """h = tanh(W (global + attention-pooled regions, averaged over scales))."""
        if regions is not None:
            pooled = [
                attention_pool(r, torch.ones(r.shape[:2], dtype=torch.bool, device=r.device), g)
                for r in regions
            ]
            g = g + torch.stack(pooled).mean(0)
        return torch.tanh(self.image_hash(g))

    def _text_code(self, g, words, mask) -> torch.Tensor:
        """h = tanh(W (global + attention-pooled words))."""
        if words is not None:
            g = g + attention_pool(words, mask, g)
        return torch.tanh(self.text_hash(g))

    def get_image_features(
        self,
        image_features: torch.Tensor | None = None,
        region_features: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        """Image codes `(batch, code_bits)` in {−1, +1}; with `packed`, uint8 `(batch, bits/8)`."""
        codes = binarize(
            self._image_code(*self._image(image_features, region_features, pixel_values))
        )
        return pack_codes(codes) if packed else codes

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        """Text codes `(batch, code_bits)` in {−1, +1}; with `packed`, uint8 `(batch, bits/8)`."""
        parts = self._text(text_features, word_ids, input_ids, attention_mask)
        codes = binarize(self._text_code(*parts))
        return pack_codes(codes) if packed else codes

    # ---------------------------------------------------------------------------------------------
    # Training

    def forward(
        self,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        region_features: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> CrossModalOutput:
        """Codes of whichever media are given; with `labels` and both media, add the loss."""
        image = text = h_u = h_v = None
        out = CrossModalOutput()
        if image_features is not None or pixel_values is not None:
            image = self._image(image_features, region_features, pixel_values)
            h_u = self._image_code(*image)
            out.image_embeds = binarize(h_u)
        if text_features is not None or input_ids is not None:
            text = self._text(text_features, word_ids, input_ids, attention_mask)
            h_v = self._text_code(*text)
            out.text_embeds = binarize(h_v)
        if not self.loss_requested(labels, return_loss):
            return out
        config = self.config
        y = loss_targets(h_u, h_v, labels, config.num_labels)
        # Pairs of this batch's rows with the whole batch across processes.
        all_y = gather_batch(y)
        sim = (y @ all_y.T > 0).float()
        if config.binarization == "straight_through":  # sign forward, identity backward
            c_u = h_u + (binarize(h_u) - h_u).detach()
            c_v = h_v + (binarize(h_v) - h_v).detach()
        else:
            c_u, c_v = h_u, h_v
        all_u, all_v = gather_batch(c_u), gather_batch(c_v)
        # L_corr = Σ_{(a,b) ∈ image-text, image-image, text-text} mean w (log(1 + e^θ) − S θ),
        # θ_ab = ½ (⟨c_a, c_b⟩ − β bits), w balancing similar and dissimilar pairs (or 1)
        weights = balance_weights(sim) if config.balanced_pairs else None
        offset = config.correlation_threshold * config.code_bits
        terms = {
            "correlation": sum(
                pairwise_likelihood((a @ b.T - offset) / 2, sim, weights)
                for a, b in ((c_u, all_v), (c_u, all_u), (c_v, all_v))
            )
        }
        if config.local_saliency:
            # L_local = mean log(1 + e^θ) − S θ over this batch's texts × the batch's images (or
            # a random sample of them), θ = κ · mean over scales of the region-word attention
            # similarity
            (_, regions), (_, words, mask) = image, text
            regions = [gather_batch(r) for r in regions]
            columns = torch.arange(len(regions[0]), device=sim.device)
            if 0 < config.local_sample_images < len(columns):
                columns = torch.randperm(len(columns), device=sim.device)
                columns = columns[: config.local_sample_images]
            scores = [
                local_similarity(words, mask, r[columns], config.attention_temperature)
                for r in regions
            ]
            theta = config.local_logit_scale * torch.stack(scores).mean(0)
            terms["local_saliency"] = pairwise_likelihood(theta, sim[:, columns])
        if config.quantization_weight > 0:
            # L_quant = mean ‖b − h‖² per bit, both media
            terms["quantization"] = ((binarize(h_u) - h_u) ** 2).mean() + (
                (binarize(h_v) - h_v) ** 2
            ).mean()
        if config.instance_contrastive_weight > 0:
            # on the codes, with the straight-through gradient
            b_u = h_u + (binarize(h_u) - h_u).detach()
            b_v = h_v + (binarize(h_v) - h_v).detach()
            terms["instance_contrastive"] = self.instance_contrastive(b_u, b_v, labels)
        weights = {name: getattr(config, f"{name}_weight") for name in terms}
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
