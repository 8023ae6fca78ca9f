"""Every registered model's card says only what is true of its run: rendered for a labelled run
(Wikipedia features) and a caption run (several captions per image, the towers' feature sizes, so
the checkpoint carries the towers), and checked against the run's results and the code."""

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, List, Value
from test_train import load_script

from hf_xmodal import MODELS
from hf_xmodal.hub import load_method_card, off_value, render_model_card
from hf_xmodal.models import TOWER_DIMS
from hf_xmodal.training import load_results

ROOT = Path(__file__).parents[1]
WIKIPEDIA_CLASSES = "art, biology, geography, history, literature, media, music, royalty, sport"


def one_line(text: str) -> str:
    return " ".join(text.split())


def caption_data(path: Path) -> None:
    """Three captions per image, features of the towers' sizes; captions lie near their image."""
    rng = np.random.default_rng(0)
    dims = TOWER_DIMS["image_feature_dim"], TOWER_DIMS["text_feature_dim"]
    project = rng.normal(size=dims).astype(np.float32)
    features = Features(
        {
            "image_features": List(Value("float32"), length=dims[0]),
            "text_features": List(Value("float32"), length=dims[1]),
            "image_index": Value("int64"),
        }
    )
    splits = {}
    for split, n_images in (("train", 40), ("validation", 12), ("test", 12)):
        images = rng.normal(size=(n_images, dims[0])).astype(np.float32)
        index = np.repeat(np.arange(n_images), 3)
        texts = images[index] @ project / 30 + rng.normal(size=(len(index), dims[1]))
        columns = {
            "image_features": images[index],
            "text_features": texts.astype(np.float32),
            "image_index": index,
        }
        splits[split] = Dataset.from_dict(columns, features=features)
    DatasetDict(splits).save_to_disk(str(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(model, kind) → run directory of a short scripts/train.py run (3 epochs, validated every
    2: epoch 1 is never a candidate)."""
    root = tmp_path_factory.mktemp("cards")
    caption_data(root / "captions")
    train = load_script().main
    out = {}
    for model in sorted(MODELS):
        for kind, dataset in (("labelled", "wikipedia"), ("caption", str(root / "captions"))):
            run = root / f"{model}-{kind}"
            transfer = MODELS[model][1].requires_source_dataset  # its source: the data itself
            # CMSL on global features alone: these datasets have no region maps or words.
            config = '{"local_saliency_weight": 0}' if model == "cmsl" else "{}"
            train(
                [
                    *("--model", model, "--dataset", dataset, "--output_dir", str(run)),
                    *("--epochs", "3", "--eval_every", "2", "--batch_size", "30"),
                    *(("--source_dataset", dataset) if transfer else ()),
                    *("--model_config", config),
                ]
            )
            out[model, kind] = run
    return out


CASES = [(m, k) for m in sorted(MODELS) for k in ("labelled", "caption")]


@pytest.mark.parametrize(("model", "kind"), CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_card_states_what_is_true_of_the_run(runs, model, kind):
    run = runs[model, kind]
    results = load_results(run)
    card = one_line(render_model_card(run, f"test-user/{model}-{kind}").text)
    config = results["config"]

    # The data and what makes an item relevant.
    if kind == "caption":
        assert not re.search(r"\d+ (classes|labels)", card) and "LABEL_0" not in card
        assert "a text is relevant to its own image only" in card
        assert "best validation R-sum among the validated epochs" in card
        assert "MAP" not in card.split("## Training procedure")[1]
    else:
        assert f"10 classes ({WIKIPEDIA_CLASSES}, warfare)" in card
        assert "best validation MAP@all average among the validated epochs" in card

    # The selection: only validated epochs of the final stage were candidates.
    curve = results["validation_curve"]
    final = curve[-1].get("stage")
    candidates = [p["epoch"] for p in curve if p.get("stage") == final]
    assert results["best_epoch"] in candidates and 1 not in candidates
    several = len({p.get("stage") for p in curve}) > 1
    stage_note = f" of the final stage, `{final}`" if several else ""
    assert f"epochs{stage_note}: {', '.join(map(str, candidates))}." in card
    assert "Validation ran every 2 epochs and at the end of each stage" in card
    assert "best validation MAP; " not in card

    # Inputs: a run on the towers' features carries the towers; a feature run does not.
    saved = json.loads((run / "model" / "config.json").read_text())
    if kind == "caption":
        assert saved["input_mode"] == "raw"
        assert "It takes photos and sentences through the pretrained towers it carries" in card
        assert "embeds precomputed feature vectors" not in card
    else:
        assert saved["input_mode"] == "features"
        assert "It embeds precomputed feature vectors of the sizes it was trained on (128-d" in card
        assert "pretrained towers it carries" not in card

    # Components: how each is switched off, as the code does it, and this model's value.
    method = load_method_card(model)
    assert "switches it off." not in card
    for component in method["components"]:
        field, value = component["config"], config[component["config"]]
        off = json.dumps(off_value(value))
        switched_off = f"`{field}: {off}`: {one_line(component['switched_off'])}"
        shown = "off" if value == off_value(value) else value
        assert f"| `{field}` | {switched_off} | {shown} |" in card

    # Settings chosen on validation for other data, as the config documents them.
    for data, settings in (method.get("recommended_settings") or {}).items():
        marker = " (this model's data)" if data == results["dataset"] else ""
        assert f"| `{data}`{marker} | `{json.dumps(settings)}` |" in card


@pytest.mark.parametrize("model", sorted(MODELS))
def test_recommended_settings_are_the_configs(model):
    """A card's recommended settings are the ones the config's docstring and the README give,
    and they build a model."""
    config_class, model_class = MODELS[model]
    doc = one_line(config_class.__doc__)
    readme = one_line((ROOT / "README.md").read_text())
    for data, settings in (load_method_card(model).get("recommended_settings") or {}).items():
        text = json.dumps(settings)
        assert text in doc, f"{model} {data}: {text} is not in {config_class.__name__}'s docstring"
        assert text in readme, f"{model} {data}: {text} is not in the README"
        model_class(config_class(**settings))
    documented = re.findall(r"`(\{[^`]*\})`", doc)  # every JSON setting the docstring recommends
    listed = {
        json.dumps(s) for s in (load_method_card(model).get("recommended_settings") or {}).values()
    }
    assert set(documented) <= listed, f"{model}: the docstring recommends {documented}"


def _behaviour(model) -> tuple:
    """What a component being off can change: the modules built, the stages, the loss terms and
    their values, what the end of an epoch logs (models that select training rows)."""
    torch.manual_seed(0)
    batch = {
        "image_features": torch.rand(6, model.config.image_feature_dim),
        "text_features": torch.rand(6, model.config.text_feature_dim),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
    }
    accepted = inspect.signature(model.forward).parameters
    if model.requires_source_dataset:  # its source batch: the same pairs
        batch |= {f"source_{k}": v for k, v in batch.items() if f"source_{k}" in accepted}
    if "index" in accepted:  # the rows' place in the training set
        batch["index"] = torch.arange(6)
    if "region_features" in accepted:  # region maps and words (CMSL's local saliency)
        c = model.config
        batch["region_features"] = torch.rand(6, c.region_size**2, c.region_channels)
        batch["word_ids"] = torch.randint(1, c.word_vocab_size, (6, 4))
    pairs = {k: batch[k].numpy() for k in ("image_features", "text_features", "labels")}
    data = {"target": Dataset.from_dict({**pairs, "index": list(range(6))})}
    stages = [(stage, n) for stage, n in model.training_stages(10) if n]
    terms, logged = set(), set()
    for stage, _ in stages:
        model.set_training_stage(stage)
        out = model(**batch)
        terms |= {(stage, k, round(float(v), 5)) for k, v in out.loss_terms.items() if v != 0}
        if "index" in accepted:  # a model that selects training rows at the end of an epoch
            logged |= {(stage, k, round(v, 4)) for k, v in model.on_epoch_end(1, data).items()}
    state = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return state, stages, sorted(terms), sorted(logged)


FITTED_FROM_DATA = {"cmsl": ("expansion_words",)}
"""Components that act only through what training fits from the data (CMSL expands texts over
the words of its fitted semantic graph): tests/test_cmsl.py checks them on a fitted model."""


@pytest.mark.parametrize("model", sorted(MODELS))
def test_switching_a_component_off_changes_the_model(model):
    """The card's "switched off by" value really switches something off (or, for a component the
    defaults leave off, on): the modules, the training stages or the loss terms change."""
    config_class, model_class = MODELS[model]
    base = {"image_feature_dim": 8, "text_feature_dim": 5, "num_labels": 3}
    defaults = config_class(**base)
    reference = _behaviour(model_class(defaults).train())
    for component in load_method_card(model)["components"]:
        field = component["config"]
        if field in FITTED_FROM_DATA.get(model, ()):
            continue
        value = getattr(defaults, field)
        off = off_value(value)
        other = (True if isinstance(off, bool) else 1.0) if value == off else off
        changed = _behaviour(model_class(config_class(**base, **{field: other})).train())
        assert changed != reference, f"{model}: {field}={other} changes nothing"
