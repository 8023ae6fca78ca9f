"""Configuration of DCKT, Deep Cross-media Knowledge Transfer."""

from huggingface_hub.dataclasses import strict

from .configuration_xmodal import XmodalConfig

REPRESENTATIONS = ("softmax", "fc9")
CONSISTENCY_NETWORKS = ("source", "target")
LOSS_WEIGHTS = (
    "semantic_weight",
    "source_semantic_weight",
    "media_mmd_weight",
    "correlation_mmd_weight",
    "pair_consistency_weight",
)


def validate_transfer_network(config: XmodalConfig, loss_weights: tuple[str, ...]) -> None:
    """The checks DCKT and MHTN share: layer sizes, dropout, loss weights (the semantic one
    positive), the MMD kernels and the retrieval representation."""
    name = type(config).__name__.removesuffix("Config")
    for field in ("hidden_dim", "fc8_dim", "fc9_dim", "mmd_kernels"):
        if getattr(config, field) <= 0:
            raise ValueError(f"{field} must be positive, got {getattr(config, field)}")
    if config.source_num_labels is not None and config.source_num_labels <= 0:
        raise ValueError(f"source_num_labels must be positive, got {config.source_num_labels}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    for field in loss_weights:
        if getattr(config, field) < 0:
            raise ValueError(f"{field} must be >= 0, got {getattr(config, field)}")
    if config.semantic_weight == 0:
        raise ValueError("semantic_weight is 0: nothing would train the target classifier")
    if config.mmd_kernel_mul <= 1 and config.mmd_kernels > 1:
        raise ValueError(f"mmd_kernel_mul must be > 1, got {config.mmd_kernel_mul}")
    if config.retrieval_representation not in REPRESENTATIONS:
        raise ValueError(
            f"retrieval_representation must be one of {REPRESENTATIONS}, "
            f"got {config.retrieval_representation!r}"
        )
    if config.retrieval_metric != "cosine":
        raise ValueError(
            f"retrieval_metric must be 'cosine' for {name}, got {config.retrieval_metric!r}"
        )


@strict
class DCKTConfig(XmodalConfig):
    r"""Configuration of [`DCKTModel`], after Huang & Peng, "Deep Cross-media Knowledge Transfer",
    CVPR 2018, and its authors' public Caffe code.

    Two networks of the same shape, one for the large source domain S and one for the small
    target domain T, share no weights, so S and T may have different input features and label
    sets (`source_*` below; the target's are the base fields). Per domain and medium,
    input → fc6 → fc7; then fc8 → fc9 shared by the domain's two media, and the classifier fc10.
    Retrieval uses the target network. Loss (each term a numbered component of METHODS.md):
    `L = semantic_weight·L_sem(T) + source_semantic_weight·L_sem(S)
    + media_mmd_weight·(MMD_fc6 + MMD_fc7 per medium)
    + correlation_mmd_weight·(MMD_fc8 + 2·MMD_fc9) + pair_consistency_weight·L_pair(S, T)`.
    Training has three stages ([`DCKTModel.training_stages`]): source pre-training, target
    pre-training, then progressive transfer rounds, one per epoch.

    Args:
        hidden_dim (`int`, defaults to 512): width of fc6 and fc7 of each medium (paper: 4096).
        fc8_dim (`int`, defaults to 256): width of the shared fc8 (paper: 4096 (reading)).
        fc9_dim (`int`, defaults to 128): width of the shared fc9 (paper: 4096 (reading)).
        batch_norm (`bool`, defaults to `True`): BatchNorm before each ReLU of fc6-fc9 (paper:
            `True`).
        dropout (`float`, defaults to 0.5): dropout after each ReLU (paper: 0.5 (reading)).
            Chosen on the validation splits of three labelled datasets (target alone, MAP
            average, against no dropout): Wikipedia SIFT/LDA 0.2769 against 0.2617 (seeds 0-2),
            `wikipedia_minilm` 0.3133 (seeds 0-2) against 0.2945 (seed 0), Fashion tower
            features 0.9160 against 0.9131 (seed 0). Retrieving by fc9 instead of the softmax
            lowered the first two (0.2739, 0.2963) and left Fashion level (0.9162). With
            Wikipedia as the target of a Fashion source, 0.5 with `retrieval_representation="fc9"`
            is chosen on validation (seed 0: MAP 0.281, against 0.270 without them).
        source_image_feature_dim (`int`, *optional*): size of the source images' features;
            `None` means the target's `image_feature_dim`.
        source_text_feature_dim (`int`, *optional*): size of the source texts' features; `None`
            means the target's `text_feature_dim`.
        source_num_labels (`int`, *optional*): number of source classes; `None` means
            `num_labels`.
        semantic_weight (`float`, defaults to 1.0): component 2 in T: softmax cross-entropy of
            fc10 for image and text (paper: 1).
        source_semantic_weight (`float`, defaults to 0.2): component 2 in S (paper: 0.2); 0
            also skips source pre-training.
        media_mmd_weight (`float`, defaults to 0.1): component 3, media-level transfer: MMD
            between S and T activations at fc6 and at fc7, for the image branch and for the text
            branch (paper: 1 each). Chosen on validation (class-disjoint Fashion, 20 pairs per
            target class, seed 0): at 1 with five kernels the weighted MMDs are 17 times the
            target's semantic loss (0.61 vs 0.036 in round 10) and the rounds peak at MAP
            0.867; one kernel 0.888; 0.1 with one kernel 0.892.
        correlation_mmd_weight (`float`, defaults to 0.1): component 4, correlation-level
            transfer: MMD between S and T activations of fc8 (×1) and fc9 (×2), images and texts
            together (paper: 1, i.e. fc8 1 and fc9 2); chosen with `media_mmd_weight`.
        pair_consistency_weight (`float`, defaults to 1e-4): component 5: ½‖fc_image − fc_text‖²
            of each pair at fc6 and fc7, averaged over pairs, in each domain (paper: 1e-4).
        mmd_kernels (`int`, defaults to 1): Gaussian kernels of the MMD, bandwidths spread by
            `mmd_kernel_mul` around the batch's mean squared distance (paper: 1, a single
            Gaussian with the batch's bandwidth; 5 is the multi-kernel MMD of DAN, which scored
            lower on validation).
        mmd_kernel_mul (`float`, defaults to 2.0): ratio of consecutive kernel bandwidths.
        progressive_transfer (`bool`, defaults to `True`): component 6: in each transfer round
            r, train on the target pairs selected with probability
            `Prob(q) = α·(1 − log2((max AP − AP^q) / (max AP·r) + 1))` from their cross-media
            domain consistency AP^q (min-max normalised over the pairs); `False` trains every
            round on every target pair (paper: `True`).
        adaptive_feedback (`bool`, defaults to `True`): component 6: recompute AP^q with the
            updated model before each round; `False` keeps the scores of the first round, only
            r grows (paper: `True`).
        selection_alpha (`float`, defaults to 1.0): α, the selection probability of the most
            consistent pair, in (0, 1] (paper: not stated (reading: 1)).
        consistency_network (`str`, defaults to `"source"`): the network that scores AP^q: the
            source network on the target pairs (the authors; needs S and T to share input
            feature sizes) or `"target"` (for domains with different input spaces).
        source_pretrain_fraction (`float`, defaults to 0.25): share of the epochs pre-training
            the source network on S (its semantic and pair terms).
        target_pretrain_fraction (`float`, defaults to 0.25): share of the epochs pre-training
            the target network on T (its semantic and pair terms); the remaining epochs (at
            least one) are transfer rounds.
        retrieval_representation (`str`, defaults to `"softmax"`): what `get_*_features` return:
            `"softmax"` of the target fc10 (the authors) or the target `"fc9"` activations;
            compared by cosine.

    Setting a weight to 0 switches its component off. "Target only" (no transfer) sets
    source_semantic_weight, media_mmd_weight, correlation_mmd_weight and
    source_pretrain_fraction to 0 and progressive_transfer to false (the card's baseline): the
    target network alone, trained on every target pair with its semantic and pair terms.
    """

    model_type = "dckt"

    hidden_dim: int = 512
    fc8_dim: int = 256
    fc9_dim: int = 128
    batch_norm: bool = True
    dropout: float | int = 0.5
    source_image_feature_dim: int | None = None
    source_text_feature_dim: int | None = None
    source_num_labels: int | None = None
    semantic_weight: float | int = 1.0
    source_semantic_weight: float | int = 0.2
    media_mmd_weight: float | int = 0.1
    correlation_mmd_weight: float | int = 0.1
    pair_consistency_weight: float | int = 1e-4
    mmd_kernels: int = 1
    mmd_kernel_mul: float | int = 2.0
    progressive_transfer: bool = True
    adaptive_feedback: bool = True
    selection_alpha: float | int = 1.0
    consistency_network: str = "source"
    source_pretrain_fraction: float | int = 0.25
    target_pretrain_fraction: float | int = 0.25
    retrieval_representation: str = "softmax"

    def source_dims(self) -> tuple[int, int, int]:
        """The source domain's (image feature size, text feature size, number of classes)."""
        return (
            self.source_image_feature_dim or self.image_feature_dim,
            self.source_text_feature_dim or self.text_feature_dim,
            self.source_num_labels or self.num_labels,
        )

    def validate_dckt(self):
        """Reject values that cannot build or train a model."""
        validate_transfer_network(self, LOSS_WEIGHTS)
        for name in ("source_image_feature_dim", "source_text_feature_dim"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.selection_alpha <= 1:
            raise ValueError(f"selection_alpha must be in (0, 1], got {self.selection_alpha}")
        if self.consistency_network not in CONSISTENCY_NETWORKS:
            raise ValueError(
                f"consistency_network must be one of {CONSISTENCY_NETWORKS}, "
                f"got {self.consistency_network!r}"
            )
        if self.progressive_transfer and self.consistency_network == "source":
            for medium in ("image", "text"):
                own = getattr(self, f"{medium}_feature_dim")
                source = getattr(self, f"source_{medium}_feature_dim")
                if source is not None and source != own:
                    raise ValueError(
                        f"consistency_network='source' scores target pairs with the source "
                        f"network, but source_{medium}_feature_dim ({source}) differs from "
                        f"{medium}_feature_dim ({own}): use consistency_network='target'"
                    )
        fractions = (self.source_pretrain_fraction, self.target_pretrain_fraction)
        if any(f < 0 for f in fractions) or sum(fractions) >= 1:
            raise ValueError(
                "source_pretrain_fraction and target_pretrain_fraction must be >= 0 and leave "
                f"epochs for the transfer rounds, got {fractions}"
            )
