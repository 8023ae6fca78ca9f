"""A toy two-domain model defined outside the package, to show that a method with its own data
(a labelled source and a target dataset, row indices), its own stages and an end-of-epoch hook
trains through the unchanged script: `--model toy_transfer:ToyTransferModel`.

It learns a shared space from the source's labelled pairs in a first stage ("source"), then
aligns the target's pairs ("target"). Every batch checks that no row appears twice in the whole
(gathered) batch, and the end-of-epoch hook reports how many target rows the epoch used.
"""

import numpy as np
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from huggingface_hub.dataclasses import strict
from torch import nn

from hf_xmodal.models.configuration_xmodal import XmodalConfig
from hf_xmodal.models.layers import gather_batch
from hf_xmodal.models.losses import weighted_sum
from hf_xmodal.models.modeling_outputs import CrossModalOutput
from hf_xmodal.models.modeling_xmodal import XmodalPreTrainedModel, paired_stream

STAGES = ("source", "target")
IMAGE_DIM, TEXT_DIM, NUM_CLASSES = 8, 6, 3


@strict
class ToyTransferConfig(XmodalConfig):
    """Args: embed_dim (`int`, defaults to 4): size of the shared space; source_fraction
    (`float`, defaults to 0.5): the share of epochs spent on the source stage."""

    model_type = "toy_transfer"
    embed_dim: int = 4
    source_fraction: float = 0.5


class ToyTransferModel(XmodalPreTrainedModel):
    config_class = ToyTransferConfig
    requires_source_dataset = True
    has_unused_parameters = True  # the target stage leaves the classifier out

    def __init__(self, config: ToyTransferConfig):
        super().__init__(config)
        self.image_map = nn.Linear(config.image_feature_dim, config.embed_dim)
        self.text_map = nn.Linear(config.text_feature_dim, config.embed_dim)
        self.classifier = nn.Linear(config.embed_dim, config.num_labels)
        self.stage = "source"
        self.rows_seen: set[int] = set()
        self.post_init()

    def training_datasets(self, target, source=None):
        target_pairs = paired_stream(target["train"], index=True)
        return {"target": target_pairs, "source": paired_stream(source["train"])}

    def training_stages(self, epochs):
        n = round(epochs * self.config.source_fraction)
        return [("source", n), ("target", epochs - n)]

    def set_training_stage(self, stage):
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage

    def on_epoch_end(self, epoch, data):
        seen, self.rows_seen = len(self.rows_seen), set()
        return {"target_rows_seen": float(seen), "target_rows": float(len(data["target"]))}

    def get_image_features(self, image_features=None, pixel_values=None):
        return self.image_map(image_features)

    def get_text_features(self, text_features=None, input_ids=None, attention_mask=None):
        return self.text_map(text_features)

    def forward(
        self,
        image_features=None,
        text_features=None,
        labels=None,
        index=None,
        source_image_features=None,
        source_text_features=None,
        source_labels=None,
        return_loss=None,
    ):
        u, v = self.embed_given(image_features, None, text_features, None, None)
        out = CrossModalOutput(image_embeds=u, text_embeds=v)
        if not self.loss_requested(labels, return_loss):
            return out
        rows = gather_batch(index).tolist()
        if len(set(rows)) != len(rows):
            raise ValueError(f"a training batch holds a row twice: {sorted(rows)}")
        self.rows_seen.update(rows)
        if self.stage == "source":
            su = self.get_image_features(source_image_features)
            sv = self.get_text_features(source_text_features)
            terms = {
                "source_classification": F.cross_entropy(self.classifier(su), source_labels)
                + F.cross_entropy(self.classifier(sv), source_labels)
            }
        else:
            terms = {"target_alignment": (1 - F.cosine_similarity(u, v)).mean()}
        out.loss, out.loss_terms = weighted_sum(terms, dict.fromkeys(terms, 1.0))
        return out


def two_domains(path, seed: int = 0) -> tuple[str, str]:
    """A source and a target DatasetDict saved under `path`: the same classes, the target's
    features shifted and scaled (another domain)."""
    rng = np.random.default_rng(seed)
    features = Features(
        {
            "image_features": List(Value("float32"), length=IMAGE_DIM),
            "text_features": List(Value("float32"), length=TEXT_DIM),
            "label": ClassLabel(names=[f"class{i}" for i in range(NUM_CLASSES)]),
        }
    )
    centres = rng.normal(size=(NUM_CLASSES, IMAGE_DIM + TEXT_DIM))
    paths = []
    for name, shift, sizes in (("source", 0.0, (150, 30, 30)), ("target", 0.5, (130, 40, 60))):
        splits = {}
        for split, n in zip(("train", "validation", "test"), sizes, strict=True):
            label = rng.integers(0, NUM_CLASSES, n)
            x = centres[label] + 0.5 * rng.normal(size=(n, IMAGE_DIM + TEXT_DIM))
            x = (1 + shift) * x + shift
            splits[split] = Dataset.from_dict(
                {
                    "image_features": x[:, :IMAGE_DIM].astype(np.float32),
                    "text_features": x[:, IMAGE_DIM:].astype(np.float32),
                    "label": label,
                },
                features=features,
            )
        DatasetDict(splits).save_to_disk(str(path / name))
        paths.append(str(path / name))
    return tuple(paths)
