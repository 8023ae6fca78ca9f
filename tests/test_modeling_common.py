"""The common test matrix: every model class, built from a tiny config by its tester, passes
the same checks.

A tester (as transformers' `CLIPVisionModelTester` beside `ModelTesterMixin`) knows how to build
its model and the batches it takes. `ModelTester` covers image-text models trained on labelled
pairs; a model that trains on other batches (a source stream, more media, row indices)
subclasses it and overrides `training_batch`. Each model registers one row in `MODEL_TESTERS`.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor

import hf_xmodal
from hf_xmodal.models import (
    CMSLModel,
    DAMLModel,
    DCKTModel,
    DSCMRModel,
    MHTNModel,
    UNCSMModel,
    XmodalProcessor,
)

NUM_LABELS = 4
IMAGE_DIM, TEXT_DIM = 12, 6


class ModelTester:
    """A tiny config of `model_class` (with `config_kwargs`) and the batches it takes."""

    feature_dims = {"image": IMAGE_DIM, "text": TEXT_DIM}

    def __init__(self, model_class, **config_kwargs):
        self.model_class = model_class
        self.config_kwargs = config_kwargs

    def get_config(self):
        dims = {f"{medium}_feature_dim": dim for medium, dim in self.feature_dims.items()}
        return self.model_class.config_class(**dims, num_labels=NUM_LABELS, **self.config_kwargs)

    def make_model(self):
        torch.manual_seed(0)
        return self.model_class(self.get_config())

    def inputs(self, batch_size: int = 6) -> dict[str, torch.Tensor]:
        """Features of every medium, as `forward` takes them without a loss."""
        g = torch.Generator().manual_seed(1)
        return {
            f"{medium}_features": torch.randn(batch_size, dim, generator=g)
            for medium, dim in self.feature_dims.items()
        }

    def training_batch(self, batch_size: int = 6) -> dict[str, torch.Tensor]:
        """A batch with everything the loss needs."""
        return {**self.inputs(batch_size), "labels": torch.arange(batch_size) % NUM_LABELS}


class TransferModelTester(ModelTester):
    """A transfer model: its training batch also carries a source batch (`source_<column>`)."""

    def __init__(self, model_class, source_columns: tuple[str, ...], **config_kwargs):
        super().__init__(model_class, **config_kwargs)
        self.source_columns = source_columns

    def training_batch(self, batch_size: int = 6) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(2)
        source = {
            "image_features": torch.randn(batch_size, IMAGE_DIM, generator=g),
            "text_features": torch.randn(batch_size, TEXT_DIM, generator=g),
            "labels": torch.arange(batch_size) % NUM_LABELS,
        }
        batch = super().training_batch(batch_size)
        return batch | {f"source_{c}": source[c] for c in self.source_columns}


MODEL_TESTERS = [
    pytest.param(ModelTester(DSCMRModel, hidden_dims=[16], embed_dim=8), id="dscmr"),
    pytest.param(
        ModelTester(
            DAMLModel,
            image_hidden_dims=[16],
            text_hidden_dims=[16],
            embed_dim=8,
            modality_classifier_dims=[4],
            label_classification_weight=1.0,
        ),
        id="daml",
    ),
    pytest.param(
        ModelTester(UNCSMModel, hidden_dim=16, embed_dim=8, metric_hidden_dims=[8, 4]),
        id="uncsm",
    ),
    # Codes from the global vectors only: the matrix's batches have no region maps or words
    # (tests/test_cmsl.py covers local saliency and the semantic graph).
    pytest.param(
        ModelTester(CMSLModel, code_bits=16, hidden_dim=16, embed_dim=8, local_saliency_weight=0.0),
        id="cmsl",
    ),
    pytest.param(
        TransferModelTester(
            DCKTModel,
            ("image_features", "text_features", "labels"),
            hidden_dim=16,
            fc8_dim=8,
            fc9_dim=8,
        ),
        id="dckt",
    ),
    pytest.param(
        TransferModelTester(
            MHTNModel,
            ("image_features", "labels"),  # its source has images only
            hidden_dim=16,
            fc8_dim=8,
            fc9_dim=8,
            discriminator_bottleneck=4,
            discriminator_hidden_dims=[4],
        ),
        id="mhtn",
    ),
]


def stages(model):
    """Each training stage a model has."""
    return [name for name, _ in model.training_stages(100)]


every_model = pytest.mark.parametrize("tester", MODEL_TESTERS)


@every_model
def test_output_shapes_and_finite_loss(tester):
    model = tester.make_model()
    batch = tester.training_batch()
    for stage in stages(model):
        model.set_training_stage(stage)
        out = model(**batch)
        assert out.image_embeds.shape[0] == out.text_embeds.shape[0] == 6
        assert out.image_embeds.shape[1:] == out.text_embeds.shape[1:]
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), stage
        assert out.loss_terms and all(torch.isfinite(t) for t in out.loss_terms.values())


@every_model
def test_instance_contrastive_term_prefers_the_true_pairs(tester):
    """The optional InfoNCE term is in the loss at its weight, and lower when each text sits
    with its own image than when the texts are shuffled."""
    model = ModelTester(
        tester.model_class, **tester.config_kwargs, instance_contrastive_weight=2.0
    ).make_model()
    batch = tester.training_batch()
    for stage in stages(model):
        model.set_training_stage(stage)
        out = model(**batch)
        assert "instance_contrastive" in out.loss_terms
        u, v = out.image_embeds, out.text_embeds
        term = model.instance_contrastive(u, v, batch["labels"])
        torch.testing.assert_close(out.loss_terms["instance_contrastive"], 2.0 * term.detach())
    aligned = torch.eye(6) * 5.0
    labels = torch.arange(6)
    assert model.instance_contrastive(aligned, aligned, labels) < model.instance_contrastive(
        aligned, aligned.roll(1, 0), labels
    )
    off = tester.make_model()(**batch)
    assert "instance_contrastive" not in off.loss_terms


@every_model
def test_input_dropout_acts_in_training_only(tester):
    """`input_dropout` changes the training pass of every medium, and nothing in eval mode."""
    plain = tester.make_model()
    dropped = ModelTester(
        tester.model_class, **tester.config_kwargs, input_dropout=0.5
    ).make_model()
    inputs = tester.inputs()
    outputs = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            for name, model in (("plain", plain), ("dropped", dropped)):
                getattr(model, mode)()
                torch.manual_seed(3)  # the same draws for every other dropout
                outputs[mode, name] = model(**inputs)
    for medium in plain.modalities:
        key = f"{medium}_embeds"
        torch.testing.assert_close(outputs["eval", "plain"][key], outputs["eval", "dropped"][key])
        assert not torch.allclose(outputs["train", "plain"][key], outputs["train", "dropped"][key])


@every_model
def test_every_trainable_parameter_gets_a_gradient(tester):
    model = tester.make_model()
    model.set_training_progress(0.5)  # schedules such as gradient reversal are 0 at the start
    trained = set()
    for stage in stages(model):
        model.set_training_stage(stage)
        model.zero_grad()
        model(**tester.training_batch()).loss.backward()
        trained |= {
            n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
        }
    missing = {n for n, p in model.named_parameters() if p.requires_grad} - trained
    assert not missing, f"parameters without gradient: {sorted(missing)}"


@every_model
def test_unused_parameters_are_declared(tester):
    """A stage whose loss leaves a parameter without gradient must be declared (DDP needs it)."""
    model = tester.make_model()
    assert model.training_stages(10) and sum(n for _, n in model.training_stages(10)) == 10
    unused = False
    for stage in stages(model):
        model.set_training_stage(stage)
        model.zero_grad(set_to_none=True)
        model(**tester.training_batch()).loss.backward()
        unused |= any(p.grad is None for p in model.parameters() if p.requires_grad)
    assert tester.model_class.has_unused_parameters == unused


@every_model
def test_eval_is_deterministic_and_features_match_forward(tester):
    model = tester.make_model().eval()
    inputs = tester.inputs()
    with torch.no_grad():
        out1, out2 = model(**inputs), model(**inputs)
        for medium in model.modalities:
            embeds = model.embed_features(medium, inputs[f"{medium}_features"])
            torch.testing.assert_close(out1[f"{medium}_embeds"], out2[f"{medium}_embeds"])
            torch.testing.assert_close(out1[f"{medium}_embeds"], embeds)
    assert out1.loss is None


@every_model
def test_batched_encode_matches_the_features_of_one_pass(tester):
    model = tester.make_model().train()
    inputs = tester.inputs(10)
    with torch.no_grad():
        model.eval()
        expected = {m: model.embed_features(m, inputs[f"{m}_features"]) for m in model.modalities}
        model.train()
    for medium in model.modalities:
        features = inputs[f"{medium}_features"]
        torch.testing.assert_close(model.encode(features, medium, batch_size=3), expected[medium])
        assert model.training  # restored
        as_lists = features.tolist()
        torch.testing.assert_close(model.encode(as_lists, medium, batch_size=4), expected[medium])
        unit = model.encode(features, medium, normalize=True)
        torch.testing.assert_close(unit.norm(dim=1), torch.ones(10))
    images, texts = tester.inputs(10)["image_features"], tester.inputs(10)["text_features"]
    torch.testing.assert_close(model.encode_images(images), expected["image"])
    processor = XmodalProcessor(image_feature_dim=IMAGE_DIM, text_feature_dim=TEXT_DIM)
    torch.testing.assert_close(
        model.encode_texts(texts.numpy(), processor=processor), expected["text"]
    )
    bits = model.encode_images(images, precision="binary")
    width = expected["image"].shape[1]
    assert bits.dtype == torch.uint8 and bits.shape == (10, (width + 7) // 8)
    assert (bits.numpy() == np.packbits((expected["image"] > 0).numpy(), axis=1)).all()


@pytest.mark.parametrize(
    "inputs, options, message",
    [
        (["a photo"], {}, "need the model's processor"),
        (torch.randn(2, IMAGE_DIM), {"modality": "audio"}, "modality must be one of"),
        (torch.randn(2, IMAGE_DIM), {"precision": "int8"}, "precision must be one of"),
        (torch.randn(2, IMAGE_DIM), {"batch_size": 0}, "batch_size must be a positive"),
        (torch.randn(0, IMAGE_DIM), {}, "no image inputs"),
    ],
)
def test_encode_rejects_bad_arguments_clearly(inputs, options, message):
    model = ModelTester(DSCMRModel, hidden_dims=[16], embed_dim=8).make_model()
    with pytest.raises(ValueError, match=message):
        model.encode(inputs, **options)


@every_model
def test_batch_size_one(tester):
    model = tester.make_model().eval()
    with torch.no_grad():
        out = model(**tester.inputs(1))
    assert all(out[f"{medium}_embeds"].shape[0] == 1 for medium in model.modalities)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image_features": torch.randn(3, IMAGE_DIM + 1)}, "image_features must have shape"),
        ({"text_features": torch.randn(3, TEXT_DIM, 2)}, "text_features must have shape"),
        ({"image_features": torch.full((3, IMAGE_DIM), float("nan"))}, "NaN"),
        ({"image_features": torch.zeros(3, IMAGE_DIM, dtype=torch.bool)}, "real numbers"),
    ],
)
@every_model
def test_clear_error_on_bad_input(tester, bad, message):
    model = tester.make_model()
    with pytest.raises(ValueError, match=message):
        model(**bad)


@every_model
def test_clear_error_on_bad_labels(tester):
    model = tester.make_model()
    batch = tester.training_batch()
    with pytest.raises(ValueError, match="labels"):
        model(**{**batch, "labels": torch.full((6,), NUM_LABELS)})
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(**{**batch, "labels": batch["labels"][:3]})


@every_model
def test_invalid_config_value_names_the_field(tester):
    with pytest.raises(Exception, match="image_feature_dim"):
        tester.model_class.config_class(image_feature_dim=0, **tester.config_kwargs)


def save_model_and_processor(model, path):
    model.save_pretrained(path)
    XmodalProcessor(image_feature_dim=IMAGE_DIM, text_feature_dim=TEXT_DIM).save_pretrained(path)


@every_model
def test_save_load_round_trip_with_auto_classes(tester, tmp_path):
    model = tester.make_model().eval()
    save_model_and_processor(model, tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is tester.model_class.config_class
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is tester.model_class
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, XmodalProcessor)
    batch = processor(**{k: v.numpy() for k, v in tester.inputs().items()})
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    torch.testing.assert_close(expected.image_embeds, got.image_embeds, rtol=0, atol=0)
    torch.testing.assert_close(expected.text_embeds, got.text_embeds, rtol=0, atol=0)


@every_model
def test_remote_code_loads_without_the_package(tester, tmp_path):
    """A saved checkpoint loads with trust_remote_code in a process where hf_xmodal is hidden."""
    model = tester.make_model().eval()
    save_model_and_processor(model, tmp_path)
    batch = tester.inputs()
    with torch.no_grad():
        expected = model.get_image_features(image_features=batch["image_features"])
    torch.save(batch["image_features"], tmp_path / "inputs.pt")
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["hf_xmodal"] = None  # importing the package now fails
        import torch
        from transformers import AutoModel, AutoProcessor
        path = {str(tmp_path)!r}
        model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        assert "hf_xmodal" not in type(model).__module__, type(model).__module__
        batch = processor(image_features=torch.load(path + "/inputs.pt").numpy())
        with torch.no_grad():
            embeds = model.get_image_features(image_features=batch["image_features"])
        print(json.dumps(embeds.tolist()))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected)


def test_every_registered_model_is_in_the_matrix():
    tested = {p.values[0].model_class for p in MODEL_TESTERS}
    assert {model for _, model in hf_xmodal.MODELS.values()} <= tested
