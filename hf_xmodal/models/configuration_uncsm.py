"""Configuration of UNCSM, the Unified Network for Cross-media Similarity Metric."""

from huggingface_hub.dataclasses import strict

from .configuration_xmodal import XmodalConfig

TRIPLET_MINING = ("all", "hard")


@strict
class UNCSMConfig(XmodalConfig):
    r"""Configuration of [`UNCSMModel`], after Qi, Huang & Peng, "Cross-media Similarity Metric
    Learning with Unified Deep Networks", MTAP 2017 (arXiv 1704.04333).

    A two-pathway network (one pathway per medium) maps images and texts into a shared,
    L2-normalised representation; a metric network scores an (image, text) pair of shared
    representations, and retrieval ranks by that score. Training has two stages (see
    [`UNCSMModel.training_stages`]): *pretrain* with the contrastive loss, then *finetune* with
    the double triplet loss and the metric network's binary cross-entropy, trained jointly.

    Only the paper's abstract is public: its sizes, margins and learning rates are not ("not
    public" below), and everything marked *(reading)* is this package's reading of it. The
    defaults were chosen on the Wikipedia validation split (see the model card).

    Args:
        hidden_dim (`int`, defaults to 1024): width of each pathway's hidden layers (not
            public).
        pathway_layers (`int`, defaults to 1): hidden layers (Linear → ReLU) in each medium's
            pathway before the linear map into the shared space; 0 makes each pathway a single
            linear map, switching the deep two-pathway network off (not public).
        embed_dim (`int`, defaults to 128): size of the shared representation (not public).
        dropout (`float`, defaults to 0.7): dropout after each pathway hidden layer (not public).
        pretrain_fraction (`float`, defaults to 0.5): share of the epochs spent in the
            contrastive pre-training stage, `L = y·d² + (1 − y)·max(0, m − d)²` over the batch's
            image-text pairs, y = 1 for relevant pairs; 0 switches pre-training off. It is moot
            (all epochs pre-train) when the fine-tuning stage has no loss.
        contrastive_margin (`float`, defaults to 1.0): the margin m, on distances between unit
            vectors (0 to 2) (not public).
        triplet_weight (`float`, defaults to 1.0): weight of the double triplet loss of the
            fine-tuning stage, `max(0, m + d(a, p) − d(a, n))` over the batch's triplets anchored
            on an image (relevant vs irrelevant text) and on a text (relevant vs irrelevant
            image); 0 switches it off (paper: 1 (reading: an unweighted sum)).
        triplet_margin (`float`, defaults to 0.2): the triplet margin m (not public).
        triplet_mining (`str`, defaults to `"all"`): `"all"` averages over every valid triplet
            of the batch; `"hard"` takes, per anchor, its farthest relevant and nearest
            irrelevant item (batch-hard). The paper samples triplets (reading).
        intra_media_triplets (`bool`, defaults to `False`): also anchor triplets within a medium
            (image, relevant image, irrelevant image; the same for texts); the anchor itself is
            never its own positive (paper: `False`; "double" means both anchor media (reading)).
        metric_weight (`float`, defaults to 1.0): weight of the metric network's binary
            cross-entropy on the batch's relevant / irrelevant image-text pairs in the
            fine-tuning stage (paper: 1 (reading)). 0 switches the metric network off: the model
            has none and retrieval ranks by cosine in the shared space.
        metric_hidden_dims (`list[int]`, defaults to `[64]`): hidden sizes of the metric
            network, whose input is `[u, v, u ⊙ v]` for image u and text v (reading; not public).
        rerank_top_k (`int`, defaults to 0): how `similarity` ranks when not told: 0 scores every
            gallery item with the metric network; K > 0 ranks the gallery by cosine and re-scores
            only each query's top K with it (the rest follow in cosine order), for large
            galleries. Evaluation uses this setting too.
        retrieval_metric (`str`, *optional*): `"learned"` when the metric network is on,
            `"cosine"` when `metric_weight` is 0; set from `metric_weight` when not given.

    The pair terms balance relevant and irrelevant pairs: each anchor's mean over its relevant
    pairs and its mean over its irrelevant pairs count half each (reading: the paper samples
    similar and dissimilar pairs).

    The defaults were chosen by validation MAP on Wikipedia (40 epochs, batch 100, Adam lr 1e-3,
    β1 0.5, seed 0, one change at a time from embed_dim 128, metric_hidden_dims [64]): dropout
    {0, 0.2, 0.5, 0.7}, triplet margin {0.1, 0.2, 0.5}, mining {all, hard}, pretrain_fraction
    {0.25, 0.5, 0.75}, contrastive margin {0.5, 1}, hidden_dim {512, 1024}, (embed_dim,
    metric_hidden_dims) {(64, [64]), (128, [64]), (128, [128]), (256, [256])}, learning rate
    {1e-4, 1e-3}, weight decay {0, 0.01}, batch {100, 200}; the best three were rerun with
    seeds 1 and 2. They suit class-level relevance on small data. On caption data (Flickr8k tower
    features, relevance = the same image) `{"pathway_layers": 0, "embed_dim": 256,
    "triplet_mining": "hard", "pretrain_fraction": 0.2}` did far better on validation; on Fashion
    tower features, `{"pretrain_fraction": 0.25, "dropout": 0.2}` (standardised features, seed 0:
    validation MAP 0.8978 against 0.8590 for the defaults and 0.9157 for label prediction;
    `input_dropout` 0.5: 0.8003).
    """

    model_type = "uncsm"

    hidden_dim: int = 1024
    pathway_layers: int = 1
    embed_dim: int = 128
    dropout: float | int = 0.7
    pretrain_fraction: float | int = 0.5
    contrastive_margin: float | int = 1.0
    triplet_weight: float | int = 1.0
    triplet_margin: float | int = 0.2
    triplet_mining: str = "all"
    intra_media_triplets: bool = False
    metric_weight: float | int = 1.0
    metric_hidden_dims: list[int] | tuple[int, ...] = (64,)
    rerank_top_k: int = 0
    retrieval_metric: str | None = None

    def __post_init__(self, **kwargs):
        metric = "learned" if self.metric_weight > 0 else "cosine"
        if self.retrieval_metric is None:
            self.retrieval_metric = metric
        elif self.retrieval_metric != metric:
            raise ValueError(
                f"retrieval_metric must be {metric!r} when metric_weight is "
                f"{self.metric_weight}, got {self.retrieval_metric!r}"
            )
        super().__post_init__(**kwargs)

    def validate_uncsm(self):
        """Reject values that cannot build or train a model."""
        for name in ("hidden_dim", "embed_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.pathway_layers < 0:
            raise ValueError(f"pathway_layers must be >= 0, got {self.pathway_layers}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.pretrain_fraction < 1:
            raise ValueError(f"pretrain_fraction must be in [0, 1), got {self.pretrain_fraction}")
        for name in ("contrastive_margin", "triplet_margin"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("triplet_weight", "metric_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.triplet_mining not in TRIPLET_MINING:
            raise ValueError(
                f"triplet_mining must be one of {TRIPLET_MINING}, got {self.triplet_mining!r}"
            )
        if not self.metric_hidden_dims or any(h <= 0 for h in self.metric_hidden_dims):
            raise ValueError(
                "metric_hidden_dims must be a non-empty list of positive sizes, "
                f"got {self.metric_hidden_dims}"
            )
        if self.rerank_top_k < 0:
            raise ValueError(f"rerank_top_k must be >= 0, got {self.rerank_top_k}")
        if self.pretrain_fraction == 0 and self.triplet_weight == 0 and self.metric_weight == 0:
            raise ValueError(
                "nothing to train: pretrain_fraction, triplet_weight and metric_weight are all 0"
            )
