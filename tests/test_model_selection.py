"""Selection on validation, reporting on test: the steps that decide which number is reported.

The data is arranged so that validation and test disagree about the best epoch: test pairs come
from the training distribution (the more the model learns, the better it scores), while each
validation text carries the class prototype of the *next* class (the more the model learns, the
worse it scores). The first epoch is then the best on validation and the worst on test, so a
checkpoint chosen on test, or test scored on the last epoch's weights, shows up in the saved model.
A model trained in stages is selected among the epochs of its final stage only: a pre-training
stage taught the validation split's own arrangement scores best on validation, and must still not
be the saved model.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from safetensors.torch import load_file
from toy_transfer import ToyTransferModel
from transformers import AutoModel, AutoProcessor

from hf_xmodal.evaluation import evaluate_retrieval
from hf_xmodal.models import UNCSMConfig, UNCSMModel
from hf_xmodal.training import embed_split, load_results, main, score_embeddings

SCRIPT = Path(__file__).parents[1] / "scripts" / "train.py"
NUM_CLASSES, DIM, EPOCHS = 4, 8, 4


def prototype_split(n: int, seed: int, text_class_shift: int) -> Dataset:
    """Pairs of class `c`: image = P_c + noise, text = Q_{c + shift} + noise (fixed prototypes)."""
    prototypes = np.random.default_rng(100).normal(size=(2, NUM_CLASSES, DIM)) * 2
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    images = prototypes[0][labels] + rng.normal(size=(n, DIM))
    texts = prototypes[1][(labels + text_class_shift) % NUM_CLASSES] + rng.normal(size=(n, DIM))
    features = Features(
        {
            "image_features": Sequence(Value("float32")),
            "text_features": Sequence(Value("float32")),
            "label": ClassLabel(num_classes=NUM_CLASSES),
        }
    )
    columns = {"image_features": images, "text_features": texts, "label": labels}
    return Dataset.from_dict(columns, features=features)


def saved_model_map(model_dir: Path, split: Dataset) -> float:
    """MAP of the saved model (through its saved processor) on a split."""
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    data = split.with_format("numpy")
    batch = processor(image_features=data["image_features"], text_features=data["text_features"])
    with torch.no_grad():
        out = model(**batch)
    labels = data["label"]
    return evaluate_retrieval(out.image_embeds, out.text_embeds, labels, labels)["map_avg"]


@pytest.fixture(scope="module")
def disagreeing_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection")
    data = DatasetDict(
        train=prototype_split(400, seed=0, text_class_shift=0),
        validation=prototype_split(80, seed=1, text_class_shift=1),
        test=prototype_split(80, seed=2, text_class_shift=0),
    )
    data.save_to_disk(root / "data")
    args = ["--dataset", str(root / "data"), "--output_dir", str(root / "run")]
    args += ["--epochs", str(EPOCHS), "--eval_every", "1", "--batch_size", "20"]
    args += ["--learning_rate", "3e-3", "--lr_schedule", "constant"]
    args += ["--standardize", "false"]  # the arrangement is built in the features' own scale
    args += ["--model_config", '{"hidden_dims": [16], "embed_dim": 8}']
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True)
    return data, root / "run"


def test_the_arrangement_makes_validation_and_test_disagree(disagreeing_run):
    """Validation falls as training goes on; test rises (the last checkpoint beats epoch 1)."""
    data, run = disagreeing_run
    curve = [point["map_avg"] for point in load_results(run)["validation_curve"]]
    assert len(curve) == EPOCHS
    assert all(a > b for a, b in zip(curve, curve[1:], strict=False)), curve

    last = AutoModel.from_pretrained(run / "model")
    last.load_state_dict(load_file(run / "checkpoints" / f"epoch_{EPOCHS}" / "model.safetensors"))
    last.save_pretrained(run / "last_epoch")
    AutoProcessor.from_pretrained(run / "model").save_pretrained(run / "last_epoch")
    assert saved_model_map(run / "last_epoch", data["test"]) > saved_model_map(
        run / "model", data["test"]
    )


def test_saved_model_is_the_best_validation_epoch(disagreeing_run):
    data, run = disagreeing_run
    results = load_results(run)
    curve = {point["epoch"]: point["map_avg"] for point in results["validation_curve"]}
    assert results["best_epoch"] == max(curve, key=curve.get) == 1
    # The saved weights score the recorded best validation value on the validation split...
    validation = saved_model_map(run / "model", data["validation"])
    assert validation == pytest.approx(curve[1], abs=1e-6)
    assert validation == pytest.approx(results["validation"]["map_avg"], abs=1e-6)
    # ...and the reported test value is theirs.
    assert saved_model_map(run / "model", data["test"]) == pytest.approx(
        results["test"]["map_avg"], abs=1e-6
    )


def test_embed_split_embeds_in_eval_mode():
    """Dropout (UNCSM's default is 0.7) must be off while a split is embedded, and the model's
    mode restored afterwards."""
    torch.manual_seed(0)
    config = UNCSMConfig(image_feature_dim=DIM, text_feature_dim=DIM, num_labels=NUM_CLASSES)
    assert config.dropout > 0
    model = UNCSMModel(config)
    split = prototype_split(32, seed=3, text_class_shift=0)
    columns = split.with_format("torch")[:]
    features = {k: columns[k] for k in ("image_features", "text_features")}
    model.train()
    with torch.no_grad():
        train_mode = model(**features)
        model.eval()
        eval_mode = model(**features)
    assert not torch.allclose(train_mode.image_embeds, eval_mode.image_embeds)

    model.train()
    embeds = embed_split(model, split, batch_size=8)
    assert model.training
    torch.testing.assert_close(embeds["image_embeds"], eval_mode.image_embeds)
    torch.testing.assert_close(embeds["text_embeds"], eval_mode.text_embeds)
    torch.testing.assert_close(embeds["labels"], columns["label"])


def test_a_staged_model_is_selected_among_its_final_stage_epochs(tmp_path):
    """`toy_transfer` pre-trains on a source whose texts carry the next class's prototype, as the
    validation texts do, then aligns the target's pairs (own class's prototype): its pre-training
    epochs score best on validation, and the saved model must still be the best epoch of the
    final stage, the stage that makes the retrieval model."""
    source = DatasetDict(train=prototype_split(400, seed=3, text_class_shift=1))
    target = DatasetDict(
        train=prototype_split(400, seed=0, text_class_shift=0),
        validation=prototype_split(80, seed=1, text_class_shift=1),
        test=prototype_split(80, seed=2, text_class_shift=0),
    )
    source.save_to_disk(tmp_path / "source")
    target.save_to_disk(tmp_path / "target")
    args = ["--model", "toy_transfer:ToyTransferModel", "--epochs", "4", "--eval_every", "1"]
    args += ["--dataset", str(tmp_path / "target"), "--source_dataset", str(tmp_path / "source")]
    args += ["--batch_size", "40", "--learning_rate", "0.1", "--lr_schedule", "constant"]
    args += ["--standardize", "false", "--output_dir", str(tmp_path / "run")]
    results = main(args)

    curve = results["validation_curve"]
    assert [p["stage"] for p in curve] == ["source", "source", "target", "target"]
    pretraining = [p["map_avg"] for p in curve if p["stage"] == "source"]
    final = {p["epoch"]: p["map_avg"] for p in curve if p["stage"] == "target"}
    assert min(pretraining) > max(final.values()) + 0.2, curve  # the arrangement holds
    assert results["best_epoch"] == max(final, key=final.get)
    assert results["validation"]["map_avg"] == pytest.approx(final[results["best_epoch"]])
    # The saved weights are that epoch's: they score its validation value.
    saved = ToyTransferModel.from_pretrained(tmp_path / "run" / "model")
    scores = score_embeddings(saved, embed_split(saved, target["validation"]))
    assert scores["map_avg"] == pytest.approx(final[results["best_epoch"]], abs=1e-6)
