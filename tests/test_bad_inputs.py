"""Bad input anywhere a user can give it fails with an error naming the problem."""

import shutil
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

from hf_xmodal.models import MODELS, DAMLConfig, DSCMRConfig, UNCSMConfig

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DSCMRConfig(embed_dimm=7), r"no field 'embed_dimm' \(did you mean 'embed_dim'"),
        (lambda: DAMLConfig(marginn=0.5), r"'marginn' \(did you mean 'margin'\?\)"),
        (lambda: UNCSMConfig(hiden_dim=8), r"'hiden_dim' \(did you mean 'hidden_dim'\?\)"),
        (lambda: AutoConfig.for_model("daml", bogus=3), r"DAMLConfig has no field 'bogus'; its"),
        (lambda: DSCMRConfig(a=1, b=2), r"no fields 'a', 'b'"),
        (lambda: DSCMRConfig(max_length=20), r"no field 'max_length'"),
        (lambda: DSCMRConfig(num_labels=0), r"num_labels must be positive, got 0"),
        (lambda: DSCMRConfig(id2label={}), r"num_labels must be positive, got 0"),
        (lambda: DSCMRConfig(embed_dim=0), r"embed_dim must be positive"),
        (lambda: DSCMRConfig(embed_dim="8"), r"embed_dim"),
        (lambda: DSCMRConfig(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: DSCMRConfig(input_mode="pixels"), r"input_mode must be one of"),
        (lambda: DAMLConfig(negative_mining="soft"), r"negative_mining must be one of"),
        (lambda: DAMLConfig(margin=5), r"margin must be in \(0, 4\]"),
        (lambda: UNCSMConfig(rerank_top_k=-1), r"rerank_top_k must be >= 0"),
        (lambda: DSCMRConfig.from_dict({"model_type": "daml"}), r"for model_type 'dscmr'"),
    ],
)
def test_bad_config(make, message):
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        make()


@pytest.mark.parametrize("name", ["dscmr", "daml", "uncsm", "dscmr_raw"])
def test_saved_configs_still_load(tmp_path, name):
    """config.json files as saved by earlier versions (with the keys transformers adds) load."""
    shutil.copy(FIXTURES / "saved_configs" / f"{name}.json", tmp_path / "config.json")
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MODELS[name.split("_")[0]][0])
    assert config.num_labels == (3 if name == "dscmr_raw" else 10)
    assert config.id2label[0] == ("LABEL_0" if name == "dscmr_raw" else "cat0")
    config.save_pretrained(tmp_path / "again")
    assert AutoConfig.from_pretrained(tmp_path / "again").to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_config_round_trips(tmp_path, name):
    """Each registered model's config, saved with its model's files, loads back unchanged."""
    config_class, model_class = MODELS[name]
    model = model_class(config_class(num_labels=3, image_feature_dim=6, text_feature_dim=5))
    model.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.to_diff_dict() == model.config.to_diff_dict()
