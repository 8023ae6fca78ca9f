"""Train an hf_xmodal model, select it on validation, evaluate it on test, save it.

    accelerate launch scripts/train.py                       # DSCMR-style model, bundled Wikipedia
    accelerate launch scripts/train.py --model dscmr --epochs 40 --model_config '{"embed_dim": 256}'
    accelerate launch scripts/train.py args.json             # the same arguments as a JSON file
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py

Writes `<output_dir>/model` (model + processor, `from_pretrained`-ready; trained on the towers'
features, it carries the towers and takes images and texts), `results.json`,
`pr_curve.png`, and `checkpoints/` (the last training state; `--resume` continues from it).
"""

import json
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from datasets import ClassLabel
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser

import hf_xmodal
from hf_xmodal.data import load_dataset_by_name, validate_feature_dataset
from hf_xmodal.evaluation import plot_pr_curves
from hf_xmodal.models import (
    MODELS,
    TOWER_DIMS,
    XmodalProcessor,
    XmodalTowerProcessor,
    add_towers,
)
from hf_xmodal.training import (
    RESULTS_FILE,
    atomic_write_text,
    config_hash,
    embed_split,
    headline,
    pr_curves,
    score_embeddings,
    selection_key,
    write_results,
)

SPLITS = ("train", "validation", "test")
STATE_FILE = "train_state.json"
BEST_WEIGHTS = "best_model.safetensors"


@dataclass
class TrainArguments:
    model: str = field(default="dscmr", metadata={"help": f"one of {sorted(MODELS)}"})
    dataset: str = field(
        default="wikipedia",
        metadata={"help": "a registered dataset name, or a saved DatasetDict / feature file path"},
    )
    data_dir: str | None = field(default=None, metadata={"help": "folder of flickr8k / fashion"})
    model_config: str | None = field(
        default=None, metadata={"help": "JSON of config overrides, e.g. '{\"embed_dim\": 256}'"}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "default: runs/<model>-<dataset>-seed<seed>"}
    )
    epochs: int = field(default=40, metadata={"help": "epochs over all training stages"})
    batch_size: int = field(default=100, metadata={"help": "global batch, split over processes"})
    learning_rate: float = 1e-3
    lr_schedule: str = field(
        default="cosine", metadata={"help": "cosine (decay to 0 in each stage) or constant"}
    )
    weight_decay: float = 0.0
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    seed: int = 0
    eval_every: int = field(default=2, metadata={"help": "validate every N epochs"})
    resume: bool = field(default=False, metadata={"help": "continue from output_dir/checkpoints"})
    with_towers: bool | None = field(
        default=None,
        metadata={
            "help": "save the model with the pretrained towers, so that it takes images and texts "
            "(default: when the features are the towers' own, e.g. flickr8k_features)"
        },
    )


def parse_args(argv: list[str]) -> TrainArguments:
    parser = HfArgumentParser(TrainArguments)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    if args.model not in MODELS:
        raise SystemExit(f"--model must be one of {sorted(MODELS)}, got {args.model!r}")
    for name in ("epochs", "batch_size", "eval_every"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")
    if args.lr_schedule not in ("cosine", "constant"):
        raise SystemExit(f"--lr_schedule must be cosine or constant, got {args.lr_schedule!r}")
    if args.output_dir is None:
        name = Path(args.dataset).name if os.sep in args.dataset else args.dataset
        args.output_dir = f"runs/{args.model}-{name}-seed{args.seed}"
    return args


def config_overrides(text: str | None) -> dict:
    if not text:
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--model_config is not valid JSON: {e}") from None
    if not isinstance(overrides, dict):
        raise SystemExit("--model_config must be a JSON object of config fields")
    return overrides


def label_column(dataset) -> str:
    """`label`/`labels` for labelled pairs; `image_index` for caption data (pair identity)."""
    for name in ("label", "labels", "image_index"):
        if name in dataset.column_names:
            return name
    raise SystemExit(
        "the dataset has no 'label', 'labels' or 'image_index' column "
        f"(columns: {dataset.column_names})"
    )


def torch_split(dataset, label_name: str):
    columns = ["image_features", "text_features", label_name]
    return dataset.select_columns(columns).rename_column(label_name, "labels").with_format("torch")


def stage_schedule(model, epochs: int) -> list[str]:
    """The training stage of each epoch (one unnamed stage unless the model defines stages)."""
    if not hasattr(model, "training_stages"):
        return [""] * epochs
    schedule = [name for name, n in model.training_stages(epochs) for _ in range(n)]
    if len(schedule) != epochs:
        raise SystemExit(f"the model's stages cover {len(schedule)} epochs, not {epochs}")
    return schedule


def lr_factor(schedule: list[str], epoch: int, step: int, steps_per_epoch: int) -> float:
    """Cosine decay from 1 to 0 over the epochs of the current stage."""
    stage = schedule[epoch - 1]
    first, n = schedule.index(stage), schedule.count(stage)
    progress = ((epoch - 1 - first) * steps_per_epoch + step) / (n * steps_per_epoch)
    return 0.5 * (1 + math.cos(math.pi * progress))


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (its state file is written last)."""
    done = [p for p in checkpoints.glob("epoch_*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(accelerator, checkpoints: Path, state: dict, best_weights: dict) -> None:
    path = checkpoints / f"epoch_{state['epoch']}"
    accelerator.save_state(path)
    if accelerator.is_main_process:
        save_file(best_weights, path / BEST_WEIGHTS)
        atomic_write_text(path / STATE_FILE, json.dumps(state))
        for old in checkpoints.glob("epoch_*"):
            if old != path:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def save_pretrained_atomically(model, processor, path: Path) -> None:
    """Write model + processor beside `path`, then swap the folder in."""
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> dict:
    args = parse_args(argv)
    config_class, model_class = MODELS[args.model]
    # Staged models leave some parameters out of a stage's loss.
    ddp = DistributedDataParallelKwargs(
        find_unused_parameters=hasattr(model_class, "training_stages")
    )
    # A seedable sampler gives every process count the same global batches.
    accelerator = Accelerator(
        kwargs_handlers=[ddp],
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    checkpoints = output_dir / "checkpoints"
    if accelerator.is_main_process and not args.resume and latest_checkpoint(checkpoints):
        raise SystemExit(f"{output_dir} already holds a run: pass --resume or another --output_dir")

    data = load_dataset_by_name(args.dataset, args.data_dir)
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise SystemExit(f"the dataset lacks the split(s) {missing}; it has {list(data)}")
    image_dim, text_dim = validate_feature_dataset(data["train"])
    label_name = label_column(data["train"])
    captions = label_name == "image_index"
    label_feature = data["train"].features[label_name]
    if isinstance(label_feature, ClassLabel):
        labels = {"id2label": dict(enumerate(label_feature.names))}
    elif captions:  # each training image is its own class
        labels = {"num_labels": max(data["train"]["image_index"]) + 1}
    else:
        labels = {"num_labels": label_feature.length}
    config = config_class(
        image_feature_dim=image_dim,
        text_feature_dim=text_dim,
        **labels,
        **config_overrides(args.model_config),
    )
    model = model_class(config)
    with_towers = args.with_towers
    if with_towers is None:
        with_towers = (image_dim, text_dim) == tuple(TOWER_DIMS.values())

    if args.batch_size % accelerator.num_processes:
        raise SystemExit(
            f"--batch_size {args.batch_size} must divide over {accelerator.num_processes} processes"
        )
    per_process = args.batch_size // accelerator.num_processes
    splits = {s: torch_split(data[s], label_name) for s in SPLITS}
    train_loader = DataLoader(splits["train"], batch_size=per_process, shuffle=True)
    eval_loaders = [DataLoader(splits[s], batch_size=512) for s in ("validation", "test")]
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    model, optimizer, train_loader, *eval_loaders = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders
    )
    validation_loader, test_loader = eval_loaders
    unwrapped = accelerator.unwrap_model(model)
    schedule = stage_schedule(unwrapped, args.epochs)

    key = selection_key(captions)
    state = {"epoch": 0, "best": -math.inf, "best_epoch": None, "curve": [], "seconds": 0.0}
    best_weights = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
    last = latest_checkpoint(checkpoints) if args.resume else None
    if last is not None:
        accelerator.load_state(last)
        state = json.loads((last / STATE_FILE).read_text())
        best_weights = load_file(last / BEST_WEIGHTS)
        accelerator.print(f"resumed from {last} (epoch {state['epoch']})")

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * args.epochs
    start = time.perf_counter() - state["seconds"]
    bar = tqdm(
        range(state["epoch"] + 1, args.epochs + 1),
        desc=f"{args.model} on {args.dataset}",
        disable=not accelerator.is_local_main_process,
    )
    for epoch in bar:
        stage = schedule[epoch - 1]
        if stage:
            unwrapped.set_training_stage(stage)
            if epoch > 1 and schedule[epoch - 2] != stage:
                optimizer.optimizer.state.clear()  # fresh Adam moments for each stage
        train_loader.set_epoch(epoch - 1)  # the same shuffle order whether resumed or not
        model.train()
        total_loss = torch.zeros((), device=accelerator.device)
        for step, batch in enumerate(train_loader):
            if args.lr_schedule == "cosine":
                factor = lr_factor(schedule, epoch, step, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = args.learning_rate * factor
            if hasattr(unwrapped, "set_training_progress"):
                unwrapped.set_training_progress(
                    ((epoch - 1) * steps_per_epoch + step) / total_steps
                )
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            total_loss += loss.detach()
        epoch_loss = accelerator.reduce(total_loss, "mean").item() / steps_per_epoch
        last_of_stage = epoch == args.epochs or schedule[epoch] != stage
        if epoch % args.eval_every and not last_of_stage:
            bar.set_postfix(loss=f"{epoch_loss:.4f}")
            continue
        embeds = embed_split(model, validation_loader, accelerator)
        metrics = score_embeddings(unwrapped, embeds, captions)
        state["curve"].append(
            {"epoch": epoch, "stage": stage, "loss": epoch_loss, key: metrics[key]}
        )
        # Only the final stage produces the model that retrieval uses.
        if schedule[-1] == stage and metrics[key] > state["best"]:
            state.update(best=metrics[key], best_epoch=epoch, best_validation=metrics)
            best_weights = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
        state.update(epoch=epoch, seconds=time.perf_counter() - start)
        save_checkpoint(accelerator, checkpoints, state, best_weights)
        bar.set_postfix({"loss": f"{epoch_loss:.4f}", f"val_{key}": f"{metrics[key]:.4f}"})
    train_time = time.perf_counter() - start

    unwrapped.load_state_dict(best_weights)
    if with_towers:
        add_towers(unwrapped)
        processor = XmodalTowerProcessor.from_towers()
    else:
        processor = XmodalProcessor(image_feature_dim=image_dim, text_feature_dim=text_dim)
    embeds = embed_split(model, test_loader, accelerator)
    test = score_embeddings(unwrapped, embeds, captions)
    results = {
        "method": args.model,
        "model_type": config.model_type,
        "config": unwrapped.config.to_dict(),
        "config_hash": config_hash(unwrapped.config.to_dict()),
        "dataset": args.dataset,
        "split_sizes": {s: len(data[s]) for s in SPLITS},
        "seed": args.seed,
        "hyperparameters": asdict(args),
        "test": test,
        "validation": state.get("best_validation"),
        "best_epoch": state["best_epoch"],
        "validation_curve": state["curve"],
        "train_time_s": train_time,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
        "num_processes": accelerator.num_processes,
        "package_version": hf_xmodal.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if accelerator.is_main_process:
        save_pretrained_atomically(unwrapped, processor, output_dir / "model")
        write_results(output_dir / RESULTS_FILE, results)
        plot_pr_curves(
            pr_curves(unwrapped, embeds, captions),
            output_dir / "pr_curve.png",
            title=f"{args.model} on {args.dataset} (test)",
        )
        accelerator.print(
            f"test {headline(test)}  (best validation epoch {state['best_epoch']}, "
            f"{train_time:.1f} s)\nsaved to {output_dir}"
        )
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
