"""Run the CCA and label-prediction baselines on a dataset and write one results file each.

    python scripts/baselines.py                                 # bundled Wikipedia
    python scripts/baselines.py --dataset wikipedia_full_test   # the paper's setting

Hyperparameters are chosen on the validation split; `wikipedia_full_test` has none, so CCA runs
there with the fixed setting `--reg 1e-8`, all components (the original paper's).
"""

import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

import hf_xmodal
from hf_xmodal.baselines import CCA, LabelPrediction, select_on_validation
from hf_xmodal.data import load_dataset_by_name, validate_feature_dataset
from hf_xmodal.evaluation import evaluate_caption_retrieval, evaluate_retrieval
from hf_xmodal.training import (
    RESULTS_FILE,
    config_hash,
    headline,
    selection_key,
    unique_images,
    write_results,
)


@dataclass
class BaselineArguments:
    dataset: str = "wikipedia"
    data_dir: str | None = None
    output_dir: str = "runs/baselines"
    methods: list[str] = field(default_factory=lambda: ["cca", "label_prediction"])
    reg: float = field(default=1e-8, metadata={"help": "CCA reg when there is no validation"})


def arrays(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and labels (caption data: each text's `image_index`)."""
    label = next(c for c in ("label", "labels", "image_index") if c in split.column_names)
    data = split.with_format("numpy")[:]
    return data["image_features"], data["text_features"], data[label]


def caption_scores(image_vectors, text_vectors, image_index) -> dict[str, float]:
    """Recall@K with every image counted once."""
    embeds = {
        "image_embeds": torch.as_tensor(image_vectors),
        "labels": torch.as_tensor(image_index),
    }
    images, text_image_index = unique_images(embeds)
    return evaluate_caption_retrieval(images, text_vectors, text_image_index)


def component_grid(max_components: int) -> list[int]:
    sizes = {k for k in (2, 4, 8, 16, 32, 64, 128, 256, 512) if k < max_components}
    return sorted(sizes | set(range(1, min(max_components, 10) + 1)) | {max_components})


def default_scores(image_vectors, text_vectors, labels) -> dict[str, float]:
    return evaluate_retrieval(image_vectors, text_vectors, labels, labels)


def run(method: str, data, args: BaselineArguments) -> dict:
    train, test = arrays(data["train"]), arrays(data["test"])
    captions = "image_index" in data["train"].column_names
    score = caption_scores if captions else None
    start = time.perf_counter()
    if method == "cca":
        widths = min(train[0].shape[1], train[1].shape[1])
        grid = {"reg": [1e-8, 1e-6, 1e-4, 1e-2], "n_components": component_grid(widths)}
        fit = lambda **p: CCA(**p).fit(train[0], train[1])  # noqa: E731
        fixed = {"reg": args.reg, "n_components": widths}
    else:
        if captions:
            raise SystemExit("label_prediction needs class labels; caption data has none")
        grid = {"C": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}
        fit = lambda **p: LabelPrediction(**p).fit(*train)  # noqa: E731
        fixed = None
    if "validation" in data:
        selection = select_on_validation(
            fit, grid, arrays(data["validation"]), score, selection_key(captions)
        )
        model, params, validation = selection.model, selection.params, selection.validation
        curve = selection.grid
    elif fixed is not None:
        model, params, validation, curve = fit(**fixed), fixed, None, []
    else:
        raise SystemExit(f"{method} needs a validation split to choose its hyperparameters")
    train_time = time.perf_counter() - start
    image_vectors, text_vectors = model.embed(test[0], test[1])
    return {
        "method": method,
        "model_type": method,
        "config": params,
        "config_hash": config_hash({"method": method, **params}),
        "dataset": args.dataset,
        "split_sizes": {name: len(split) for name, split in data.items()},
        "seed": None,
        "hyperparameters": {"grid": grid} if validation is not None else params,
        "test": (score or default_scores)(image_vectors, text_vectors, test[2]),
        "validation": validation,
        "best_epoch": None,
        "validation_curve": curve,
        "train_time_s": train_time,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_parameters": model.num_parameters,
        "num_processes": 1,
        "package_version": hf_xmodal.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str]) -> dict[str, dict]:
    (args,) = HfArgumentParser(BaselineArguments).parse_args_into_dataclasses(argv)
    unknown = set(args.methods) - {"cca", "label_prediction"}
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}: choose cca and/or label_prediction")
    data = load_dataset_by_name(args.dataset, args.data_dir)
    validate_feature_dataset(data)
    results = {}
    print(f"{args.dataset}, test split")
    for method in args.methods:
        results[method] = result = run(method, data, args)
        write_results(Path(args.output_dir) / f"{method}-{args.dataset}" / RESULTS_FILE, result)
        params = ", ".join(f"{k}={v:g}" for k, v in result["config"].items())
        print(f"{method:<18} {params:<30} {headline(result['test'])}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
