"""Feature standardisation in the processors, presets, and validation splits for the scripts."""

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoProcessor

from hf_xmodal.models import MODELS, DSCMRConfig, XmodalProcessor
from hf_xmodal.training import (
    describe_validation,
    preset_for,
    preset_overrides,
    preset_training,
    require_splits,
    with_validation,
)
from hf_xmodal.training.presets import PRESET_TRAINING, PRESETS, TRAINING_DEFAULTS


def features(n=200, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, 6)) * [1, 10, 100, 0.01, 1, 1] + [0, 5, -3, 1, 0, 2]
    image[:, 4] = 7.0  # a constant feature
    return image, rng.random((n, 3))


def test_fit_standardises_each_feature_to_unit_expected_row_norm():
    image, text = features()
    processor = XmodalProcessor(6, 3).fit(image, text)
    out = processor(image_features=image, text_features=text)
    x = out["image_features"].double()
    torch.testing.assert_close(x.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    expected_std = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.float64) / np.sqrt(6)
    torch.testing.assert_close(x.std(0, correction=0), expected_std, atol=1e-5, rtol=0)
    assert (x[:, 4] == 0).all()  # the constant feature is centred, not divided by 0
    assert out["text_features"].pow(2).sum(1).mean() == pytest.approx(1.0, rel=1e-4)


def test_standardised_inputs_do_not_depend_on_an_affine_rescaling():
    image, text = features()
    plain = XmodalProcessor(6, 3).fit(image, text)
    scaled = XmodalProcessor(6, 3).fit(image * 100 + 5, text)
    a = plain(image_features=image)["image_features"]
    b = scaled(image_features=image * 100 + 5)["image_features"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_switched_off_or_unfitted_processors_pass_features_through():
    image, text = features()
    for processor in (
        XmodalProcessor(6, 3),
        XmodalProcessor(6, 3, standardize=False).fit(image, text),
    ):
        out = processor(image_features=image)["image_features"]
        torch.testing.assert_close(out, torch.as_tensor(image, dtype=torch.float32))
        assert processor.applied_statistics is None


def test_fitted_statistics_are_saved_and_applied_after_loading(tmp_path):
    image, text = features()
    processor = XmodalProcessor(6, 3).fit(image, text)
    processor.save_pretrained(tmp_path)
    assert '"feature_statistics"' in (tmp_path / "processor_config.json").read_text()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, XmodalProcessor) and loaded.standardize
    expected = processor(image_features=image, text_features=text)
    got = loaded(image_features=image, text_features=text)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_an_extra_modality_is_checked_standardised_and_saved(tmp_path):
    image, text = features()
    tags = image[:, :4] * 100 + 5
    processor = XmodalProcessor(6, 3, extra_feature_dims={"tags": 4}).fit(
        image, text, tags_features=tags
    )
    out = processor(tags_features=tags)["tags_features"].double()
    torch.testing.assert_close(out.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.std(0, correction=0), torch.full((4,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"tags_features must have shape \(batch, 4\)"):
        processor(tags_features=tags[:, :3])
    with pytest.raises(ValueError, match=r"unknown feature column\(s\) \['tag_features'\]"):
        processor(tag_features=tags)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.extra_feature_dims == {"tags": 4}
    torch.testing.assert_close(loaded(tags_features=tags)["tags_features"].double(), out)


def test_fit_rejects_bad_input():
    image, text = features()
    with pytest.raises(ValueError, match="image_features have 5 columns, expected 6"):
        XmodalProcessor(6, 3).fit(image[:, :5])
    with pytest.raises(ValueError, match="contains NaN"):
        XmodalProcessor(6, 3).fit(np.full((4, 6), np.nan))
    with pytest.raises(ValueError, match="give image_features, text_features or both"):
        XmodalProcessor(6, 3).fit()


# --- Presets --------------------------------------------------------------------------------


def test_preset_follows_the_kind_of_relevance():
    labelled = Dataset.from_dict({"image_features": [[0.0]], "label": [0]})
    captions = Dataset.from_dict({"image_features": [[0.0]], "image_index": [0]})
    assert preset_for(labelled) == "class" and preset_for(captions) == "caption"


def test_preset_training_settings_layer_defaults_shared_and_own(monkeypatch):
    assert preset_training("class", "daml") == TRAINING_DEFAULTS
    layers = {"*": {"epochs": 7, "batch_size": 30}, "daml": {"batch_size": 20}}
    monkeypatch.setitem(PRESET_TRAINING, "caption", layers)
    assert preset_training("caption", "daml") == {
        **TRAINING_DEFAULTS,
        "epochs": 7,
        "batch_size": 20,
    }
    assert preset_training("caption", "uncsm") == {
        **TRAINING_DEFAULTS,
        "epochs": 7,
        "batch_size": 30,
    }
    with pytest.raises(ValueError, match="unknown preset 'instance'"):
        preset_training("instance", "daml")


def test_preset_overrides_apply_shared_settings_where_the_config_has_them():
    assert preset_overrides("class", "dscmr", DSCMRConfig) == {}
    shared = PRESETS["caption"]["*"]
    for config_class, _ in MODELS.values():
        overrides = preset_overrides("caption", config_class.model_type, config_class)
        own = PRESETS["caption"].get(config_class.model_type, {})
        for name, value in shared.items():
            if hasattr(config_class, name):
                assert overrides[name] == own.get(name, value)  # a model's own entry wins
        assert overrides.items() >= own.items()
        config_class(num_labels=2, **overrides)  # every preset builds a valid config

    class Other:
        pass

    assert preset_overrides("caption", "other", Other) == {}
    with pytest.raises(ValueError, match="unknown preset 'pairs'"):
        preset_overrides("pairs", "dscmr", DSCMRConfig)


# --- Validation splits for the scripts ------------------------------------------------------


def two_splits(n_train=50, n_test=20):
    make = lambda n: Dataset.from_dict({"x": list(range(n)), "label": [0] * n})  # noqa: E731
    return DatasetDict(train=make(n_train), test=make(n_test))


def test_a_dataset_without_validation_gets_ten_percent_of_train():
    data, info = with_validation(two_splits(), None, None)
    assert {s: len(d) for s, d in data.items()} == {"train": 45, "validation": 5, "test": 20}
    assert info == {"from": "train", "size": 0.1, "rows": 5, "seed": 0}
    assert "5 rows of the train split" in describe_validation(info)
    data, info = with_validation(two_splits(), "8", "test")
    assert {s: len(d) for s, d in data.items()} == {"train": 50, "validation": 8, "test": 12}


def test_validation_options_fail_clearly():
    own = DatasetDict(train=two_splits()["train"], validation=two_splits()["test"])
    assert with_validation(own, None, None) == (own, None)
    with pytest.raises(SystemExit, match="its own validation split: drop --validation_size"):
        with_validation(own, "0.2", None)
    with pytest.raises(SystemExit, match="--validation_from must be one of"):
        with_validation(two_splits(), None, "validation")
    with pytest.raises(SystemExit, match="a number of rows or a fraction"):
        with_validation(two_splits(), "ten", None)
    with pytest.raises(SystemExit, match="between 1 and 49 rows"):
        with_validation(two_splits(), "50", None)
    data, info = with_validation(two_splits(), "0", None)
    assert info is None and "validation" not in data
    with pytest.raises(SystemExit, match="--validation_size N|fraction"):
        require_splits(data, ("train", "validation", "test"))
