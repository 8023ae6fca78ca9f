"""`transformers.Trainer` with the package's data collator and its `evaluate` module."""

import evaluate
import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from hf_xmodal import MODELS
from hf_xmodal.data import XmodalDataCollator, load_dataset_by_name
from hf_xmodal.evaluation import evaluate_retrieval, metric_path
from hf_xmodal.models import DAMLConfig, DAMLModel, UNCSMConfig, UNCSMModel, XmodalProcessor
from hf_xmodal.training import TrainingHooksCallback


def rows(n, labels):
    rng = np.random.default_rng(0)
    return [
        {
            "image_features": rng.random(4).tolist(),
            "text_features": rng.random(3).tolist(),
            "text": "a raw text the feature model ignores",
            **labels(i),
        }
        for i in range(n)
    ]


@pytest.fixture
def collator():
    return XmodalDataCollator(XmodalProcessor(image_feature_dim=4, text_feature_dim=3))


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (lambda i: {"label": i % 2}, [0, 1, 0]),
        (lambda i: {"image_index": 7 + i}, [7, 8, 9]),
        (lambda i: {"labels": [1, i % 2]}, [[1, 0], [1, 1], [1, 0]]),
    ],
)
def test_collator_batches_features_and_labels(collator, labels, expected):
    examples = rows(3, labels)
    batch = collator(examples)
    assert set(batch) == {"image_features", "text_features", "labels"}
    assert batch["image_features"].dtype == torch.float32
    expected_images = torch.tensor([r["image_features"] for r in examples], dtype=torch.float32)
    torch.testing.assert_close(batch["image_features"], expected_images)
    assert batch["labels"].tolist() == expected


def test_collator_errors_name_the_problem(collator):
    with pytest.raises(ValueError, match="'text_features' or 'text'"):
        collator([{"image_features": [0.0] * 4, "label": 0}])
    with pytest.raises(ValueError, match="label columns"):
        collator([{"image_features": [0.0] * 4, "text_features": [0.0] * 3}])
    with pytest.raises(ValueError, match="image_features must have shape"):
        collator([{"image_features": [0.0] * 5, "text_features": [0.0] * 3, "label": 0}])
    with pytest.raises(ValueError, match="raw 'image'"):
        collator([{"image": "cat.jpg", "text_features": [0.0] * 3, "label": 0}])


@pytest.fixture(scope="module")
def wikipedia():
    return load_dataset_by_name("wikipedia")


def trainer_for(model, data, output_dir, epochs=2):
    metric = evaluate.load(metric_path())

    def compute_metrics(prediction):
        image_embeds, text_embeds = prediction.predictions[:2]
        return metric.compute(
            image_embeds=image_embeds, text_embeds=text_embeds, labels=prediction.label_ids
        )

    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=100,
        per_device_eval_batch_size=128,
        learning_rate=1e-3,
        adam_beta1=0.5,
        eval_strategy="epoch",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    processor = XmodalProcessor(image_feature_dim=128, text_feature_dim=10)
    return Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=XmodalDataCollator(processor),
        compute_metrics=compute_metrics,
        callbacks=[TrainingHooksCallback()],
    )


def test_trainer_trains_and_evaluates_with_the_metric_module(wikipedia, tmp_path):
    """DAML (its adversarial schedule needs the progress hook) for two epochs of Trainer."""
    torch.manual_seed(0)
    model = DAMLModel(DAMLConfig(image_feature_dim=128, text_feature_dim=10, num_labels=10))
    trainer = trainer_for(model, wikipedia, tmp_path)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_map_avg"] > before["eval_map_avg"] + 0.03, (before, after)
    assert np.isfinite(after["eval_loss"])
    # compute_metrics scored the model's own validation embeddings, as hf_xmodal.evaluation does
    validation = wikipedia["validation"].with_format("torch")[:]
    model.eval()
    with torch.no_grad():
        out = model(
            image_features=validation["image_features"], text_features=validation["text_features"]
        )
    expected = evaluate_retrieval(
        out.image_embeds, out.text_embeds, validation["label"], validation["label"]
    )
    assert after["eval_map_avg"] == pytest.approx(expected["map_avg"], abs=1e-6)
    # the gradient reversal scale followed training: progress of the last step
    steps = trainer.state.max_steps
    assert model.training_progress == pytest.approx((steps - 1) / steps)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_with_trainer_or_is_left_to_the_script(name, wikipedia, tmp_path):
    """A one-stage model trains (its output has a loss, its predictions are scored); a staged or
    transfer model is refused with a message naming scripts/train.py."""
    config_class, model_class = MODELS[name]
    # CMSL on global features alone: Wikipedia has no region maps or words.
    extra = {"local_saliency_weight": 0} if name == "cmsl" else {}
    config = config_class(image_feature_dim=128, text_feature_dim=10, num_labels=10, **extra)
    model = model_class(config)
    small = {split: wikipedia[split].select(range(150)) for split in ("train", "validation")}
    trainer = trainer_for(model, small, tmp_path, epochs=2)
    stages = [stage for stage, n in model.training_stages(2) if n]
    if model.requires_source_dataset or len(stages) > 1:
        with pytest.raises(ValueError, match="use scripts/train.py"):
            trainer.train()
        return
    trainer.train()
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_loss"]) and 0 < metrics["eval_map_avg"] <= 1


def test_uncsm_in_one_stage_trains_with_trainer(wikipedia, tmp_path):
    config = UNCSMConfig(
        image_feature_dim=128, text_feature_dim=10, num_labels=10, pretrain_fraction=0
    )
    model = UNCSMModel(config)
    trainer = trainer_for(model, wikipedia, tmp_path, epochs=1)
    trainer.train()
    assert model.training_stage == "finetune"
    assert np.isfinite(trainer.evaluate()["eval_map_avg"])
