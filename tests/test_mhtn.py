"""MHTN-specific invariants: any number of target modalities, the star cross-modal term, the
single-modal MMD on the source images, the reversed modality discriminator, the switches."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, List, Value

from hf_xmodal.models import MHTNConfig, MHTNModel, XmodalProcessor
from hf_xmodal.models.layers import reversal_schedule
from hf_xmodal.models.losses import mmd
from hf_xmodal.models.modeling_dckt import pair_distance

NUM_LABELS, SOURCE_LABELS = 3, 5
TERM_WEIGHTS = {
    "semantic": "semantic_weight",
    "cross_modal": "cross_modal_weight",
    "adversarial": "adversarial_weight",
    "source_semantic": "source_semantic_weight",
    "single_modal_mmd": "single_modal_mmd_weight",
}


def make_model(**overrides):
    kwargs = {
        "hidden_dim": 16,
        "fc8_dim": 8,
        "fc9_dim": 6,
        "source_num_labels": SOURCE_LABELS,
        "extra_modalities": {"tags": 3},
        "discriminator_bottleneck": 4,
        "discriminator_hidden_dims": [5],
        "dropout": 0.0,
        **overrides,
    }
    config = MHTNConfig(image_feature_dim=5, text_feature_dim=4, num_labels=NUM_LABELS, **kwargs)
    torch.manual_seed(0)
    return MHTNModel(config)


def make_batch(n=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {
        "image_features": torch.randn(n, 5, generator=g),
        "text_features": torch.randn(n, 4, generator=g),
        "tags_features": torch.randn(n, 3, generator=g),
        "labels": torch.arange(n) % NUM_LABELS,
        "source_image_features": torch.randn(n, 5, generator=g) + 1,
        "source_labels": torch.arange(n) % SOURCE_LABELS,
    }


def test_three_modalities_embed_through_one_common_space():
    model = make_model().eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(**batch)
        tags = model.get_modality_features("tags", batch["tags_features"])
        image = model.get_image_features(batch["image_features"])
    assert set(out.modality_embeds) == {"image", "text", "tags"}
    torch.testing.assert_close(out.modality_embeds["tags"], tags)
    torch.testing.assert_close(out.image_embeds, image)
    assert tags.shape == image.shape == (8, NUM_LABELS)
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        model.get_modality_features("audio", batch["tags_features"])
    with pytest.raises(ValueError, match=r"tags_features must have shape \(batch, 3\)"):
        model.get_modality_features("tags", batch["text_features"])


def test_two_modalities_keep_the_two_modality_api():
    model = make_model(extra_modalities=None)
    batch = {k: v for k, v in make_batch().items() if k != "tags_features"}
    out = model(**batch)
    assert set(out.modality_embeds) == {"image", "text"} and torch.isfinite(out.loss)
    assert model.discriminator[-1].out_features == 2


def test_inputs_of_unknown_modalities_and_missing_modalities_are_clear_errors():
    model = make_model()
    batch = make_batch()
    with pytest.raises(TypeError, match="unexpected inputs \\['color_features'\\]"):
        model(**batch, color_features=torch.zeros(8, 3))
    with pytest.raises(ValueError, match="missing \\['tags'\\]"):
        model(**{k: v for k, v in batch.items() if k != "tags_features"})
    with pytest.raises(ValueError, match="batch sizes differ between modalities"):
        model(**{**batch, "tags_features": batch["tags_features"][:4]})
    with pytest.raises(ValueError, match="source_image_features and source_labels"):
        model(**{k: v for k, v in batch.items() if not k.startswith("source_")})
    with pytest.raises(Exception, match="not a valid modality name"):
        make_model(extra_modalities={"text": 3})


def test_star_and_single_modal_terms_by_hand():
    model = make_model(single_modal_mmd_weight=0.5, mmd_kernels=3)
    batch = make_batch()
    out = model(**batch)
    acts = {m: model.target(batch[f"{m}_features"], m) for m in ("image", "text", "tags")}
    star = sum(pair_distance(acts["image"], acts[m]).mean() for m in ("text", "tags"))
    torch.testing.assert_close(out.loss_terms["cross_modal"], 1e-4 * star)
    fc6, fc7 = model.source_branch
    s6 = fc6(batch["source_image_features"])
    s7 = fc7(s6)
    single = mmd(s6, acts["image"]["fc6"], kernels=3) + mmd(s7, acts["image"]["fc7"], kernels=3)
    torch.testing.assert_close(out.loss_terms["single_modal_mmd"], 0.5 * single)
    source_ce = F.cross_entropy(model.source_classifier(s7), batch["source_labels"])
    torch.testing.assert_close(out.loss_terms["source_semantic"], source_ce)
    semantic = sum(F.cross_entropy(a["fc10"], batch["labels"]) for a in acts.values())
    torch.testing.assert_close(out.loss_terms["semantic"], semantic)


def test_discriminator_learns_modalities_and_the_network_gets_the_reversed_gradient():
    model = make_model(cross_modal_weight=0, single_modal_mmd_weight=0)
    batch = make_batch()

    def gradients(progress):
        model.set_training_progress(progress)
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    start, later = gradients(0.0), gradients(0.4)
    fc9 = torch.cat([model.target(batch[f"{m}_features"], m)["fc9"] for m in model.modalities])
    logits = model.discriminator(model.discriminator_bottleneck(fc9))
    modality = torch.arange(3).repeat_interleave(8)
    model.zero_grad()
    (0.1 * F.cross_entropy(logits, modality)).backward()
    lam = reversal_schedule(0.4)
    for name, param in model.named_parameters():
        if name.startswith("discriminator."):
            torch.testing.assert_close(later[name], param.grad)
            torch.testing.assert_close(start[name], param.grad)
        elif name.startswith(("target.", "discriminator_bottleneck.")):
            reversed_grad = 0 * later[name] if param.grad is None else -lam * param.grad  # fc10
            torch.testing.assert_close(later[name] - start[name], reversed_grad)


@pytest.mark.parametrize("term", [t for t in TERM_WEIGHTS if t != "semantic"])
def test_each_weight_at_zero_removes_its_term(term):
    batch = make_batch()
    full = make_model()(**batch)
    assert set(full.loss_terms) == set(TERM_WEIGHTS)
    model = make_model(**{TERM_WEIGHTS[term]: 0})
    out = model(**batch)
    assert set(out.loss_terms) == set(TERM_WEIGHTS) - {term}
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))
    if term == "adversarial":
        assert model.discriminator is None
    if term == "source_semantic":
        assert model.source_classifier is None


def test_target_only_uses_no_source():
    model = make_model(source_semantic_weight=0, single_modal_mmd_weight=0)
    assert model.source_branch is None and not model.uses_source()
    out = model(**{k: v for k, v in make_batch().items() if not k.startswith("source_")})
    assert set(out.loss_terms) == {"semantic", "cross_modal", "adversarial"}


def test_source_images_share_the_target_image_feature_size():
    model = make_model()
    with pytest.raises(ValueError, match=r"source_image_features must have shape \(batch, 5\)"):
        model(**{**make_batch(), "source_image_features": torch.zeros(8, 4)})


def test_save_load_keeps_the_extra_modality(tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path)
    XmodalProcessor(image_feature_dim=5, text_feature_dim=4).save_pretrained(tmp_path)
    loaded = MHTNModel.from_pretrained(tmp_path).eval()
    assert loaded.config.extra_modalities == {"tags": 3}
    tags = make_batch()["tags_features"]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.get_modality_features("tags", tags), model.get_modality_features("tags", tags)
        )


def test_a_third_feature_column_becomes_a_modality_and_the_source_gives_images_only():
    rng = np.random.default_rng(0)

    def split(n, columns, names):
        data = {c: rng.random((n, d), dtype=np.float32) for c, d in columns.items()}
        features = {c: List(Value("float32"), length=d) for c, d in columns.items()}
        data["label"] = rng.integers(0, len(names), n)
        features["label"] = ClassLabel(names=names)
        return DatasetDict({"train": Dataset.from_dict(data, features=Features(features))})

    target = split(12, {"image_features": 5, "text_features": 4, "tags_features": 3}, list("abc"))
    source = split(20, {"image_features": 5, "text_features": 4}, list("pqrst"))
    fields = MHTNModel.config_from_datasets(target, source)
    assert fields["extra_modalities"] == {"tags": 3} and fields["source_num_labels"] == 5
    regions = Dataset.from_dict(  # a region map per row is not a modality
        {**target["train"].to_dict(), "region_features": rng.random((12, 2, 3)).tolist()},
        features=Features(
            {**target["train"].features, "region_features": Array2D((2, 3), "float32")}
        ),
    )
    with_regions = MHTNModel.config_from_datasets(DatasetDict({"train": regions}), source)
    assert with_regions["extra_modalities"] == {"tags": 3}
    model = MHTNModel(MHTNConfig(**fields, hidden_dim=8, fc8_dim=4, fc9_dim=4))
    assert model.modalities == ["image", "text", "tags"]
    streams = model.training_datasets(target, source)
    assert list(streams) == ["target", "source"]
    assert set(streams["target"].column_names) == {
        "image_features",
        "text_features",
        "tags_features",
        "labels",
    }
    assert set(streams["source"].column_names) == {"image_features", "labels"}
    with pytest.raises(ValueError, match=r"lacks \['tags_features'\]"):
        model.training_datasets(
            DatasetDict({"train": target["train"].remove_columns("tags_features")}), source
        )


def test_validation_embeds_and_scores_every_modality():
    """The training loop's evaluation streams every modality's column and scores each direction."""
    from hf_xmodal.evaluation import evaluate_retrieval
    from hf_xmodal.training.evaluation import embed_split, score_embeddings

    model = make_model().eval()
    batch = make_batch(n=12)
    columns = ("image_features", "text_features", "tags_features", "labels")
    split = Dataset.from_dict({c: batch[c].numpy() for c in columns})
    embeds = embed_split(model, split)
    assert set(embeds) == {"image_embeds", "text_embeds", "tags_embeds", "labels"}
    with torch.no_grad():
        tags = model.get_modality_features("tags", batch["tags_features"])
    torch.testing.assert_close(embeds["tags_embeds"], tags)
    scores = score_embeddings(model, embeds)
    by_hand = evaluate_retrieval(embeds["text_embeds"], tags, batch["labels"], batch["labels"])
    assert scores["map_text2tags"] == pytest.approx(by_hand["map_i2t"])
    assert scores["map_tags2text"] == pytest.approx(by_hand["map_t2i"])
    assert len(scores) == 7  # six directions and their mean


def test_the_modalities_script_scores_a_saved_model_as_training_did(tmp_path):
    """scripts/evaluate_modalities.py passes the split through the run's saved processor: on the
    test split it reproduces every direction `results.json` reports (raw SIFT counts would not)."""
    from test_ablate import load

    from hf_xmodal.data import load_dataset_by_name
    from hf_xmodal.training import load_results
    from hf_xmodal.training import main as train

    data = load_dataset_by_name("wikipedia")
    data = data.map(lambda row: {"tags_features": row["text_features"][:4]})
    data.save_to_disk(tmp_path / "three")
    target_only = '{"source_semantic_weight": 0, "single_modal_mmd_weight": 0}'
    run = tmp_path / "run"
    args = ["--model", "mhtn", "--dataset", str(tmp_path / "three"), "--epochs", "2"]
    train([*args, "--model_config", target_only, "--output_dir", str(run)])
    reported = {k: v for k, v in load_results(run)["test"].items() if k.startswith("map_")}
    assert "map_image2tags" in reported and "map_tags2text" in reported
    scored = load("evaluate_modalities").main([str(run), "--dataset", str(tmp_path / "three")])
    assert scored == pytest.approx(reported, abs=1e-6)
    assert json.loads((run / "modalities_test.json").read_text()) == scored
