"""DCKT-specific invariants: MMD, the stages and their terms, the cross-media domain consistency,
the selection probability and the pair selection that weights the target loss."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from hf_xmodal.evaluation import average_precision
from hf_xmodal.models import DCKTConfig, DCKTModel
from hf_xmodal.models.losses import mmd
from hf_xmodal.models.modeling_dckt import per_query_average_precision, selection_probability

NUM_LABELS, SOURCE_LABELS = 3, 5
TERM_WEIGHTS = {
    "semantic": "semantic_weight",
    "source_semantic": "source_semantic_weight",
    "media_mmd": "media_mmd_weight",
    "correlation_mmd": "correlation_mmd_weight",
    "pair_consistency": "pair_consistency_weight",
}


def make_model(**overrides):
    base = {
        "hidden_dim": 16,
        "fc8_dim": 8,
        "fc9_dim": 6,
        "source_num_labels": SOURCE_LABELS,
        "dropout": 0.0,
    }
    config = DCKTConfig(
        image_feature_dim=5, text_feature_dim=4, num_labels=NUM_LABELS, **{**base, **overrides}
    )
    torch.manual_seed(0)
    return DCKTModel(config)


def make_batch(n=8, source_dims=(5, 4), seed=3):
    g = torch.Generator().manual_seed(seed)
    return {
        "image_features": torch.randn(n, 5, generator=g),
        "text_features": torch.randn(n, 4, generator=g),
        "labels": torch.arange(n) % NUM_LABELS,
        "index": torch.arange(n),
        "source_image_features": torch.randn(n, source_dims[0], generator=g) + 1,
        "source_text_features": torch.randn(n, source_dims[1], generator=g) + 1,
        "source_labels": torch.arange(n) % SOURCE_LABELS,
    }


def target_stream(batch):
    """The `training_datasets` streams `on_epoch_end` receives: the target pairs."""
    columns = ("image_features", "text_features", "labels", "index")
    return {"target": Dataset.from_dict({k: batch[k].numpy() for k in columns})}


# --- MMD -------------------------------------------------------------------------------------


def test_mmd_is_zero_for_the_same_sample_and_grows_with_the_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = torch.randn(64, 3, generator=g)
    assert mmd(x, x).item() == pytest.approx(0, abs=1e-6)
    values = [mmd(x, y + shift).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 5 * values[0]
    torch.testing.assert_close(mmd(x, y), mmd(y, x))


def test_mmd_single_kernel_by_hand():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    z = torch.cat([x, y])
    d2 = (z - z.T).square()
    bandwidth = d2.sum() / 6  # mean over the 3·2 off-diagonal pairs
    k = torch.exp(-d2 / bandwidth)
    expected = k[:2, :2].mean() + k[2:, 2:].mean() - 2 * k[:2, 2:].mean()
    torch.testing.assert_close(mmd(x, y, kernels=1), expected)


def test_mmd_gradient_pulls_the_samples_together():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 2, generator=g)
    y = (torch.randn(32, 2, generator=g) + 2).requires_grad_()
    before = mmd(x, y)
    before.backward()
    with torch.no_grad():
        after = mmd(x, y - 0.5 * y.grad / y.grad.norm())
    assert after < before


# --- Stages and terms ------------------------------------------------------------------------


def test_training_stages_cover_the_epochs():
    model = make_model()
    assert model.training_stages(20) == [
        ("source_pretrain", 5),
        ("target_pretrain", 5),
        ("transfer", 10),
    ]
    for epochs in (1, 2, 3, 7):
        stages = model.training_stages(epochs)
        assert sum(n for _, n in stages) == epochs and stages[-1][1] >= 1
    no_source = make_model(source_semantic_weight=0)
    assert no_source.training_stages(20)[0] == ("source_pretrain", 0)


@pytest.mark.parametrize(
    "stage, terms",
    [
        ("source_pretrain", {"source_semantic", "pair_consistency"}),
        ("target_pretrain", {"semantic", "pair_consistency"}),
        ("transfer", set(TERM_WEIGHTS)),
    ],
)
def test_each_stage_has_its_terms(stage, terms):
    model = make_model()
    model.set_training_stage(stage)
    out = model(**make_batch())
    assert set(out.loss_terms) == terms
    torch.testing.assert_close(out.loss, sum(out.loss_terms.values()))


def test_pretraining_stages_train_only_their_domains_network():
    model = make_model()
    for stage, trained, frozen in (
        ("source_pretrain", "source.", "target."),
        ("target_pretrain", "target.", "source."),
    ):
        model.zero_grad()
        model.set_training_stage(stage)
        model(**make_batch()).loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is not None for n, g in grads.items() if n.startswith(trained)), stage
        assert all(g is None for n, g in grads.items() if n.startswith(frozen)), stage


@pytest.mark.parametrize("term", [t for t in TERM_WEIGHTS if t != "semantic"])
def test_each_weight_at_zero_removes_its_term(term):
    batch = make_batch()
    full = make_model()(**batch)
    out = make_model(**{TERM_WEIGHTS[term]: 0})(**batch)
    assert set(out.loss_terms) == set(TERM_WEIGHTS) - {term}
    for name, value in out.loss_terms.items():
        torch.testing.assert_close(value, full.loss_terms[name])


def test_target_only_needs_no_source_in_the_transfer_stage():
    model = make_model(
        source_semantic_weight=0,
        media_mmd_weight=0,
        correlation_mmd_weight=0,
        progressive_transfer=False,
        source_pretrain_fraction=0,
    )
    batch = {k: v for k, v in make_batch().items() if not k.startswith("source_")}
    out = model(**batch)
    assert set(out.loss_terms) == {"semantic", "pair_consistency"}


def test_media_and_correlation_mmd_by_hand():
    model = make_model(media_mmd_weight=0.5, correlation_mmd_weight=2.0, mmd_kernels=3)
    batch = make_batch()

    def mmd3(x, y):
        return mmd(x, y, kernels=3, kernel_mul=model.config.mmd_kernel_mul)

    out = model(**batch)
    acts = {
        (domain, medium): getattr(model, domain)(batch[f"{prefix}{medium}_features"], medium)
        for domain, prefix in (("source", "source_"), ("target", ""))
        for medium in ("image", "text")
    }
    media = sum(
        mmd3(acts["source", m][k], acts["target", m][k])
        for m in ("image", "text")
        for k in ("fc6", "fc7")
    )

    def both(domain, k):
        return torch.cat([acts[domain, "image"][k], acts[domain, "text"][k]])

    correlation = mmd3(both("source", "fc8"), both("target", "fc8")) + 2 * mmd3(
        both("source", "fc9"), both("target", "fc9")
    )
    torch.testing.assert_close(out.loss_terms["media_mmd"], 0.5 * media)
    torch.testing.assert_close(out.loss_terms["correlation_mmd"], 2.0 * correlation)


def test_domains_may_differ_in_input_sizes_and_classes():
    model = make_model(
        source_image_feature_dim=7, source_text_feature_dim=9, consistency_network="target"
    )
    assert model.source.fc10.out_features == SOURCE_LABELS
    assert model.target.fc10.out_features == NUM_LABELS
    out = model(**make_batch(source_dims=(7, 9)))
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="source_image_features must have shape"):
        model(**make_batch(source_dims=(5, 9)))
    with pytest.raises(Exception, match="consistency_network=.target."):
        make_model(source_image_feature_dim=7)


def test_missing_source_batch_is_a_clear_error():
    model = make_model()
    batch = {k: v for k, v in make_batch().items() if not k.startswith("source_")}
    with pytest.raises(ValueError, match="needs source_image_features"):
        model(**batch)


@pytest.mark.parametrize("representation, width", [("softmax", NUM_LABELS), ("fc9", 6)])
def test_retrieval_representation(representation, width):
    model = make_model(retrieval_representation=representation).eval()
    batch = make_batch()
    with torch.no_grad():
        image = model.get_image_features(batch["image_features"])
    assert image.shape == (8, width)
    if representation == "softmax":
        torch.testing.assert_close(image.sum(1), torch.ones(8))


# --- Progressive transfer --------------------------------------------------------------------


def test_per_query_average_precision_matches_the_evaluation_metric():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(30, 40, generator=g)
    ql, gl = torch.randint(0, 4, (30,), generator=g), torch.randint(0, 4, (40,), generator=g)
    relevant = ql[:, None] == gl[None]
    torch.testing.assert_close(
        per_query_average_precision(scores, relevant).double(),
        average_precision(scores, ql, gl),
    )


def test_selection_probability_values():
    ap = torch.tensor([0.2, 0.6, 1.0])  # normalised to 0, 0.5, 1
    p1 = selection_probability(ap, 1, alpha=0.8)
    torch.testing.assert_close(p1, torch.tensor([0.0, 0.8 * (1 - math.log2(1.5)), 0.8]))
    p2 = selection_probability(ap, 2, alpha=0.8)
    assert p2[0] == pytest.approx(0.8 * (1 - math.log2(1.5)))
    assert (p2 >= p1).all() and p2[2] == pytest.approx(0.8)  # rounds select more
    later = selection_probability(ap, 50, alpha=1.0)
    assert later.min() > 0.95
    with pytest.raises(ValueError, match="rounds count from 1"):
        selection_probability(ap, 0, 1.0)


def test_consistency_is_both_directions_with_the_source_network():
    model, batch = make_model(), make_batch(n=12)
    ap = model.cross_media_consistency(
        batch["image_features"], batch["text_features"], batch["labels"]
    )
    model.eval()
    with torch.no_grad():
        p = model.source(batch["image_features"], "image")["fc10"].softmax(1)
        q = model.source(batch["text_features"], "text")["fc10"].softmax(1)
    cos = torch.nn.functional.normalize(p) @ torch.nn.functional.normalize(q).T
    y = batch["labels"]
    expected = average_precision(cos, y, y) + average_precision(cos.T, y, y)
    torch.testing.assert_close(ap.double(), expected)
    with torch.no_grad():  # the target network does not enter
        for param in model.target.parameters():
            param.add_(1.0)
    again = model.cross_media_consistency(
        batch["image_features"], batch["text_features"], batch["labels"]
    )
    torch.testing.assert_close(again, ap)


def test_rounds_select_more_pairs_and_feedback_rescores():
    batch = make_batch(n=200)
    data = target_stream(batch)
    torch.manual_seed(0)
    for feedback in (True, False):
        model = make_model(adaptive_feedback=feedback)
        model.set_training_stage("target_pretrain")
        first = model.on_epoch_end(1, data)
        scores = model.selection.consistency.clone()
        model.set_training_stage("transfer")
        counts = [first["pairs_selected"]]
        for epoch in range(2, 6):
            with torch.no_grad():  # the model changes between rounds
                for param in model.source.parameters():
                    param.mul_(1.5)
            logged = model.on_epoch_end(epoch, data)
            counts.append(logged["pairs_selected"])
            assert logged["round"] == epoch
        assert counts == sorted(counts) and counts[-1] > counts[0]
        changed = not torch.equal(model.selection.consistency, scores)
        assert changed == feedback


def test_unselected_pairs_do_not_enter_the_target_loss():
    model, batch = make_model(), make_batch()
    batch["index"] = torch.arange(8).flip(0)  # row i is training pair 7 − i
    model.selection.update(torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]), torch.zeros(8))  # pairs 0-3
    model.set_training_stage("transfer")
    assert torch.isfinite(model(**batch).loss)
    model.eval()  # eval-mode batch norm: rows do not affect each other
    terms = model(**batch).loss_terms
    moved = {**batch, "text_features": batch["text_features"].clone()}
    moved["text_features"][:4] += 10  # rows of the unselected pairs 4-7
    for name in ("semantic", "media_mmd", "correlation_mmd"):
        torch.testing.assert_close(model(**moved).loss_terms[name], terms[name])
    moved["text_features"][7] += 10  # the row of selected pair 0
    assert not torch.allclose(model(**moved).loss_terms["semantic"], terms["semantic"])
    with pytest.raises(ValueError, match="index"):
        model(**{k: v for k, v in batch.items() if k != "index"})
    with pytest.raises(ValueError, match=r"index values must lie in \[0, 8\)"):
        model(**{**batch, "index": batch["index"] + 5})


def test_selection_survives_a_state_dict_round_trip_but_not_save_pretrained(tmp_path):
    model = make_model()
    model.set_training_stage("transfer")
    model.on_epoch_end(1, target_stream(make_batch(n=20)))
    fresh = make_model()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.selection.weights, model.selection.weights)
    assert int(fresh.selection.rounds) == 1
    model.save_pretrained(tmp_path)
    loaded = DCKTModel.from_pretrained(tmp_path)
    assert len(loaded.selection.weights) == 0


def labelled_pairs(n, image_dim, text_dim, names, seed=0):
    rng = np.random.default_rng(seed)
    features = Features(
        {
            "image_features": List(Value("float32"), length=image_dim),
            "text_features": List(Value("float32"), length=text_dim),
            "label": ClassLabel(names=names),
        }
    )
    columns = {
        "image_features": rng.random((n, image_dim), dtype=np.float32),
        "text_features": rng.random((n, text_dim), dtype=np.float32),
        "label": rng.integers(0, len(names), n),
    }
    return DatasetDict({"train": Dataset.from_dict(columns, features=features)})


def test_config_and_streams_from_a_target_and_a_source_dataset():
    target = labelled_pairs(10, 5, 4, ["a", "b", "c"])
    source = labelled_pairs(30, 7, 9, ["p", "q", "r", "s", "t"], seed=1)
    fields = DCKTModel.config_from_datasets(target, source)
    assert fields["source_image_feature_dim"] == 7 and fields["source_text_feature_dim"] == 9
    assert fields["source_num_labels"] == 5 and fields["image_feature_dim"] == 5
    config = DCKTConfig(**fields, hidden_dim=8, fc8_dim=4, fc9_dim=4, consistency_network="target")
    model = DCKTModel(config)
    streams = model.training_datasets(target, source)
    assert list(streams) == ["target", "source"]  # the target defines the epoch
    assert streams["target"]["index"] == list(range(10))
    assert set(streams["source"].column_names) == {"image_features", "text_features", "labels"}
    target_only = DCKTModel(
        DCKTConfig(
            **fields,
            hidden_dim=8,
            consistency_network="target",
            source_semantic_weight=0,
            media_mmd_weight=0,
            correlation_mmd_weight=0,
            source_pretrain_fraction=0,
        )
    )
    assert list(target_only.training_datasets(target, source)) == ["target"]


def test_a_source_in_another_input_space_is_standardised_with_its_own_statistics():
    """Fashion tower features as the source of Wikipedia SIFT/LDA: the target's processor cannot
    take the source's features; a source of the target's sizes shares the target's statistics."""
    from hf_xmodal.training.trainer import standardized

    target = labelled_pairs(40, 5, 4, ["a", "b", "c"])
    other = labelled_pairs(60, 7, 9, ["p", "q"], seed=1)
    other["train"] = other["train"].map(
        lambda r: {"image_features": np.array(r["image_features"]) * 3 + 2}
    )
    processor, target_out, source_out = standardized(target, other, standardize=True)
    assert processor.feature_dims() == {"image_features": 5, "text_features": 4}
    for data in (target_out, source_out):
        image = np.asarray(data["train"]["image_features"])
        np.testing.assert_allclose(image.mean(0), 0, atol=1e-5)
        # the processor scales each feature to 1 / sqrt(size): rows of unit mean square norm
        np.testing.assert_allclose(image.std(0) * np.sqrt(image.shape[1]), 1, atol=1e-2)
    same = labelled_pairs(60, 5, 4, ["p", "q"], seed=2)
    same["train"] = same["train"].map(
        lambda r: {"image_features": np.array(r["image_features"]) + 5}
    )
    _, _, source_out = standardized(target, same, standardize=True)
    image = np.asarray(source_out["train"]["image_features"])
    assert (image.mean(0) > 5).all()  # shifted by 5 in units of the target's scale


def test_the_training_script_runs_the_stages_and_logs_the_rounds(tmp_path):
    """Wikipedia as its own source: 1 source and 1 target pre-training epoch, 2 rounds."""
    from hf_xmodal.training import load_results, main

    small = {"hidden_dim": 32, "fc8_dim": 16, "fc9_dim": 16}
    argv = [
        *("--model", "dckt", "--dataset", "wikipedia", "--source_dataset", "wikipedia"),
        *("--epochs", "4", "--batch_size", "200", "--eval_every", "1"),
        *("--model_config", json.dumps(small), "--output_dir", str(tmp_path)),
    ]
    main(argv)
    results = load_results(tmp_path)
    curve = results["training_curve"]
    assert [p["stage"] for p in curve] == [
        "source_pretrain",
        "target_pretrain",
        "transfer",
        "transfer",
    ]
    assert "pairs_selected" not in curve[0]
    rounds = [p["round"] for p in curve[1:]]
    assert rounds == [1, 2, 3]  # the selection made after each epoch is for the next round
    selected = [p["pairs_selected"] for p in curve[1:]]
    assert 0 < selected[0] < 2173 and selected == sorted(selected)
    assert results["best_epoch"] in (3, 4)  # chosen among the transfer epochs
    loaded = DCKTModel.from_pretrained(tmp_path / "model")
    assert loaded.config.source_num_labels == 10 and len(loaded.selection.weights) == 0
    with pytest.raises(SystemExit, match="pass --source_dataset"):
        main(["--model", "dckt", "--output_dir", str(tmp_path / "no-source")])


def test_the_first_round_keeps_the_most_consistent_pair_and_never_the_least():
    """Round 1 selects with Prob = α for the most consistent pair and 0 for the least: with α = 1
    the one is always drawn and the other never, whatever the seed."""
    model, batch = make_model(selection_alpha=1.0), make_batch(n=30)
    model.set_training_stage("target_pretrain")  # its selection is for round 1
    for seed in range(4):
        torch.manual_seed(seed)
        assert model.on_epoch_end(1, target_stream(batch))["round"] == 1
        consistency, weights = model.selection.consistency, model.selection.weights
        assert weights[consistency.argmax()] == 1 and weights[consistency.argmin()] == 0
        assert 0 < weights.sum() < 30
