"""DCKT: Deep Cross-media Knowledge Transfer (Huang & Peng, CVPR 2018)."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging

from .configuration_dckt import DCKTConfig
from .inputs import ModalityInputs
from .layers import (
    BatchDropout,
    GatheredBatchNorm1d,
    check_features,
    gather_batch,
    labels_to_targets,
    loss_targets,
)
from .losses import mmd, weighted_sum
from .modeling_outputs import CrossModalOutput
from .modeling_xmodal import XmodalPreTrainedModel, paired_stream

logger = logging.get_logger(__name__)

STAGES = ("source_pretrain", "target_pretrain", "transfer")
MEDIA = ("image", "text")


def fc_block(input_dim: int, output_dim: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    """Linear (→ BatchNorm over every process's batch) → ReLU (→ Dropout)."""
    layers: list[nn.Module] = [nn.Linear(input_dim, output_dim)]
    if batch_norm:
        layers.append(GatheredBatchNorm1d(output_dim))
    layers.append(nn.ReLU())
    if dropout > 0:
        layers.append(BatchDropout(dropout))
    return nn.Sequential(*layers)


class DomainNetwork(nn.Module):
    """One domain's network: per modality fc6 → fc7, then fc8 → fc9 → fc10 (the classifier)
    shared by its modalities."""

    def __init__(self, dims: dict[str, int], num_labels: int, config):
        super().__init__()
        h, bn, p = config.hidden_dim, config.batch_norm, config.dropout
        self.branches = nn.ModuleDict(
            {
                modality: nn.ModuleList([fc_block(dim, h, bn, p), fc_block(h, h, bn, p)])
                for modality, dim in dims.items()
            }
        )
        self.fc8 = fc_block(h, config.fc8_dim, bn, p)
        self.fc9 = fc_block(config.fc8_dim, config.fc9_dim, bn, p)
        self.fc10 = nn.Linear(config.fc9_dim, num_labels)

    def forward(self, x: torch.Tensor, modality: str) -> dict[str, torch.Tensor]:
        """Activations of fc6 … fc10 (fc10: the class logits) for a batch of one modality."""
        fc6, fc7 = self.branches[modality]
        acts = {"fc6": fc6(x)}
        acts["fc7"] = fc7(acts["fc6"])
        acts["fc8"] = self.fc8(acts["fc7"])
        acts["fc9"] = self.fc9(acts["fc8"])
        acts["fc10"] = self.fc10(acts["fc9"])
        return acts


def represent(acts: dict[str, torch.Tensor], representation: str) -> torch.Tensor:
    """The retrieval representation: `"softmax"` of fc10 or the `"fc9"` activations."""
    return acts["fc9"] if representation == "fc9" else acts["fc10"].softmax(1)


def semantic_loss(image_logits, text_logits, targets) -> torch.Tensor:
    """Per pair: softmax cross-entropy of fc10 for the image plus for the text `[batch]`;
    multi-hot labels are uniform target distributions."""
    targets = targets / targets.sum(1, keepdim=True).clamp_min(1)
    return F.cross_entropy(image_logits, targets, reduction="none") + F.cross_entropy(
        text_logits, targets, reduction="none"
    )


def pair_distance(image_acts, text_acts) -> torch.Tensor:
    """Per pair: ½‖image − text‖² at fc6 plus at fc7 `[batch]` (Caffe's Euclidean loss)."""
    return sum(0.5 * (image_acts[k] - text_acts[k]).square().sum(1) for k in ("fc6", "fc7"))


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·x / Σ w over the batch of every process (0 when no weight is positive)."""
    values, weights = gather_batch(values), gather_batch(weights)
    return (weights * values).sum() / weights.sum().clamp_min(1e-12)


def per_query_average_precision(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """AP of every row of `scores` `[Q, G]` over the gallery, relevance `relevant` `[Q, G]`;
    ties keep gallery order (stable sort); a query with no relevant item gets 0."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranked = relevant.gather(1, order).float()
    hits = ranked.cumsum(1)
    precision = hits / torch.arange(1, scores.shape[1] + 1, device=scores.device)
    return (precision * ranked).sum(1) / hits[:, -1].clamp_min(1)


def selection_probability(consistency: torch.Tensor, round_: int, alpha: float) -> torch.Tensor:
    """Prob(q) = α·(1 − log2((max AP − AP^q) / (max AP·r) + 1)) of each target pair q in round r,
    with AP^q min-max normalised over the pairs (max AP = 1): the most consistent pair gets α,
    the least α·(1 − log2(1 + 1/r)), 0 in round 1."""
    if round_ < 1:
        raise ValueError(f"rounds count from 1, got {round_}")
    low, high = consistency.min(), consistency.max()
    normalised = (consistency - low) / (high - low) if high > low else torch.ones_like(consistency)
    return alpha * (1 - torch.log2((1 - normalised) / round_ + 1))


class PairSelection(nn.Module):
    """The progressive transfer's state: each target training pair's weight in the current round
    (1 selected, 0 not) and its latest consistency AP^q (the rows of one buffer, sized by the
    target training set, so loading a state resizes it first), and the rounds trained."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pairs", torch.zeros(2, 0))
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))

    @property
    def weights(self) -> torch.Tensor:
        return self.pairs[0]

    @property
    def consistency(self) -> torch.Tensor:
        return self.pairs[1]

    def update(self, weights: torch.Tensor, consistency: torch.Tensor) -> None:
        self.pairs = torch.stack([weights.float(), consistency.float()]).to(self.pairs.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "pairs" in state_dict:
            self.pairs = torch.empty_like(state_dict[prefix + "pairs"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class DCKTPreTrainedModel(XmodalPreTrainedModel):
    config_class = DCKTConfig
    base_model_prefix = "dckt"


class DCKTModel(DCKTPreTrainedModel):
    """Source and target networks of the same shape, no shared weights; MMD at fc6-fc9 carries
    the source's knowledge; progressive rounds select the target pairs to train on."""

    requires_source_dataset = True
    has_unused_parameters = True  # each pre-training stage trains one domain's network
    # The training state of the rounds, not part of the published model.
    _keys_to_ignore_on_save = ["selection.pairs", "selection.rounds"]
    _keys_to_ignore_on_load_missing = _keys_to_ignore_on_save

    def __init__(self, config: DCKTConfig):
        super().__init__(config)
        self.inputs = ModalityInputs(config)
        dims = {"image": config.image_feature_dim, "text": config.text_feature_dim}
        self.target = DomainNetwork(dims, config.num_labels, config)
        image_dim, text_dim, num_labels = config.source_dims()
        self.source = DomainNetwork({"image": image_dim, "text": text_dim}, num_labels, config)
        self.selection = PairSelection()
        self.training_stage = "transfer"
        self.post_init()

    # ----------------------------------------------------------------------------------------
    # Training data, stages and rounds

    @classmethod
    def config_from_datasets(cls, target, source=None) -> dict:
        """The target's feature sizes and labels, and the source's as `source_*`."""
        fields = super().config_from_datasets(target)
        if source is not None:
            own = super().config_from_datasets(source)
            if "text_feature_dim" not in own:
                raise ValueError(
                    "DCKT's source must hold image-text pairs, but its train split has no "
                    "text_features (a source of images alone suits MHTN)"
                )
            fields["source_image_feature_dim"] = own["image_feature_dim"]
            fields["source_text_feature_dim"] = own["text_feature_dim"]
            fields["source_num_labels"] = (
                len(own["id2label"]) if "id2label" in own else own["num_labels"]
            )
        return fields

    def training_datasets(self, target, source=None) -> dict:
        """The target's training pairs with their row `index` (the rounds select rows) and, when
        training `uses_source`, the source's training pairs."""
        streams = {"target": paired_stream(target["train"], index=True)}
        if self.uses_source():
            if source is None:
                raise ValueError("DCKT transfers from a source: give a source dataset")
            streams["source"] = paired_stream(source["train"])
        return streams

    def training_stages(self, epochs: int) -> list[tuple[str, int]]:
        """`[("source_pretrain", n_s), ("target_pretrain", n_t), ("transfer", rest)]`, n_s and
        n_t the configured fractions of the epochs (rounded; n_s = 0 when the source semantic
        term is off), leaving the transfer rounds at least one epoch."""
        c = self.config
        n_s = math.floor(epochs * c.source_pretrain_fraction + 0.5)
        if c.source_semantic_weight == 0:
            n_s = 0
        n_t = math.floor(epochs * c.target_pretrain_fraction + 0.5)
        n_s = min(n_s, max(epochs - 1, 0))
        n_t = min(n_t, max(epochs - 1 - n_s, 0))
        return [
            ("source_pretrain", n_s),
            ("target_pretrain", n_t),
            ("transfer", epochs - n_s - n_t),
        ]

    def uses_source(self) -> bool:
        """Whether training uses the source: its semantic term (pre-training and rounds) or an
        MMD is on."""
        c = self.config
        return any(
            w > 0 for w in (c.source_semantic_weight, c.media_mmd_weight, c.correlation_mmd_weight)
        )

    def set_training_stage(self, stage: str) -> None:
        """Choose the loss of `forward`: the source's or the target's own terms (pre-training),
        or every term with the selected target pairs (`"transfer"`)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.training_stage = stage

    @torch.no_grad()
    def cross_media_consistency(
        self, image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """AP^q of every target training pair q: AP of image q as a query over the pairs' texts
        plus AP of text q over their images, ranked by the cosine of the softmax outputs of the
        `consistency_network` (the source network by default), relevant = sharing a label."""
        network = self.source if self.config.consistency_network == "source" else self.target
        was_training = network.training
        network.eval()
        image = check_features(image_features, self.config.image_feature_dim, "image_features")
        text = check_features(text_features, self.config.text_feature_dim, "text_features")
        p = F.normalize(network(image.to(self.device), "image")["fc10"].softmax(1), dim=1)
        q = F.normalize(network(text.to(self.device), "text")["fc10"].softmax(1), dim=1)
        network.train(was_training)
        y = labels_to_targets(labels.to(self.device), self.config.num_labels)
        relevant = y @ y.T > 0
        scores = p @ q.T
        return per_query_average_precision(scores, relevant) + per_query_average_precision(
            scores.T, relevant
        )

    def select_pairs(
        self, image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """Score the target training pairs (rows in dataset order, as the batches' `index`) and
        draw the pairs of the next round. Within the transfer stage each call ends a round:
        with adaptive feedback the scores are recomputed with the updated model, otherwise
        those of the first round are kept. The draw is seeded by torch's seed and the round."""
        sel = self.selection
        if self.training_stage == "transfer":
            sel.rounds += 1
        round_ = int(sel.rounds) + 1
        consistency = sel.consistency
        rescore = (
            self.config.adaptive_feedback or sel.rounds == 0 or len(consistency) != len(labels)
        )
        if rescore:
            consistency = self.cross_media_consistency(image_features, text_features, labels)
        prob = selection_probability(consistency, round_, self.config.selection_alpha).cpu()
        generator = torch.Generator().manual_seed(torch.initial_seed() + round_)
        sel.update(torch.rand(len(prob), generator=generator) < prob, consistency)
        return {
            "round": float(round_),
            "pairs_selected": float(sel.weights.sum()),
            "mean_consistency": float(sel.consistency.mean()),
            "consistency_rescored": float(rescore),
        }

    def on_epoch_end(self, epoch: int, data: dict) -> dict[str, float]:
        """With progressive transfer, after each target pre-training or transfer epoch: select
        the pairs of the next round from the `"target"` training stream (`training_datasets`)."""
        if not self.config.progressive_transfer or self.training_stage == "source_pretrain":
            return {}
        columns = data["target"].with_format("torch")[:]
        return self.select_pairs(
            columns["image_features"], columns["text_features"], columns["labels"]
        )

    # ----------------------------------------------------------------------------------------
    # Embedding

    def _represent(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        return represent(acts, self.config.retrieval_representation)

    def get_image_features(
        self, image_features: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Target images' retrieval representations: softmax(fc10) or fc9, compared by cosine."""
        return self._represent(
            self.target(self.inputs.image(image_features, pixel_values), "image")
        )

    def get_text_features(
        self,
        text_features: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Target texts' retrieval representations: softmax(fc10) or fc9, compared by cosine."""
        x = self.inputs.text(text_features, input_ids, attention_mask)
        return self._represent(self.target(x, "text"))

    # ----------------------------------------------------------------------------------------
    # Loss

    def _pair_weights(self, index: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """Each target row's weight: its selection in the current round (transfer stage with
        progressive transfer, once a selection exists), else 1."""
        ones = torch.ones(batch, device=device)
        if self.training_stage != "transfer" or not self.config.progressive_transfer:
            return ones
        weights = self.selection.weights
        if len(weights) == 0:
            logger.warning_once(
                "DCKT transfer stage without a pair selection (on_epoch_end was not called "
                "after target pre-training): every target pair is used"
            )
            return ones
        if index is None:
            raise ValueError("the transfer stage needs the batch's `index` column (row numbers)")
        if index.min() < 0 or index.max() >= len(weights):
            raise ValueError(
                f"index values must lie in [0, {len(weights)}), the selected target training "
                f"set, got [{index.min().item()}, {index.max().item()}]"
            )
        return weights.to(device)[index.to(device)]

    def _source_acts(self, image, text, labels):
        if image is None or text is None or labels is None:
            raise ValueError(
                f"the {self.training_stage} stage needs source_image_features, "
                "source_text_features and source_labels (a source dataset)"
            )
        image_dim, text_dim, num_labels = self.config.source_dims()
        image = check_features(image, image_dim, "source_image_features")
        text = check_features(text, text_dim, "source_text_features")
        if not len(labels) == len(image) == len(text):
            raise ValueError(
                f"source batch sizes differ: {len(image)} images, {len(text)} texts, "
                f"{len(labels)} labels"
            )
        y = labels_to_targets(labels.to(image.device), num_labels)
        return self.source(image, "image"), self.source(text, "text"), y

    def forward(
        self,
        image_features: torch.Tensor | None = None,
        text_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
        source_image_features: torch.Tensor | None = None,
        source_text_features: torch.Tensor | None = None,
        source_labels: torch.Tensor | None = None,
    ) -> CrossModalOutput:
        """Embed whichever target media are given; with `labels`, add the loss of the current
        training stage (`set_training_stage`), which also takes the source batch
        (`source_*`) and the target rows' `index` in the training set."""
        acts = {}
        if image_features is not None or pixel_values is not None:
            acts["image"] = self.target(self.inputs.image(image_features, pixel_values), "image")
        if text_features is not None or input_ids is not None:
            x = self.inputs.text(text_features, input_ids, attention_mask)
            acts["text"] = self.target(x, "text")
        out = CrossModalOutput(
            image_embeds=self._represent(acts["image"]) if "image" in acts else None,
            text_embeds=self._represent(acts["text"]) if "text" in acts else None,
            image_logits=acts["image"]["fc10"] if "image" in acts else None,
            text_logits=acts["text"]["fc10"] if "text" in acts else None,
        )
        if not self.loss_requested(labels, return_loss):
            return out
        c, stage = self.config, self.training_stage
        y = loss_targets(out.image_embeds, out.text_embeds, labels, c.num_labels)
        embeds = (out.image_embeds, out.text_embeds)
        terms = {}

        def add(name: str, value: torch.Tensor) -> None:
            if getattr(c, f"{name}_weight") > 0:
                terms[name] = terms.get(name, 0) + value

        if c.instance_contrastive_weight > 0:
            # the optional instance-level term of every model, on the target's embeddings
            add("instance_contrastive", self.instance_contrastive(*embeds, labels))
        if stage in ("target_pretrain", "transfer"):
            w = self._pair_weights(index, len(y), y.device)
            t_img, t_txt = acts["image"], acts["text"]
            # L_sem(T) = CE(fc10(image), y) + CE(fc10(text), y) over the selected pairs
            add("semantic", weighted_mean(semantic_loss(t_img["fc10"], t_txt["fc10"], y), w))
            # L_pair(T) = ½‖fc6_image − fc6_text‖² + ½‖fc7_image − fc7_text‖² per pair
            add("pair_consistency", weighted_mean(pair_distance(t_img, t_txt), w))
        if stage == "source_pretrain" or (stage == "transfer" and self.uses_source()):
            s_img, s_txt, s_y = self._source_acts(
                source_image_features, source_text_features, source_labels
            )
            add("source_semantic", semantic_loss(s_img["fc10"], s_txt["fc10"], s_y).mean())
            add("pair_consistency", pair_distance(s_img, s_txt).mean())
        if stage == "transfer" and self.uses_source():
            # The MMDs compare the whole batch of every process: N processes train as one.
            selected = gather_batch(w) > 0
            if selected.any():
                s_img, s_txt = ({k: gather_batch(v) for k, v in s.items()} for s in (s_img, s_txt))
                t_img = {k: gather_batch(v)[selected] for k, v in t_img.items()}
                t_txt = {k: gather_batch(v)[selected] for k, v in t_txt.items()}

                def discrepancy(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                    return mmd(source, target, c.mmd_kernels, c.mmd_kernel_mul)

                # Media level: MMD(S, T) at fc6 and fc7, per medium
                add(
                    "media_mmd",
                    sum(
                        discrepancy(s[k], t[k])
                        for s, t in ((s_img, t_img), (s_txt, t_txt))
                        for k in ("fc6", "fc7")
                    ),
                )

                # Correlation level: MMD(S, T) of the shared fc8 (×1) and fc9 (×2), both media
                def both(x: dict, layer: str) -> torch.Tensor:
                    return torch.cat([x[0][layer], x[1][layer]])

                add(
                    "correlation_mmd",
                    discrepancy(both((s_img, s_txt), "fc8"), both((t_img, t_txt), "fc8"))
                    + 2 * discrepancy(both((s_img, s_txt), "fc9"), both((t_img, t_txt), "fc9")),
                )
        weights = {name: getattr(c, f"{name}_weight") for name in terms}
        out.loss, out.loss_terms = weighted_sum(terms, weights)
        return out
