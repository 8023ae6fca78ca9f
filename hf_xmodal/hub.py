"""Publish training runs and datasets on the Hugging Face Hub.

A run directory (`model/`, `results.json`, `pr_curve.png`, as `scripts/train.py` writes it)
becomes a model repo holding the weights, config, processor and the checkpoint's code, the results
file, the PR plot and a model card rendered from `model_cards/template.md`, the method's
`model_cards/<model_type>.yaml` and the results file: every number on the card comes from there.
The package carries `model_cards/` (as `hf_xmodal/model_cards`), so publishing needs no checkout.

The Hub address and the token come from the usual `HF_ENDPOINT` / `HF_TOKEN` (or a login).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import RepositoryNotFoundError

from .training.results import (
    RESULTS_FILE,
    config_hash,
    headline_metrics,
    load_results,
    mean_std,
    selection_key,
)

CARDS_DIR = Path(__file__).resolve().parent / "model_cards"
TEMPLATE = "template.md"
MODEL_DIR = "model"
PLOT_FILE = "pr_curve.png"
ABLATION_FILE = "ablation.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_MODEL_FILES = ("config.json", WEIGHTS_FILE, "processor_config.json")
METHOD_KEYS = ("name", "summary", "paper", "citation", "components", "paper_values")
METHOD_KEYS += ("deviations", "limitations")
COMPONENT_KEYS = ("name", "what", "config", "switched_off")
PAPER_KEYS = ("title", "authors", "venue", "url")
# Arguments that do not change the weights (or are hashed with the config already).
NAME_SKIP = ("output_dir", "resume", "seed", "data_dir", "model_config")
CARD_SKIP = ("output_dir", "resume")
CONFIG_SKIP = ("architectures", "auto_map", "transformers_version", "dtype", "label2id")
CONFIG_SKIP += ("text_tower_config",)
SCORING = {  # the usage example's line that scores every text against every image
    "cosine": "scores = F.normalize(out.text_embeds, dim=1)"
    " @ F.normalize(out.image_embeds, dim=1).T",
    "hamming": "scores = -(out.text_embeds[:, None] != out.image_embeds[None]).sum(-1)",
    "learned": "scores = model.similarity(out.text_embeds, out.image_embeds,"
    ' query_modality="text")',
}
DIRECTIONS = {"i2t": "image → text", "t2i": "text → image", "avg": "average"}


def _split_metric(key: str) -> tuple[str, str]:
    """`map@10_t2i` → (`MAP@10`, `image → text`), `map_image2tags` → (`MAP@all`, `image → tags`);
    a key without a direction counts as the average."""
    name, _, direction = key.rpartition("_")
    query, two, gallery = direction.partition("2")
    if direction in DIRECTIONS:
        direction = DIRECTIONS[direction]
    elif two and query.isalpha() and gallery.isalpha():  # a direction between two named media
        direction = f"{query} → {gallery}"
    else:
        name, direction = key, DIRECTIONS["avg"]
    name = {"map": "MAP@all", "rsum": "R-sum"}.get(name, name)
    return name.replace("map@", "MAP@").replace("precision@", "P@").replace("r@", "R@"), direction


def metric_label(key: str) -> str:
    """`map_i2t` → `MAP@all image → text`, `precision@10_t2i` → `P@10 text → image`, ..."""
    name, direction = _split_metric(key)
    return f"{name} {direction}" if key != "rsum" else name


def metric_table(metrics: dict[str, Any]) -> dict[str, Any]:
    """The card's table of every score in a metrics dict: a row per metric, a column per
    direction (the average last)."""
    rows: dict[str, dict[str, str]] = {}
    for key, value in metrics.items():
        if isinstance(value, float):
            name, direction = _split_metric(key)
            rows.setdefault(name, {})[direction] = f"{value:.4f}"
    average = DIRECTIONS["avg"]
    columns = list(dict.fromkeys(d for row in rows.values() for d in row if d != average))
    columns += [average] if any(average in row for row in rows.values()) else []
    return {
        "columns": columns,
        "rows": [
            {"name": name, "cells": [row.get(c, "–") for c in columns]}
            for name, row in rows.items()
        ],
    }


def off_value(value: Any) -> bool | int:
    """What switches a component off through its config field: false for a switch, 0 for a
    weight, a count or a share of the epochs."""
    return False if isinstance(value, bool) else 0


def placeholder_labels(names: list[str]) -> bool:
    """Whether label names are the config's placeholders (`LABEL_0`, ...), not real names."""
    return names == [f"LABEL_{i}" for i in range(len(names))]


def card_config(saved_config: dict[str, Any]) -> dict[str, Any]:
    """The saved config as the card shows it: without bookkeeping fields or the text tower's
    architecture, and with the number of labels instead of a list of placeholder names (caption
    data has one per training image)."""
    config = {k: v for k, v in saved_config.items() if k not in CONFIG_SKIP}
    names = list((config.get("id2label") or {}).values())
    if placeholder_labels(names):
        del config["id2label"]
        config["num_labels"] = len(names)
    return config


def data_description(results: dict[str, Any]) -> str:
    """What the run trained and was tested on: pairs, feature sizes and what makes items relevant
    (classes, or for caption data a text's own image)."""
    config = results["config"]
    sizes = " / ".join(str(n) for n in results["split_sizes"].values())
    features = (
        f"{config['image_feature_dim']}-d image features, {config['text_feature_dim']}-d text "
        "features"
    )
    if "rsum" in results["test"]:
        return (
            f"{sizes} image-caption pairs (train / validation / test), {features}. Caption data: "
            "several captions per image, and a text is relevant to its own image only (in "
            "training each image counts as a class of its own); evaluation counts each image once "
            "and reports Recall@K."
        )
    names = list((config.get("id2label") or {}).values())
    if placeholder_labels(names):
        return f"{sizes} pairs (train / validation / test), {features}, {len(names)} labels."
    return (
        f"{sizes} pairs (train / validation / test), {features}, {len(names)} classes "
        f"({', '.join(names)}); items sharing a class are relevant."
    )


def selection_candidates(results: dict[str, Any]) -> tuple[list[int], str | None]:
    """The epochs the checkpoint was chosen from (validated epochs of the final stage) and that
    stage's name when training had several stages."""
    curve = results["validation_curve"]
    stages = list(dict.fromkeys(p.get("stage") for p in curve))
    final = stages[-1] if stages else None
    epochs = [p["epoch"] for p in curve if p.get("stage") == final]
    return epochs, final if len(stages) > 1 else None


def weights_sha256(model_dir: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_variant(results: dict[str, Any]) -> str:
    """Hash of what decides a run's weights besides its seed: model config, data, training args."""
    args = {k: v for k, v in results["hyperparameters"].items() if k not in NAME_SKIP}
    return config_hash(
        {"config_hash": results["config_hash"], "dataset": results["dataset"], "args": args}
    )[:8]


def default_repo_name(results: dict[str, Any]) -> str:
    """`<model_type>-<dataset>-<variant hash>-seed<seed>`: one name per recipe and seed."""
    dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(results["dataset"]).name).strip("-.")
    return f"{results['model_type']}-{dataset}-{run_variant(results)}-seed{results['seed']}"


def load_method_card(model_type: str, cards_dir: str | os.PathLike = CARDS_DIR) -> dict[str, Any]:
    """Read and check `<cards_dir>/<model_type>.yaml` (format: model_cards/README.md)."""
    path = Path(cards_dir) / f"{model_type}.yaml"
    if not path.is_file():
        raise ValueError(f"no card metadata for model type {model_type!r}: write {path}")
    method = yaml.safe_load(path.read_text())
    missing = [k for k in METHOD_KEYS if k not in (method or {})]
    missing += [f"paper.{k}" for k in PAPER_KEYS if k not in (method or {}).get("paper", {})]
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    for item in method["components"]:
        if not set(COMPONENT_KEYS) <= set(item):
            raise ValueError(f"{path}: each component needs {COMPONENT_KEYS}, got {item}")
    return method


def ablation_table(ablation: dict[str, Any]) -> dict[str, Any]:
    """One ablation table of the card, from a file `scripts/ablate.py` wrote."""
    full = ablation["rows"][0]["test"]
    keys = headline_metrics({k: v["mean"] for k, v in full.items()})
    return {
        "dataset": ablation["dataset"],
        "seeds": ", ".join(map(str, ablation["seeds"])),
        "columns": [metric_label(k) for k in keys],
        "rows": [
            {
                "name": row["name"],
                "cells": [mean_std(row["test"], k) for k in keys],
            }
            for row in ablation["rows"]
        ],
    }


def run_ablations(
    run_dir: Path, model_type: str, extra: Sequence[str | os.PathLike] = ()
) -> dict[str, dict[str, Any]]:
    """The ablations a run's card shows, by their file name in the upload: the run's own
    `ablation.json` (if `scripts/ablate.py` made the run), then `extra` ablation files of the
    same method, e.g. on another dataset, as `ablation-<dataset>.json`."""
    found = {}
    if (run_dir / ABLATION_FILE).is_file():
        found[ABLATION_FILE] = json.loads((run_dir / ABLATION_FILE).read_text())
    for path in map(Path, extra):
        if not path.is_file():
            raise ValueError(f"no ablation file {path}: run scripts/ablate.py first")
        ablation = json.loads(path.read_text())
        if ablation.get("model") != model_type:
            raise ValueError(
                f"{path} is an ablation of {ablation.get('model')!r}, this run is {model_type!r}"
            )
        dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(ablation["dataset"]).name).strip("-.")
        found.setdefault(f"ablation-{dataset}.json", ablation)
    return found


def _check_run_dir(run_dir: Path) -> None:
    needed = [RESULTS_FILE, PLOT_FILE, *(f"{MODEL_DIR}/{f}" for f in REQUIRED_MODEL_FILES)]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        raise ValueError(f"{run_dir} is not a complete training run: missing {missing}")


def render_model_card(
    run_dir: str | os.PathLike,
    repo_id: str,
    dataset_repo_id: str | None = None,
    cards_dir: str | os.PathLike = CARDS_DIR,
    ablations: Sequence[str | os.PathLike] = (),
) -> ModelCard:
    """The model card of a run, from the template, the method's metadata and `results.json`.

    `dataset_repo_id`, when the training data is on the Hub, links the card to it; `ablations`
    are further ablation files of the method shown beside the run's own (`run_ablations`).
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    results = load_results(run_dir)
    config = results["config"]
    saved_config = json.loads((run_dir / MODEL_DIR / "config.json").read_text())
    method = load_method_card(results["model_type"], cards_dir)
    scoring = SCORING.get(config["retrieval_metric"])
    if scoring is None:
        raise ValueError(
            f"the card template has no usage example for retrieval_metric "
            f"{config['retrieval_metric']!r}"
        )
    test, validation = results["test"], results.get("validation") or {}
    headline = headline_metrics(test)
    dataset = results["dataset"]
    eval_results = [
        EvalResult(
            task_type="feature-extraction",
            task_name="Cross-modal retrieval",
            dataset_type=dataset_repo_id or dataset,
            dataset_name=dataset,
            dataset_split="test",
            metric_type="recall" if key.startswith("r") else "map",
            metric_name=metric_label(key),
            metric_value=round(test[key], 4),
        )
        for key in headline
    ]
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="feature-extraction",
        tags=["hf_xmodal", "cross-modal-retrieval", results["model_type"], *method.get("tags", [])],
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        metrics=sorted({r.metric_type for r in eval_results}),
        eval_results=eval_results,
    )
    selection = selection_key("rsum" in test)
    candidates, final_stage = selection_candidates(results)
    context = {
        "method": method,
        "repo_id": repo_id,
        "model_name": repo_id.split("/")[-1],
        "dataset": dataset,
        "package_version": results["package_version"],
        "test_table": metric_table(test),
        "validation_headline": ", ".join(
            f"{metric_label(k)} {validation[k]:.4f}" for k in headline if k in validation
        ),
        "scoring": scoring,
        "image_feature_dim": config["image_feature_dim"],
        "text_feature_dim": config["text_feature_dim"],
        "components": [
            {
                **item,
                "off_value": json.dumps(off_value(config[item["config"]])),
                "value": (
                    "off"
                    if config[item["config"]] == off_value(config[item["config"]])
                    else config[item["config"]]
                ),
            }
            for item in method["components"]
        ],
        "recommended": [
            {"data": data, "settings": json.dumps(settings), "this_run": data == dataset}
            for data, settings in (method.get("recommended_settings") or {}).items()
        ],
        "paper_rows": [
            {"field": k, "value": config[k], "paper": v, "differs": config[k] != v}
            for k, v in method["paper_values"].items()
        ],
        "data_description": data_description(results),
        "hyperparameters": [
            (k, v) for k, v in results["hyperparameters"].items() if k not in CARD_SKIP
        ],
        "config_hash": results["config_hash"],
        "config_json": json.dumps(card_config(saved_config), indent=2),
        "selection_metric": metric_label(selection),
        "curve": [
            {
                "epoch": p["epoch"],
                "stage": p.get("stage"),
                "loss": f"{p['loss']:.4f}",
                "metric": f"{p[selection]:.4f}",
            }
            for p in results["validation_curve"]
        ],
        "best_epoch": results["best_epoch"],
        "candidates": ", ".join(map(str, candidates)),
        "final_stage": final_stage,
        "eval_every": results["hyperparameters"].get("eval_every"),
        "num_parameters": f"{results['num_parameters']:,}",
        "train_time": f"{results['train_time_s']:.1f} s",
        "num_processes": results["num_processes"],
        "peak_memory": f"{results['peak_memory_mb']:.0f} MB",
        "created": results["created"],
        "raw_inputs": saved_config.get("input_mode") == "raw",
        "ablations": [
            ablation_table(a)
            for a in run_ablations(run_dir, results["model_type"], ablations).values()
        ],
    }
    return ModelCard.from_template(card_data, template_path=Path(cards_dir) / TEMPLATE, **context)


def build_upload_folder(
    run_dir: str | os.PathLike,
    folder: str | os.PathLike,
    repo_id: str,
    dataset_repo_id: str | None = None,
    ablations: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write exactly what a push uploads into `folder` (the dry run): the saved model and
    processor with their code, `results.json`, `pr_curve.png`, the ablation files and
    `README.md` (the card)."""
    run_dir, folder = Path(run_dir), Path(folder)
    card = render_model_card(run_dir, repo_id, dataset_repo_id, ablations=ablations)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((run_dir / MODEL_DIR).iterdir()):
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    for name in (RESULTS_FILE, PLOT_FILE):
        shutil.copy2(run_dir / name, folder / name)
    model_type = load_results(run_dir)["model_type"]
    for name, ablation in run_ablations(run_dir, model_type, ablations).items():
        (folder / name).write_text(json.dumps(ablation, indent=2) + "\n")
    card.save(folder / "README.md")
    return folder


def _check_name_is_free(api: HfApi, repo_id: str, sha256: str) -> None:
    """A repo name never holds two different sets of weights."""
    try:
        info = api.model_info(repo_id, files_metadata=True)
    except RepositoryNotFoundError:
        return
    for sibling in info.siblings or []:
        if sibling.rfilename == WEIGHTS_FILE and sibling.lfs and sibling.lfs.sha256 != sha256:
            raise ValueError(
                f"{repo_id} already holds other weights (sha256 {sibling.lfs.sha256[:12]}…, "
                f"these are {sha256[:12]}…): push them under another name"
            )


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str | None = None,
    private: bool = False,
    dataset_repo_id: str | None = None,
    ablations: Sequence[str | os.PathLike] = (),
) -> str:
    """Push a training run to the Hub and return the repo id.

    `repo_id` defaults to `<your user>/<default_repo_name(results)>`; a bare name gets your user
    as namespace. The card is checked by the Hub's metadata validation before anything is
    uploaded, and a repo that already holds other weights is refused.
    """
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    api = HfApi()
    name = repo_id or default_repo_name(load_results(run_dir))
    repo_id = name if "/" in name else f"{api.whoami()['name']}/{name}"
    _check_name_is_free(api, repo_id, weights_sha256(run_dir / MODEL_DIR))
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_upload_folder(
            run_dir, Path(tmp) / "upload", repo_id, dataset_repo_id, ablations
        )
        ModelCard.load(folder / "README.md").validate()
        api.create_repo(repo_id, private=private, exist_ok=True)
        results = load_results(run_dir)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=(
                f"{results['model_type']} trained on {results['dataset']} "
                f"(config {results['config_hash']}, seed {results['seed']})"
            ),
        )
    return repo_id


def push_dataset(
    name: str | os.PathLike,
    repo_id: str,
    data_dir: str | os.PathLike | None = None,
    private: bool = False,
) -> str:
    """Push a dataset the package prepares (`load_dataset_by_name`) as a dataset repo; it loads
    back with `datasets.load_dataset(repo_id)`. Returns the repo id."""
    from .data import load_dataset_by_name

    data = load_dataset_by_name(name, data_dir)
    if "/" not in repo_id:
        repo_id = f"{HfApi().whoami()['name']}/{repo_id}"
    data.push_to_hub(repo_id, private=private)
    return repo_id
