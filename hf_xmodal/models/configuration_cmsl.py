"""Configuration of CMSL, the deep quantization attention network for cross-media search."""

from huggingface_hub.dataclasses import strict

from .configuration_xmodal import XmodalConfig

CODE_BITS = (16, 32, 64, 128)
BINARIZATIONS = ("relaxed", "straight_through")


@strict
class CMSLConfig(XmodalConfig):
    r"""Configuration of [`CMSLModel`], after Liang, Du et al., "Fine-grained Cross-media
    Representation Learning with Deep Quantization Attention Network", ACM MM 2019.

    Each medium gets a binary code b = sign(h) of `code_bits` bits, h = tanh(W f), from a
    fine-grained representation f = global + local saliency: images from their pooled features
    and their region maps at one or two scales, texts from their sentence features and their
    words (with semantic expansion words), words embedded from an image-word semantic correlation
    graph by DeepWalk. Retrieval ranks by Hamming distance. Loss, each term a numbered component:
    `L = correlation_weight·L_corr + local_saliency_weight·L_local + quantization_weight·‖b − h‖²`.

    Only the abstract of the paper is public: sizes, weights and the exact forms below are
    readings, chosen on validation data and marked as such.

    Args:
        code_bits (`int`, defaults to 64): bits per code, one of 16, 32, 64, 128 (paper: 16, 32,
            64).
        hidden_dim (`int`, defaults to 512): hidden size of each medium's global network.
        embed_dim (`int`, defaults to 128): size of the fine-grained space shared by the global
            vectors, the regions and the words.
        dropout (`float`, defaults to 0.0): dropout after the hidden layer of the global networks.
        region_channels (`int`, defaults to 320): channels of the cached region maps (the image
            tower's last block: 320 at 7×7 for 224-px images).
        region_size (`int`, defaults to 7): side of the region map.
        fine_regions (`bool`, defaults to `True`): component 2, the fine scale: every cell of the
            `region_size`² map is a region.
        coarse_grid (`int`, defaults to 3): component 2, the coarse scale: the map average-pooled
            to a `coarse_grid`² grid of regions; 0 switches the scale off.
        local_saliency_weight (`float`, defaults to 1.0): component 2, local saliency: regions
            and words are embedded in the shared space; for every image-text pair of the batch
            each word attends over the regions of each scale (softmax of the temperature times
            their cosine), giving the local similarity s(i, j) = mean over the text's words of
            the attention-weighted cosine, averaged over scales, trained with the same pairwise
            likelihood as the codes on θ = `local_logit_scale`·s (the weight); each item's code
            also takes its regions (words), pooled by attention to its own global vector. 0 makes
            the codes global only, and the model takes no regions or words.
        local_sample_images (`int`, defaults to 25): the local similarity of the batch's texts
            is computed with this many of the batch's images, drawn at random each step (its
            cost grows with texts × images × words × regions); 0 takes every image.
        attention_temperature (`float`, defaults to 10.0): λ of the region-word attention (SCAN's
            λ₁ = 9 is a close published value).
        local_logit_scale (`float`, defaults to 10.0): scale of the local similarity in the
            pairwise likelihood.
        word_vocab_size (`int`, defaults to 30522): range of the word ids, those of the text
            tower's tokenizer (MiniLM's WordPiece vocabulary).
        pad_word_id (`int`, defaults to 0): the padding id in `word_ids`.
        graph_word_embeddings (`bool`, defaults to `True`): component 1, semantic word embeddings:
            words are the DeepWalk embeddings of the semantic graph's word nodes (centred, unit
            length, fixed; a trained linear map takes them into the shared space); `False` learns
            a word table from a random start instead.
        expansion_words (`int`, defaults to 5): component 1, semantic expansion: each text gets
            the k graph words nearest to its own words in the DeepWalk space as extra words; 0
            switches expansion off.
        graph_dim (`int`, defaults to 64): size of the DeepWalk node embeddings (and of the word
            table); DeepWalk's paper: 128.
        walks_per_node (`int`, defaults to 10): random walks started from every node (DeepWalk: 80).
        walk_length (`int`, defaults to 20): steps of each truncated walk (DeepWalk: 40).
        walk_window (`int`, defaults to 3): skip-gram window (DeepWalk: 10).
        min_word_count (`int`, defaults to 2): a word is a graph node if it is in at least this
            many training texts ...
        max_word_frequency (`float`, defaults to 0.3): ... and in at most this fraction of them
            (leaves out stop words).
        correlation_weight (`float`, defaults to 1.0): component 3, the cross-media correlation
            loss: mean of log(1 + e^θ) − S·θ with θ = ½⟨h_a, h_b⟩ (S = 1 for pairs sharing a label)
            over the image-text (inter-media), image-image and text-text (intra-media) pairs of
            the batch (DCMH's pairwise likelihood, the paper's reading).
        correlation_threshold (`float`, defaults to 0.0): component 3, β of the correlation
            loss's θ = ½(⟨h_a, h_b⟩ − β·`code_bits`): a pair is as likely similar as not when its
            codes agree on a fraction (1 + β)/2 of the bits (0: DCMH's θ). Higher values pull
            the codes of a class closer together, lower ones push classes further apart; which
            helps depends on the data (validation MAP, 64 bits, seed 0, without regions; Fashion
            over 20 epochs at 3e-3: 0.7343 at 0, 0.8754 at 0.125, 0.8770 at 0.25, 0.8677 at 0.375,
            0.8602 at 0.5; with the defaults 0.8721 at 0.25, 0.5476 at −0.1; Wikipedia with the
            defaults: 0.2761 at 0, 0.2543 at 0.25, 0.2896 at −0.1). Fashion takes
            `{"correlation_threshold": 0.25}`, Wikipedia's SIFT and LDA features
            `{"local_saliency_weight": 0, "correlation_threshold": -0.1}`.
        balanced_pairs (`bool`, defaults to `True`): component 3, the correlation loss weighs
            similar and dissimilar pairs to half of it each (HashNet's weighting, a reading):
            with many classes the dissimilar pairs otherwise swamp it.
        quantization_weight (`float`, defaults to 0.1): component 3, the quantization loss
            mean ‖b − h‖² per bit.
        binarization (`str`, defaults to `"relaxed"`): how the correlation loss sees the codes:
            `"relaxed"` takes h = tanh(W f) itself (the quantization loss pulls it to ±1),
            `"straight_through"` takes sign(h) forward with the identity gradient backward.
        retrieval_metric (`str`, defaults to `"hamming"`): always `"hamming"`: `get_*_features`
            return ±1 codes (or packed bits).

    The pair weighting and the training settings were chosen on Fashion validation (43 article
    types, 2,000 training products, 64 bits, seed 0, validation MAP average), first with the
    threshold at 0: unweighted 0.4814 at `scripts/train.py`'s learning rate 1e-3 over 10 epochs,
    0.5588 at 3e-3; balanced 0.5706 and 0.6682 (balanced over 10 epochs, at 1e-2: 0.6556; at 3e-3
    with θ divided by 8: 0.6455, straight-through: 0.5081); balanced at 3e-3 over 20 epochs
    0.7276. With the threshold at 0.25, at 3e-3: 0.7944 over 20 epochs, 0.8283 over 60 (0.8301
    over 100; at 1e-2 over 20: 0.7668). Train it on Fashion with `--learning_rate 3e-3` and 60
    epochs for 2,000 products (the whole training split without regions: 0.8883 over 40
    epochs, 0.8770 over 20).
    """

    model_type = "cmsl"

    code_bits: int = 64
    hidden_dim: int = 512
    embed_dim: int = 128
    dropout: float | int = 0.0
    region_channels: int = 320
    region_size: int = 7
    fine_regions: bool = True
    coarse_grid: int = 3
    local_saliency_weight: float | int = 1.0
    local_sample_images: int = 25
    attention_temperature: float | int = 10.0
    local_logit_scale: float | int = 10.0
    word_vocab_size: int = 30522
    pad_word_id: int = 0
    graph_word_embeddings: bool = True
    expansion_words: int = 5
    graph_dim: int = 64
    walks_per_node: int = 10
    walk_length: int = 20
    walk_window: int = 3
    min_word_count: int = 2
    max_word_frequency: float | int = 0.3
    correlation_weight: float | int = 1.0
    correlation_threshold: float | int = 0.0
    balanced_pairs: bool = True
    quantization_weight: float | int = 0.1
    binarization: str = "relaxed"
    retrieval_metric: str = "hamming"

    @property
    def local_saliency(self) -> bool:
        return self.local_saliency_weight > 0

    def validate_cmsl(self):
        """Reject values that cannot build or train a model."""
        if self.code_bits not in CODE_BITS:
            raise ValueError(f"code_bits must be one of {CODE_BITS}, got {self.code_bits}")
        for name in ("hidden_dim", "embed_dim", "region_channels", "region_size", "graph_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("walks_per_node", "walk_length", "walk_window", "min_word_count"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.coarse_grid < self.region_size:
            raise ValueError(
                f"coarse_grid must be in [0, region_size={self.region_size}), "
                f"got {self.coarse_grid}"
            )
        if self.local_saliency and not (self.fine_regions or self.coarse_grid):
            raise ValueError(
                "local saliency needs a region scale: set fine_regions or coarse_grid "
                "(or local_saliency_weight=0)"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.max_word_frequency <= 1:
            raise ValueError(f"max_word_frequency must be in (0, 1], got {self.max_word_frequency}")
        if not 0 <= self.pad_word_id < self.word_vocab_size:
            raise ValueError(f"pad_word_id must be in [0, word_vocab_size), got {self.pad_word_id}")
        names = ("expansion_words", "local_saliency_weight", "quantization_weight")
        for name in (*names, "local_sample_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("attention_temperature", "local_logit_scale", "correlation_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not -1 < self.correlation_threshold < 1:
            raise ValueError(
                f"correlation_threshold must be in (-1, 1), got {self.correlation_threshold}"
            )
        if self.binarization not in BINARIZATIONS:
            raise ValueError(
                f"binarization must be one of {BINARIZATIONS}, got {self.binarization!r}"
            )
        if self.retrieval_metric != "hamming":
            raise ValueError(
                f"retrieval_metric must be 'hamming' for CMSL (binary codes), "
                f"got {self.retrieval_metric!r}"
            )
