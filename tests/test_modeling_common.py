"""The common test matrix: every model class, built from a tiny config, passes the same checks."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor

import hf_xmodal
from hf_xmodal.models import CMSLModel, DAMLModel, DSCMRModel, UNCSMModel, XmodalProcessor

NUM_LABELS = 4
IMAGE_DIM, TEXT_DIM = 12, 6

MODEL_CASES = [
    pytest.param(DSCMRModel, {"hidden_dims": [16], "embed_dim": 8}, id="dscmr"),
    pytest.param(
        DAMLModel,
        {
            "image_hidden_dims": [16],
            "text_hidden_dims": [16],
            "embed_dim": 8,
            "modality_classifier_dims": [4],
            "label_classification_weight": 1.0,
        },
        id="daml",
    ),
    pytest.param(
        UNCSMModel,
        {"hidden_dim": 16, "embed_dim": 8, "metric_hidden_dims": [8, 4]},
        id="uncsm",
    ),
    # Codes from the global vectors only: the matrix's batches have no region maps or words
    # (tests/test_cmsl.py covers local saliency and the semantic graph).
    pytest.param(
        CMSLModel,
        {"code_bits": 16, "hidden_dim": 16, "embed_dim": 8, "local_saliency_weight": 0.0},
        id="cmsl",
    ),
]


def make_model(model_class, kwargs):
    config = model_class.config_class(
        image_feature_dim=IMAGE_DIM,
        text_feature_dim=TEXT_DIM,
        num_labels=NUM_LABELS,
        **kwargs,
    )
    torch.manual_seed(0)
    return model_class(config)


def make_batch(batch_size=6):
    g = torch.Generator().manual_seed(1)
    return {
        "image_features": torch.randn(batch_size, IMAGE_DIM, generator=g),
        "text_features": torch.randn(batch_size, TEXT_DIM, generator=g),
        "labels": torch.arange(batch_size) % NUM_LABELS,
    }


def stages(model):
    """Each training stage a model has."""
    return [name for name, _ in model.training_stages(100)]


every_model = pytest.mark.parametrize("model_class, kwargs", MODEL_CASES)


@every_model
def test_output_shapes_and_finite_loss(model_class, kwargs):
    model = make_model(model_class, kwargs)
    batch = make_batch()
    for stage in stages(model):
        model.set_training_stage(stage)
        out = model(**batch)
        assert out.image_embeds.shape[0] == out.text_embeds.shape[0] == 6
        assert out.image_embeds.shape[1:] == out.text_embeds.shape[1:]
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), stage
        assert out.loss_terms and all(torch.isfinite(t) for t in out.loss_terms.values())


@every_model
def test_instance_contrastive_term_prefers_the_true_pairs(model_class, kwargs):
    """The optional InfoNCE term is in the loss at its weight, and lower when each text sits
    with its own image than when the texts are shuffled."""
    model = make_model(model_class, {**kwargs, "instance_contrastive_weight": 2.0})
    batch = make_batch()
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
    off = make_model(model_class, kwargs)(**batch)
    assert "instance_contrastive" not in off.loss_terms


@every_model
def test_every_trainable_parameter_gets_a_gradient(model_class, kwargs):
    model = make_model(model_class, kwargs)
    trained = set()
    for stage in stages(model):
        model.set_training_stage(stage)
        model.zero_grad()
        model(**make_batch()).loss.backward()
        trained |= {
            n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
        }
    missing = {n for n, p in model.named_parameters() if p.requires_grad} - trained
    assert not missing, f"parameters without gradient: {sorted(missing)}"


@every_model
def test_unused_parameters_are_declared(model_class, kwargs):
    """A stage whose loss leaves a parameter without gradient must be declared (DDP needs it)."""
    model = make_model(model_class, kwargs)
    assert model.training_stages(10) and sum(n for _, n in model.training_stages(10)) == 10
    unused = False
    for stage in stages(model):
        model.set_training_stage(stage)
        model.zero_grad(set_to_none=True)
        model(**make_batch()).loss.backward()
        unused |= any(p.grad is None for p in model.parameters() if p.requires_grad)
    assert model_class.has_unused_parameters == unused


@every_model
def test_eval_is_deterministic_and_features_match_forward(model_class, kwargs):
    model = make_model(model_class, kwargs).eval()
    batch = make_batch()
    with torch.no_grad():
        out1 = model(batch["image_features"], batch["text_features"])
        out2 = model(batch["image_features"], batch["text_features"])
        image = model.get_image_features(image_features=batch["image_features"])
        text = model.get_text_features(text_features=batch["text_features"])
    torch.testing.assert_close(out1.image_embeds, out2.image_embeds)
    torch.testing.assert_close(out1.image_embeds, image)
    torch.testing.assert_close(out1.text_embeds, text)
    assert out1.loss is None


@every_model
def test_batch_size_one(model_class, kwargs):
    model = make_model(model_class, kwargs).eval()
    batch = make_batch(1)
    with torch.no_grad():
        out = model(batch["image_features"], batch["text_features"])
    assert out.image_embeds.shape[0] == 1 and out.text_embeds.shape[0] == 1


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
def test_clear_error_on_bad_input(model_class, kwargs, bad, message):
    model = make_model(model_class, kwargs)
    with pytest.raises(ValueError, match=message):
        model(**bad)


@every_model
def test_clear_error_on_bad_labels(model_class, kwargs):
    model = make_model(model_class, kwargs)
    batch = make_batch()
    with pytest.raises(ValueError, match="labels"):
        model(**{**batch, "labels": torch.full((6,), NUM_LABELS)})
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(**{**batch, "labels": batch["labels"][:3]})


@every_model
def test_invalid_config_value_names_the_field(model_class, kwargs):
    with pytest.raises(Exception, match="image_feature_dim"):
        model_class.config_class(image_feature_dim=0, **kwargs)


def save_model_and_processor(model, path):
    model.save_pretrained(path)
    XmodalProcessor(image_feature_dim=IMAGE_DIM, text_feature_dim=TEXT_DIM).save_pretrained(path)


@every_model
def test_save_load_round_trip_with_auto_classes(model_class, kwargs, tmp_path):
    model = make_model(model_class, kwargs).eval()
    save_model_and_processor(model, tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is model_class.config_class
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, XmodalProcessor)
    batch = processor(**{k: v.numpy() for k, v in make_batch().items() if k != "labels"})
    with torch.no_grad():
        expected, got = model(**batch), loaded(**batch)
    torch.testing.assert_close(expected.image_embeds, got.image_embeds, rtol=0, atol=0)
    torch.testing.assert_close(expected.text_embeds, got.text_embeds, rtol=0, atol=0)


@every_model
def test_remote_code_loads_without_the_package(model_class, kwargs, tmp_path):
    """A saved checkpoint loads with trust_remote_code in a process where hf_xmodal is hidden."""
    model = make_model(model_class, kwargs).eval()
    save_model_and_processor(model, tmp_path)
    batch = make_batch()
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
    tested = {p.values[0] for p in MODEL_CASES}
    assert {model for _, model in hf_xmodal.MODELS.values()} <= tested
