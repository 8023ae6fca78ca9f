"""Run the baselines on a dataset and write one results file each: CCA, label prediction (class
labels only) and the InfoNCE linear heads.

    python scripts/baselines.py                                 # bundled Wikipedia
    python scripts/baselines.py --dataset flickr8k_features     # caption data: CCA, InfoNCE heads
    python scripts/baselines.py --dataset wikipedia_full_test --validation_size 0 --methods cca

The features go through the same standardisation as the models' (`XmodalProcessor.fit` on the
train split; `--standardize false` switches it off). Hyperparameters are chosen on the validation
split; a dataset without one gets 10% of its train split (seeded; `--validation_size`,
`--validation_from`). With `--validation_size 0` there is none, and CCA runs with the fixed
setting `--reg 1e-8`, all components (the original paper's setting on `wikipedia_full_test`).
"""

import functools
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

import hf_xmodal
from hf_xmodal.baselines import CCA, InfoNCEHeads, LabelPrediction, select_on_validation
from hf_xmodal.data import load_dataset_by_name, validate_feature_dataset
from hf_xmodal.evaluation import evaluate_caption_retrieval, evaluate_retrieval
from hf_xmodal.models import XmodalProcessor
from hf_xmodal.training import (
    RESULTS_FILE,
    VALIDATION_HELP,
    config_hash,
    describe_validation,
    headline,
    selection_key,
    unique_images,
    with_validation,
    write_results,
)

METHODS = ("cca", "label_prediction", "infonce_heads")


@dataclass
class BaselineArguments:
    dataset: str = "wikipedia"
    data_dir: str | None = None
    output_dir: str = "runs/baselines"
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"some of {METHODS}; label_prediction is skipped on caption data"},
    )
    reg: float = field(default=1e-8, metadata={"help": "CCA reg when there is no validation"})
    standardize: bool = field(default=True, metadata={"help": "standardise the features"})
    validation_size: str | None = field(default=None, metadata={"help": VALIDATION_HELP})
    validation_from: str | None = field(
        default=None, metadata={"help": "train or test: the split a validation split comes from"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the InfoNCE heads"})


def arrays(split, processor: XmodalProcessor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Processed features and labels (caption data: each text's `image_index`)."""
    label = next(c for c in ("label", "labels", "image_index") if c in split.column_names)
    data = split.with_format("numpy")[:]
    batch = processor(data["image_features"], data["text_features"], return_tensors="np")
    return batch["image_features"], batch["text_features"], data[label]


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


def run(
    method: str, data, processor: XmodalProcessor, args: BaselineArguments, split: dict | None
) -> dict:
    """Fit `method` (choosing its settings on validation), score it on test: a results dict;
    `split` describes a validation split made from another split."""
    train, test = arrays(data["train"], processor), arrays(data["test"], processor)
    captions = "image_index" in data["train"].column_names
    score = caption_scores if captions else None
    has_validation = "validation" in data
    start = time.perf_counter()
    if method == "cca":
        widths = min(train[0].shape[1], train[1].shape[1])
        grid = {"reg": [1e-8, 1e-6, 1e-4, 1e-2], "n_components": component_grid(widths)}
        fitted = functools.cache(lambda reg: CCA(reg=reg).fit(train[0], train[1]))
        fit = lambda reg, n_components: fitted(reg).truncated(n_components)  # noqa: E731
        fixed = {"reg": args.reg, "n_components": widths}
    elif method == "label_prediction":
        grid = {"C": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]}
        fit = lambda **p: LabelPrediction(**p).fit(*train)  # noqa: E731
        fixed = None
    else:
        held_out = arrays(data["validation"], processor) if has_validation else None
        # larger batches give InfoNCE more negatives (the `caption` preset trains the models so)
        grid = {
            "temperature": [0.05, 0.1],
            "batch_size": [128, 1024],
            "learning_rate": [1e-3, 4e-3],
        }
        fit = lambda **p: InfoNCEHeads(seed=args.seed, **p).fit(  # noqa: E731
            train[0],
            train[1],
            groups=train[2] if captions else None,
            validation=held_out,
            score=score,
            key=selection_key(captions),
        )
        fixed = None
    if has_validation:
        selection = select_on_validation(
            fit, grid, arrays(data["validation"], processor), score, selection_key(captions)
        )
        model, params, validation = selection.model, selection.params, selection.validation
        curve = selection.grid
    elif fixed is not None:
        model, params, validation, curve = fit(**fixed), fixed, None, []
    else:
        raise SystemExit(f"{method} needs a validation split to choose its hyperparameters")
    train_time = time.perf_counter() - start
    if isinstance(model, InfoNCEHeads):
        params = {**params, "epochs": model.best_epoch_}
    image_vectors, text_vectors = model.embed(test[0], test[1])
    return {
        "method": method,
        "model_type": method,
        "config": params,
        "config_hash": config_hash({"method": method, **params}),
        "dataset": args.dataset,
        "split_sizes": {name: len(split) for name, split in data.items()},
        "validation_split": split,
        "standardize": args.standardize,
        "seed": args.seed if method == "infonce_heads" else None,
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
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}: choose some of {METHODS}")
    data = load_dataset_by_name(args.dataset, args.data_dir)
    data, split = with_validation(data, args.validation_size, args.validation_from)
    if split:
        print(describe_validation(split))
    image_dim, text_dim = validate_feature_dataset(data)
    train = data["train"].with_format("numpy")[:]
    processor = XmodalProcessor(image_dim, text_dim, standardize=args.standardize)
    processor.fit(train["image_features"], train["text_features"])
    captions = "image_index" in data["train"].column_names
    methods = [m for m in args.methods if not (captions and m == "label_prediction")]
    results = {}
    print(f"{args.dataset}, test split")
    for method in methods:
        results[method] = result = run(method, data, processor, args, split)
        run_name = f"{method}-{Path(args.dataset).name}"
        write_results(Path(args.output_dir) / run_name / RESULTS_FILE, result)
        params = ", ".join(f"{k}={v:g}" for k, v in result["config"].items())
        print(f"{method:<18} {params:<30} {headline(result['test'])}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
