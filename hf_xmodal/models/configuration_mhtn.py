"""Configuration of MHTN, the Modal-adversarial Hybrid Transfer Network."""

from huggingface_hub.dataclasses import strict

from .configuration_dckt import validate_transfer_network
from .configuration_xmodal import TOWER_DIMS, XmodalConfig

LOSS_WEIGHTS = (
    "source_semantic_weight",
    "single_modal_mmd_weight",
    "cross_modal_weight",
    "semantic_weight",
    "adversarial_weight",
)


@strict
class MHTNConfig(XmodalConfig):
    r"""Configuration of [`MHTNModel`], after Huang, Peng & Yuan, "MHTN: Modal-adversarial Hybrid
    Transfer Network for Cross-modal Retrieval", IEEE TCyb (arXiv 1708.04308), and its authors'
    public Caffe code.

    Transfer from a single-modal labelled source (images only: `source_image_features`, of the
    target images' feature size, since source and target images share the image trunk, here the
    frozen image tower or feature extractor) to a target with two or more modalities: `image`,
    `text` and any `extra_modalities`. Each target modality has its own fc6 → fc7 branch, the
    source images theirs (with a source classifier); fc8 → fc9 (the common representation
    generator) and the semantic classifier fc10 are shared by every target modality. Loss (each
    term a numbered component of METHODS.md):
    `L = source_semantic_weight·CE_S + single_modal_mmd_weight·(MMD_fc6 + MMD_fc7)
    + cross_modal_weight·L_star + semantic_weight·Σ_m CE_m + adversarial_weight·L_adv`.

    Args:
        extra_modalities (`dict[str, int]`, *optional*): target modalities beyond image and
            text, name → feature size (e.g. tags: 384); a batch carries them as
            `<name>_features` (or, in raw mode, `<name>_input_ids` / `<name>_attention_mask`
            through the text tower, so their size must then be 384).
        hidden_dim (`int`, defaults to 512): width of fc6 and fc7 of each branch (paper: 4096).
        fc8_dim (`int`, defaults to 256): width of the common fc8 (paper: 4096 (reading)).
        fc9_dim (`int`, defaults to 128): width of the common fc9 (paper: 4096 (reading)).
        batch_norm (`bool`, defaults to `True`): BatchNorm before each ReLU of fc6-fc9 (paper:
            `False` (reading)).
        dropout (`float`, defaults to 0.5): dropout after each ReLU (paper: 0.5 (reading)).
            Chosen on the validation splits of three labelled datasets (target alone, MAP
            average, against no dropout; seeds 0-2): Wikipedia SIFT/LDA 0.2769 against 0.2607,
            `wikipedia_minilm` 0.3111 against 0.2882, Fashion tower features 0.9161 (seed 0:
            0.9154 against 0.9139).
        source_num_labels (`int`, *optional*): number of source classes; `None` means
            `num_labels`.
        source_semantic_weight (`float`, defaults to 1.0): component 1a: softmax cross-entropy
            of the source classifier on the source images' fc7 (paper: 1).
        single_modal_mmd_weight (`float`, defaults to 0.1): component 1a, single-modal transfer:
            MMD between source and target image activations at fc6 and at fc7 (paper: 1 each).
            Chosen on validation with `mmd_kernels` (class-disjoint Fashion with tags, seed 0,
            MAP over the six directions): 0.1 with one kernel 0.670, 1 with one kernel 0.661,
            1 with five kernels 0.663, no transfer 0.665 (differences within seed noise).
        cross_modal_weight (`float`, defaults to 1e-4): component 1b, the star cross-modal
            transfer: ½‖image − m‖² at fc6 and fc7 between each pair's target image and every
            other modality m, averaged over pairs (paper: 1e-4).
        semantic_weight (`float`, defaults to 1.0): component 2: softmax cross-entropy of the
            shared classifier fc10 for every target modality (paper: 1).
        adversarial_weight (`float`, defaults to 0.1): component 2: cross-entropy of the
            modality discriminator on fc9 of every target modality, behind a gradient reversal
            whose scale follows λ_p = 2 / (1 + exp(−10p)) − 1 over training progress p (paper:
            0.1).
        discriminator_bottleneck (`int`, defaults to 64): the discriminator's bottleneck before
            the reversal (paper: 512).
        discriminator_hidden_dims (`list[int]`, defaults to `[128, 128]`): its hidden layers after
            the reversal (paper: `[1024, 1024]`).
        mmd_kernels (`int`, defaults to 1): Gaussian kernels of the MMD (paper: 1, a single
            Gaussian with the batch's bandwidth; more kernels, as in DAN, spread their
            bandwidths by `mmd_kernel_mul`).
        mmd_kernel_mul (`float`, defaults to 2.0): ratio of consecutive kernel bandwidths.
        retrieval_representation (`str`, defaults to `"softmax"`): what `get_*_features` return:
            `"softmax"` of fc10 (the authors) or `"fc9"`; compared by cosine.

    Setting a weight to 0 switches its component off (its module is not built). "Target only"
    (no transfer) sets source_semantic_weight and single_modal_mmd_weight to 0 (the card's
    baseline): the source images are not used at all.
    """

    model_type = "mhtn"

    extra_modalities: dict[str, int] | None = None
    hidden_dim: int = 512
    fc8_dim: int = 256
    fc9_dim: int = 128
    batch_norm: bool = True
    dropout: float | int = 0.5
    source_num_labels: int | None = None
    source_semantic_weight: float | int = 1.0
    single_modal_mmd_weight: float | int = 0.1
    cross_modal_weight: float | int = 1e-4
    semantic_weight: float | int = 1.0
    adversarial_weight: float | int = 0.1
    discriminator_bottleneck: int = 64
    discriminator_hidden_dims: list[int] | tuple[int, ...] = (128, 128)
    mmd_kernels: int = 1
    mmd_kernel_mul: float | int = 2.0
    retrieval_representation: str = "softmax"

    def modality_dims(self) -> dict[str, int]:
        """Every target modality's feature size, image and text first."""
        return {
            "image": self.image_feature_dim,
            "text": self.text_feature_dim,
            **(self.extra_modalities or {}),
        }

    def validate_mhtn(self):
        """Reject values that cannot build or train a model."""
        validate_transfer_network(self, LOSS_WEIGHTS)
        for name, dim in (self.extra_modalities or {}).items():
            if name in ("image", "text", "source") or not name.isidentifier():
                raise ValueError(
                    f"extra_modalities: {name!r} is not a valid modality name (an identifier "
                    "other than image, text and source)"
                )
            if not isinstance(dim, int) or dim <= 0:
                raise ValueError(f"extra_modalities[{name!r}] must be a positive size, got {dim}")
            if self.input_mode == "raw" and dim != TOWER_DIMS["text_feature_dim"]:
                raise ValueError(
                    f"extra_modalities[{name!r}] must be {TOWER_DIMS['text_feature_dim']} (the "
                    "text tower's output) in raw mode"
                )
        dims = [self.discriminator_bottleneck, *self.discriminator_hidden_dims]
        if not self.discriminator_hidden_dims or any(h <= 0 for h in dims):
            raise ValueError(
                "discriminator_bottleneck and discriminator_hidden_dims must be positive sizes "
                f"(a non-empty list), got {self.discriminator_bottleneck}, "
                f"{self.discriminator_hidden_dims}"
            )
