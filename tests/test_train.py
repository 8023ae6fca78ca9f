"""scripts/train.py end to end on the bundled Wikipedia data."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import scipy.io
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from datasets import load_from_disk
from safetensors.torch import load_file
from toy_transfer import two_domains
from transformers import AutoModel, AutoProcessor

from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.evaluation import evaluate_retrieval
from hf_xmodal.hub import load_method_card
from hf_xmodal.models import MODELS
from hf_xmodal.training import PRESET_TRAINING, TRAINING_DEFAULTS, load_results, trainer

SCRIPT = Path(__file__).parents[1] / "scripts" / "train.py"
TOY = ["--model", "toy_transfer:ToyTransferModel", "--learning_rate", "0.01", "--batch_size", "40"]
SMALL = ["--model_config", '{"hidden_dims": [64], "embed_dim": 32}', "--eval_every", "1"]


def load_script():
    spec = importlib.util.spec_from_file_location("train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train():
    return load_script().main


def test_train_writes_a_loadable_model_and_results(train, tmp_path):
    results = train([*SMALL, "--epochs", "8", "--output_dir", str(tmp_path)])
    saved = load_results(tmp_path)
    assert saved["test"]["map_avg"] == pytest.approx(results["test"]["map_avg"])
    assert saved["split_sizes"] == {"train": 2173, "validation": 231, "test": 462}
    assert [p["epoch"] for p in saved["validation_curve"]] == list(range(1, 9))
    best = max(saved["validation_curve"], key=lambda p: p["map_avg"])
    assert saved["best_epoch"] == best["epoch"]
    assert saved["test"]["map_avg"] > 0.2  # chance level is about 0.11
    assert (tmp_path / "pr_curve.png").stat().st_size > 0

    model = AutoModel.from_pretrained(tmp_path / "model").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "model")
    assert model.config.id2label[0] == "art"
    test = load_dataset_by_name("wikipedia")["test"].with_format("numpy")
    batch = processor(image_features=test["image_features"], text_features=test["text_features"])
    with torch.no_grad():
        out = model(**batch)
    metrics = evaluate_retrieval(out.image_embeds, out.text_embeds, test["label"], test["label"])
    assert metrics["map_avg"] == pytest.approx(saved["test"]["map_avg"], abs=1e-6)


def test_training_curve_logs_every_epoch_and_its_loss_terms(train, tmp_path):
    """Each epoch's weighted loss terms (mean over steps) add up to its loss."""
    results = train(["--model", "daml", "--epochs", "3", "--output_dir", str(tmp_path)])
    curve = results["training_curve"]
    assert [p["epoch"] for p in curve] == [1, 2, 3]
    terms = ("metric_learning", "pair_consistency", "adversarial")
    for point in curve:
        assert point["loss"] == pytest.approx(sum(point[t] for t in terms), rel=1e-5)
    assert load_results(tmp_path)["training_curve"] == curve


class RecordingTracker(GeneralTracker):
    """An Accelerate tracker that keeps what it is given."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config, self.logged = None, []

    @property
    def tracker(self):
        return self.logged

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, values))


def test_a_configured_tracker_gets_every_epoch_and_validation(train, tmp_path, monkeypatch):
    tracker = RecordingTracker()
    monkeypatch.setattr(
        trainer, "Accelerator", lambda **kwargs: Accelerator(**{**kwargs, "log_with": [tracker]})
    )
    results = train(["--model", "daml", "--epochs", "3", "--output_dir", str(tmp_path)])
    assert tracker.config["epochs"] == 3
    train_logs = [(step, v) for step, v in tracker.logged if "train/loss" in v]
    assert [step for step, _ in train_logs] == [1, 2, 3]
    for (_, logged), point in zip(train_logs, results["training_curve"], strict=True):
        assert logged == {f"train/{k}": v for k, v in point.items() if k not in ("epoch", "stage")}
    validation = {step: v for step, v in tracker.logged if "validation/map_avg" in v}
    assert sorted(validation) == [2, 3]  # every 2 epochs and at the end
    assert validation[2]["validation/map_avg"] == results["validation_curve"][0]["map_avg"]


def test_resume_continues_exactly_where_training_stopped(train, tmp_path):
    """2 epochs, then resumed to 4, equals 4 straight (a constant learning rate makes the first
    2-epoch run the same as a 4-epoch run stopped after epoch 2)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = [*SMALL, "--lr_schedule", "constant"]
    train([*args, "--epochs", "4", "--output_dir", str(straight)])
    train([*args, "--epochs", "2", "--output_dir", str(resumed)])
    with pytest.raises(SystemExit, match="--resume"):
        train([*args, "--epochs", "4", "--output_dir", str(resumed)])
    train([*args, "--epochs", "4", "--output_dir", str(resumed), "--resume"])
    a = load_file(straight / "checkpoints" / "epoch_4" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "epoch_4" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert load_results(straight)["test"] == load_results(resumed)["test"]


def test_training_does_not_depend_on_how_often_it_validates(train, tmp_path):
    """UNCSM draws dropout from the global generator: validating must not move it."""
    args = ["--model", "uncsm", "--epochs", "4", "--lr_schedule", "constant"]
    args += ["--model_config", '{"hidden_dim": 32, "embed_dim": 16, "metric_hidden_dims": [8]}']
    for every in ("1", "2"):
        train([*args, "--eval_every", every, "--output_dir", str(tmp_path / every)])
    a = load_file(tmp_path / "1" / "checkpoints" / "epoch_4" / "model.safetensors")
    b = load_file(tmp_path / "2" / "checkpoints" / "epoch_4" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resume_refuses_other_arguments_naming_each(train, tmp_path):
    args = [*SMALL, "--output_dir", str(tmp_path)]
    train([*args, "--epochs", "1"])
    other = ["--batch_size", "50", "--learning_rate", "0.01", "--epochs", "2", "--resume"]
    with pytest.raises(SystemExit, match="--batch_size 50 .*--learning_rate 0.01") as e:
        train([*args, *other])
    assert "--epochs" not in str(e.value)  # may grow
    with pytest.raises(SystemExit, match="--model 'daml'"):
        train(["--model", "daml", "--output_dir", str(tmp_path), "--epochs", "2", "--resume"])
    with pytest.raises(SystemExit, match="--model_config"):
        train(["--output_dir", str(tmp_path), "--epochs", "2", "--resume"])


def test_resume_without_a_checkpoint_says_so(train, tmp_path, caplog):
    train([*SMALL, "--epochs", "1", "--output_dir", str(tmp_path), "--resume"])
    assert "--resume: no checkpoint in" in caplog.text
    assert load_results(tmp_path)["best_epoch"] == 1


def test_arguments_from_a_json_file(train, tmp_path):
    args = {"epochs": 1, "output_dir": str(tmp_path / "run"), "model_config": '{"embed_dim": 16}'}
    (tmp_path / "args.json").write_text(json.dumps(args))
    results = train([str(tmp_path / "args.json")])
    assert results["config"]["embed_dim"] == 16 and results["hyperparameters"]["epochs"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nope"], "--model must be one of"),
        (["--model_config", "{bad"], "not valid JSON"),
        (["--model_config", '{"embed_dim": 0}'], "(?s)--model_config: .*embed_dim"),
        (["--model_config", '{"embed_dimm": 7}'], "--model_config: .*did you mean 'embed_dim'"),
        (["--epochs", "0"], "--epochs must be positive"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--epoch", "3"], "not used"),  # no abbreviations
        (["--dataset", "no_such_dataset"], "unknown dataset"),
        (["--source_dataset", "wikipedia"], "trains on one dataset: drop --source_dataset"),
        (["--model", "no_such_module:Model"], "cannot be imported"),
        (["--model", "hf_xmodal.models:DAMLConfig"], "not an XmodalPreTrainedModel"),
    ],
)
def test_bad_arguments_fail_clearly(train, tmp_path, argv, message):
    with pytest.raises((SystemExit, Exception), match=message):
        train([*argv, "--output_dir", str(tmp_path)])


@pytest.mark.parametrize("name", ["dckt", "mhtn"])
def test_a_transfer_model_trains_without_a_source_when_its_source_terms_are_off(
    train, tmp_path, name
):
    """The card's target-only baseline reads no source, so none is asked for; with the source
    terms on, the missing source is named."""
    (target_only,) = load_method_card(name)["baselines"]
    args = ["--model", name, "--epochs", "5"]
    with pytest.raises(SystemExit, match="pass --source_dataset"):
        train([*args, "--output_dir", str(tmp_path / "transfer")])
    config = json.dumps(target_only["config"])
    results = train([*args, "--model_config", config, "--output_dir", str(tmp_path / "alone")])
    assert results["test"]["map_avg"] > 0.15  # chance on Wikipedia's 10 classes: ≈ 0.12


def wikipedia_arrays(protocol: str) -> dict:
    data = load_dataset_by_name(protocol)
    return {split: data[split].with_format("numpy")[:] for split in data}


SCALE_TEST_ARGS = {
    "cmsl": ["--model_config", '{"local_saliency_weight": 0}'],  # Wikipedia has no region maps
    "dckt": ["--source_dataset", "wikipedia"],
    "mhtn": ["--source_dataset", "wikipedia"],
}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_test_map_does_not_depend_on_the_scale_of_the_image_features(train, tmp_path, model):
    """Image features × 100 + 5 train the same model: the processor standardises both alike (a
    transfer model's Wikipedia source is scaled alike, since it shares the target's statistics)."""
    data = load_dataset_by_name("wikipedia")
    scaled = data.map(
        lambda b: {"image_features": [[100 * x + 5 for x in row] for row in b["image_features"]]},
        batched=True,
    )
    scaled.save_to_disk(str(tmp_path / "scaled"))
    args = ["--model", model, "--epochs", "4", "--eval_every", "2", *SCALE_TEST_ARGS.get(model, [])]
    original = train([*args, "--output_dir", str(tmp_path / "original")])
    args = [str(tmp_path / "scaled") if a == "wikipedia" else a for a in args]
    rescaled = train(
        [*args, "--dataset", str(tmp_path / "scaled"), "--output_dir", str(tmp_path / "rescaled")]
    )
    assert rescaled["test"]["map_avg"] == pytest.approx(original["test"]["map_avg"], abs=0.005)


def test_a_third_modality_is_standardised_too(train, tmp_path):
    """MHTN's extra modality (`tags_features`) × 100 + 5 trains the same model: the processor
    fits and applies its statistics like those of images and texts, and saves them."""
    data = load_dataset_by_name("wikipedia").map(
        lambda row: {"tags_features": row["text_features"][:4]}
    )
    scaled = data.map(lambda row: {"tags_features": [100 * x + 5 for x in row["tags_features"]]})
    target_only = '{"source_semantic_weight": 0, "single_modal_mmd_weight": 0}'
    results = {}
    for name, dataset in (("original", data), ("scaled", scaled)):
        dataset.save_to_disk(str(tmp_path / name))
        args = ["--model", "mhtn", "--dataset", str(tmp_path / name), "--epochs", "4"]
        out = str(tmp_path / f"run-{name}")
        results[name] = train([*args, "--model_config", target_only, "--output_dir", out])
    assert "map_image2tags" in results["original"]["test"]
    assert results["scaled"]["test"]["map_avg"] == pytest.approx(
        results["original"]["test"]["map_avg"], abs=0.005
    )
    processor = AutoProcessor.from_pretrained(tmp_path / "run-scaled" / "model")
    assert processor.extra_feature_dims == {"tags": 4}
    assert max(processor.feature_statistics["tags_features"]["mean"]) > 5


def test_the_preset_sets_the_training_settings_the_command_line_leaves_unset(train, tmp_path):
    """DAML takes the caption preset's shared settings, which differ from the defaults in all
    three; a flag given on the command line wins."""
    daml = ["--model", "daml", "--model_config", '{"embed_dim": 16}', "--eval_every", "5"]
    assert "daml" not in PRESET_TRAINING["caption"]
    caption = {**TRAINING_DEFAULTS, **PRESET_TRAINING["caption"]["*"]}
    assert all(caption[name] != TRAINING_DEFAULTS[name] for name in TRAINING_DEFAULTS)
    class_run = train([*daml, "--epochs", "1", "--output_dir", str(tmp_path / "class")])
    caption_run = train([*daml, "--preset", "caption", "--output_dir", str(tmp_path / "caption")])
    given = train(
        [
            *daml,
            *("--preset", "caption", "--batch_size", "50", "--epochs", "1"),
            *("--output_dir", str(tmp_path / "given")),
        ]
    )
    assert class_run["preset"] == "class"
    for name in TRAINING_DEFAULTS:
        expected = 1 if name == "epochs" else TRAINING_DEFAULTS[name]
        assert class_run["hyperparameters"][name] == expected
        assert caption_run["hyperparameters"][name] == caption[name]
    assert len(caption_run["training_curve"]) == caption["epochs"]
    assert given["hyperparameters"]["batch_size"] == 50
    assert given["hyperparameters"]["learning_rate"] == caption["learning_rate"]


def test_a_two_split_feature_file_trains_with_a_seeded_validation_split(train, tmp_path):
    """`--dataset FILE.mat` with train and test arrays only: 10% of train validates."""
    arrays = wikipedia_arrays("wikipedia_full_test")
    path = tmp_path / "features.mat"
    scipy.io.savemat(
        path,
        {
            f"{key}_{short}": arrays[split][column]
            for split, short in (("train", "tr"), ("test", "te"))
            for key, column in (("I", "image_features"), ("T", "text_features"), ("L", "label"))
        },
    )
    results = train(
        [*SMALL, "--dataset", str(path), "--epochs", "2", "--output_dir", str(tmp_path / "run")]
    )
    assert results["split_sizes"] == {"train": 1956, "validation": 217, "test": 693}
    assert results["validation_split"] == {"from": "train", "size": 0.1, "rows": 217, "seed": 0}
    assert results["preset"] == "class" and results["hyperparameters"]["standardize"] is True
    with pytest.raises(SystemExit, match="--validation_size N|fraction"):
        train(
            [
                *SMALL,
                "--dataset",
                str(path),
                "--validation_size",
                "0",
                "--output_dir",
                str(tmp_path / "x"),
            ]
        )


def test_an_output_dir_that_is_a_file_fails_before_training(train, tmp_path):
    (tmp_path / "file").write_text("")
    for output_dir in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(SystemExit, match="is a file, not a folder"):
            train(["--output_dir", str(output_dir)])


def test_a_dataset_smaller_than_a_batch_trains_on_one_batch_of_it(train, tmp_path, caplog):
    source, target = two_domains(tmp_path)
    args = [*TOY, "--batch_size", "500", "--dataset", target, "--source_dataset", source]
    results = train([*args, "--epochs", "2", "--output_dir", str(tmp_path / "run")])
    assert "a training stream has 130 rows: batches of 130, not 500" in caplog.text
    assert [p["target_rows_seen"] for p in results["training_curve"]] == [130.0, 130.0]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path):
    """The default run as 2 CPU processes gives the single-process test MAP within ±0.01."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    runs = {}
    for n in (1, 2):
        launch = ["accelerate", "launch", "--num_processes", str(n)]
        launch += ["--multi_gpu"] if n > 1 else []
        out = tmp_path / f"p{n}"
        subprocess.run([*launch, str(SCRIPT), "--output_dir", str(out)], env=env, check=True)
        runs[n] = load_results(out)
    assert runs[2]["num_processes"] == 2
    for key in ("map_i2t", "map_t2i"):
        assert abs(runs[1]["test"][key] - runs[2]["test"][key]) <= 0.01, key


def test_a_two_domain_model_from_outside_the_package_trains_through_the_script(train, tmp_path):
    """`toy_transfer` declares a source and a target stream (with row indices), two stages and
    an end-of-epoch hook; the script knows none of it. 130 target rows in batches of 40 give 3
    whole batches an epoch (the last, partial batch is dropped)."""
    source, target = two_domains(tmp_path)
    args = [*TOY, "--dataset", target, "--epochs", "4", "--eval_every", "1"]
    with pytest.raises(SystemExit, match="pass --source_dataset"):
        train([*args, "--output_dir", str(tmp_path / "none")])
    results = train([*args, "--source_dataset", source, "--output_dir", str(tmp_path / "run")])
    curve = results["training_curve"]
    assert [p["stage"] for p in curve] == ["source", "source", "target", "target"]
    assert [p["target_rows_seen"] for p in curve] == [120.0] * 4
    assert all(p["target_rows"] == 130 for p in curve)
    assert set(curve[0]) >= {"loss", "source_classification"}
    assert set(curve[-1]) >= {"loss", "target_alignment"}
    assert curve[0]["loss"] > curve[1]["loss"]  # the source stage learns
    assert results["split_sizes"] == {"train": 130, "validation": 40, "test": 60}
    assert results["test"]["map_avg"] > 0.4  # above chance (~0.35 for three classes)


def test_mhtn_takes_a_source_of_images_alone_and_dckt_refuses_one(train, tmp_path):
    """MHTN's source is single-modal: a source without text_features trains (standardised with
    the target's image statistics); DCKT's source needs pairs and says so."""
    source, target = two_domains(tmp_path)
    images = load_from_disk(source).remove_columns("text_features")
    images.save_to_disk(str(tmp_path / "images"))
    args = ["--dataset", target, "--source_dataset", str(tmp_path / "images"), "--epochs", "2"]
    results = train([*args, "--model", "mhtn", "--output_dir", str(tmp_path / "mhtn")])
    assert results["config"]["source_num_labels"] == 3 and results["test"]["map_avg"] > 0
    with pytest.raises(SystemExit, match="DCKT's source must hold image-text pairs"):
        train([*args, "--model", "dckt", "--output_dir", str(tmp_path / "dckt")])


@pytest.mark.slow
def test_a_two_domain_model_trains_alike_on_one_and_two_processes(tmp_path):
    """The same toy run through `accelerate launch` on 1 and on 2 CPU processes."""
    source, target = two_domains(tmp_path)
    tests = str(Path(__file__).parent)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    args = [*TOY, "--dataset", target, "--source_dataset", source, "--epochs", "4"]
    runs = {}
    for n in (1, 2):
        launch = ["accelerate", "launch", "--num_processes", str(n)]
        launch += ["--multi_gpu"] if n > 1 else []
        out = tmp_path / f"p{n}"
        subprocess.run([*launch, str(SCRIPT), *args, "--output_dir", str(out)], env=env, check=True)
        runs[n] = load_results(out)
    assert runs[2]["num_processes"] == 2
    for one, two in zip(runs[1]["training_curve"], runs[2]["training_curve"], strict=True):
        assert two["target_rows_seen"] == one["target_rows_seen"] == 120
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    for key in ("map_i2t", "map_t2i"):
        assert runs[2]["test"][key] == pytest.approx(runs[1]["test"][key], abs=1e-4)
