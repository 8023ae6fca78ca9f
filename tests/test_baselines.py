"""CCA and label prediction: the published figure, planted signals, validation-only choice."""

import numpy as np
import pytest
import torch

from hf_xmodal.baselines import CCA, InfoNCEHeads, LabelPrediction, select_on_validation
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.evaluation import evaluate_retrieval
from hf_xmodal.models.losses import info_nce


def arrays(split):
    data = split.with_format("numpy")[:]
    return data["image_features"], data["text_features"], data["label"]


@pytest.fixture(scope="module")
def wikipedia():
    return {name: arrays(split) for name, split in load_dataset_by_name("wikipedia").items()}


def test_cca_reproduces_the_published_wikipedia_map():
    """Rasiwasia et al. 2010, correlation matching: 0.249 image→text, 0.196 text→image."""
    data = load_dataset_by_name("wikipedia_full_test")
    (xi, xt, _), (ti, tt, tl) = arrays(data["train"]), arrays(data["test"])
    cca = CCA(reg=1e-8).fit(xi, xt)
    metrics = evaluate_retrieval(*cca.embed(ti, tt), tl, tl)
    assert metrics["map_i2t"] == pytest.approx(0.249, abs=0.01)
    assert metrics["map_t2i"] == pytest.approx(0.196, abs=0.01)


def test_cca_recovers_a_planted_shared_signal():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 2))
    x = np.c_[z @ rng.normal(size=(2, 6)), rng.normal(size=(2000, 4))] + 0.1 * rng.normal(
        size=(2000, 10)
    )
    y = np.c_[rng.normal(size=(2000, 3)), z @ rng.normal(size=(2, 5))] + 0.1 * rng.normal(
        size=(2000, 8)
    )
    cca = CCA(n_components=3).fit(x, y)
    assert (cca.correlations_[:2] > 0.95).all() and cca.correlations_[2] < 0.2
    u, v = cca.embed(x, y)
    assert np.corrcoef(u[:, 0], v[:, 0])[0, 1] > 0.95


def test_label_prediction_beats_chance_on_wikipedia(wikipedia):
    model = LabelPrediction(C=10.0).fit(*wikipedia["train"])
    image, text, labels = wikipedia["test"]
    metrics = evaluate_retrieval(*model.embed(image, text), labels, labels)
    chance = np.mean(np.bincount(labels) ** 2) / len(labels) / np.mean(np.bincount(labels))
    assert metrics["map_avg"] > 1.5 * chance


def test_selection_looks_at_validation_only(wikipedia):
    train, validation = wikipedia["train"], wikipedia["validation"]
    fit = lambda **p: CCA(**p).fit(train[0], train[1])  # noqa: E731
    grid = {"reg": [1e-6, 1e-2], "n_components": [2, 5, 10]}
    chosen = select_on_validation(fit, grid, validation)
    assert len(chosen.grid) == 6
    assert chosen.validation["map_avg"] == max(p["map_avg"] for p in chosen.grid)
    shuffled = (*validation[:2], np.random.default_rng(0).permutation(validation[2]))
    assert (
        select_on_validation(fit, grid, shuffled).validation["map_avg"]
        < chosen.validation["map_avg"]
    )


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.ones((5, 3)), np.ones((4, 2)), "pairs must align"),
        (np.full((5, 3), np.nan), np.ones((5, 2)), "NaN"),
        (np.ones(5), np.ones((5, 2)), "2-D"),
    ],
)
def test_bad_inputs_fail_clearly(x, y, message):
    with pytest.raises(ValueError, match=message):
        CCA().fit(x, y)


def test_too_many_components_fail_clearly():
    with pytest.raises(ValueError, match="n_components"):
        CCA(n_components=5).fit(np.random.rand(20, 3), np.random.rand(20, 4))


def test_a_truncated_cca_is_the_fit_with_fewer_components():
    """The baselines script fits CCA once per reg and truncates it for each number of
    components: the same embeddings as fitting with that many."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=(200, 4))
    full = CCA(reg=1e-4).fit(x, y)
    for k in (1, 3):
        fresh, kept = CCA(n_components=k, reg=1e-4).fit(x, y), full.truncated(k)
        np.testing.assert_array_equal(kept.correlations_, fresh.correlations_)
        for ours, theirs in zip(kept.embed(x, y), fresh.embed(x, y), strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="n_components"):
        full.truncated(5)


def test_cca_centres_the_data():
    """Shifting either medium by a constant changes neither the correlations nor the embeddings,
    and the training embeddings have zero mean (data-free: the published figure's tolerance
    would absorb a missing centring)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 2))
    x = np.c_[z, rng.normal(size=(300, 3))] @ rng.normal(size=(5, 5))
    y = np.c_[z, rng.normal(size=(300, 2))] @ rng.normal(size=(4, 4))
    offset_x, offset_y = x + 40.0, y - 25.0
    plain, shifted = CCA(n_components=3).fit(x, y), CCA(n_components=3).fit(offset_x, offset_y)
    np.testing.assert_allclose(shifted.correlations_, plain.correlations_, rtol=1e-6)
    for ours, theirs in zip(shifted.embed(offset_x, offset_y), plain.embed(x, y), strict=True):
        np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(ours.mean(0), 0, atol=1e-9)


def test_info_nce_is_lowest_for_the_true_pairs_and_ignores_same_group_items():
    u = torch.eye(4) * 10
    assert info_nce(u, u, 0.1) < 1e-3
    assert info_nce(u, u.roll(1, 0), 0.1) > 5  # every text sits with another image
    # Rows 0 and 1 hold one image's two captions: with them marked, neither is the other's
    # negative, so their mix-up costs nothing.
    v = u.clone()
    v[1] = u[0]
    same = torch.tensor([0, 0, 1, 2])[:, None] == torch.tensor([0, 0, 1, 2])[None, :]
    assert info_nce(u, v, 0.1, same) < info_nce(u, v, 0.1)


def test_infonce_heads_learn_planted_pairs_and_keep_the_best_validation_epoch():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 16))
    x = np.c_[z @ rng.normal(size=(16, 20)), 0.3 * rng.normal(size=(600, 4))]
    y = np.c_[0.3 * rng.normal(size=(600, 3)), z @ rng.normal(size=(16, 18))]
    pairs = np.arange(600)
    score = lambda u, v, ids: evaluate_retrieval(u, v, ids, ids)  # noqa: E731
    heads = InfoNCEHeads(embed_dim=16, input_dropout=0.0, epochs=6, batch_size=64).fit(
        x[:500], y[:500], validation=(x[500:], y[500:], pairs[500:]), score=score
    )
    assert [p["epoch"] for p in heads.curve_] == list(range(1, 7))
    best = max(heads.curve_, key=lambda p: p["map_avg"])
    assert heads.best_epoch_ == best["epoch"]
    assert score(*heads.embed(x[500:], y[500:]), pairs[500:])["map_avg"] == pytest.approx(
        best["map_avg"]
    )
    assert best["map_avg"] > 0.3  # chance: about 0.05 for 100 pairs


def test_sign_of_rotation_codes():
    from hf_xmodal.baselines import SignOfRotation

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(200, 16)) + 3, rng.normal(size=(50, 16)) + 3
    hasher = SignOfRotation(seed=1).fit(train)
    rotation = hasher.rotation
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(16), atol=1e-10)
    codes = hasher.transform(test)
    assert codes.shape == (50, 16) and set(np.unique(codes)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(codes, np.sign((test - train.mean(0)) @ rotation))
    # Centred on the training mean: each bit splits the data, not all +1 from the offset of 3.
    assert 0.2 < (hasher.transform(train) > 0).mean() < 0.8
    np.testing.assert_array_equal(SignOfRotation(seed=1).fit(train).transform(test), codes)
    assert not np.array_equal(SignOfRotation(seed=2).fit(train).transform(test), codes)
    with pytest.raises(ValueError, match="embeddings"):
        hasher.transform(test[:, :8])


def test_hash_baseline_embeds_the_features_the_float_model_was_trained_on(tmp_path):
    """scripts/hash_baseline.py standardises features with the run's processor: its float
    embeddings reproduce the run's own test MAP, and its codes are signs of their rotation."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoModel, AutoProcessor

    from hf_xmodal.training import load_results
    from hf_xmodal.training import main as train

    scripts = Path(__file__).parents[1] / "scripts"
    spec = importlib.util.spec_from_file_location("hash_baseline", scripts / "hash_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = tmp_path / "run"
    small = '{"hidden_dims": [64], "embed_dim": 16}'
    train(["--model", "dscmr", "--epochs", "8", "--model_config", small, "--output_dir", str(run)])
    result = module.main(["--run_dir", str(run), "--seeds", "0", "1"])
    model = AutoModel.from_pretrained(run / "model").eval()
    processor = AutoProcessor.from_pretrained(run / "model")
    test = load_dataset_by_name("wikipedia")["test"]
    images, texts, labels = module.embed(model, processor, test)
    float_map = evaluate_retrieval(images, texts, labels, labels)["map_avg"]
    assert float_map == pytest.approx(load_results(run)["test"]["map_avg"], abs=1e-6)
    assert result["bits"] == 16 and sorted(result["test"]) == [0, 1]
    assert 0.15 < result["test"][0]["map_avg"] < float_map + 0.02  # chance: about 0.11


def test_the_baselines_script_selects_cca_on_validation_and_refits_it(tmp_path):
    """The script's CCA (one fit per reg, truncated per number of components) is the grid's best
    on validation, and a fresh fit with those settings gives its test MAP."""
    from test_ablate import load

    from hf_xmodal.models import XmodalProcessor

    cca = load("baselines").main(["--methods", "cca", "--output_dir", str(tmp_path)])["cca"]
    best = max(cca["validation_curve"], key=lambda point: point["map_avg"])
    assert cca["config"] == {k: best[k] for k in ("reg", "n_components")}
    data = load_dataset_by_name("wikipedia")
    train, test = (data[s].with_format("numpy")[:] for s in ("train", "test"))
    processor = XmodalProcessor(128, 10).fit(train["image_features"], train["text_features"])

    def standardised(split):
        out = processor(split["image_features"], split["text_features"], return_tensors="np")
        return out["image_features"], out["text_features"]

    images, texts = CCA(**cca["config"]).fit(*standardised(train)).embed(*standardised(test))
    metrics = evaluate_retrieval(images, texts, test["label"], test["label"])
    assert metrics["map_avg"] == pytest.approx(cca["test"]["map_avg"], abs=1e-6)
