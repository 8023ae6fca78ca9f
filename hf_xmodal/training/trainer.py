"""Train a model, select it on validation, evaluate it on test, save it: the loop behind
`scripts/train.py`, importable where there is no checkout (e.g. a Space training its model).

    from hf_xmodal.training import main
    results = main(["--model", "dscmr", "--epochs", "4", "--output_dir", "runs/demo"])

A model declares what it trains on and how (`XmodalPreTrainedModel` hooks: its data streams,
stages, progress, end of epoch); this loop calls the hooks and knows no method by name.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import Dataset, DatasetDict
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import HfArgumentParser
from transformers.utils import logging

from ..data import load_dataset_by_name, validate_feature_dataset
from ..evaluation import plot_pr_curves
from ..files import atomic_write, sync_files
from ..models import MODELS, TOWER_DIMS, XmodalProcessor, XmodalTowerProcessor, add_towers
from ..models.modeling_xmodal import XmodalPreTrainedModel, extra_feature_columns, label_column
from .evaluation import embed_split, pr_curves, score_embeddings
from .presets import (
    PRESET_NAMES,
    TRAINING_DEFAULTS,
    preset_for,
    preset_overrides,
    preset_training,
)
from .results import RESULTS_FILE, config_hash, headline, selection_key, write_results
from .splits import VALIDATION_HELP, describe_validation, require_splits, with_validation

logger = get_logger(__name__)  # the main process logs

SPLITS = ("train", "validation", "test")
FEATURE_COLUMNS = ("image_features", "text_features")
STATE_FILE = "train_state.json"
BEST_WEIGHTS = "best_model.safetensors"
BY_PRESET = "default: the preset's (PRESET_TRAINING), else {}".format(
    ", ".join(f"{k} {v}" for k, v in TRAINING_DEFAULTS.items())
)
MAY_CHANGE_ON_RESUME = ("epochs", "eval_every", "resume", "output_dir", "with_towers", "report_to")
"""Arguments a resumed run may change; every other one must be the checkpoint's."""


@dataclass
class TrainArguments:
    model: str = field(
        default="dscmr",
        metadata={
            "help": f"one of {sorted(MODELS)}, or `module:ModelClass` of an importable model"
        },
    )
    dataset: str = field(
        default="wikipedia",
        metadata={"help": "a registered dataset name, or a saved DatasetDict / feature file path"},
    )
    data_dir: str | None = field(default=None, metadata={"help": "folder of flickr8k / fashion"})
    source_dataset: str | None = field(
        default=None,
        metadata={"help": "the labelled source domain, for models that transfer (as --dataset)"},
    )
    source_data_dir: str | None = field(
        default=None, metadata={"help": "folder of the source dataset (as --data_dir)"}
    )
    validation_size: str | None = field(default=None, metadata={"help": VALIDATION_HELP})
    validation_from: str | None = field(
        default=None, metadata={"help": "train or test: the split a validation split comes from"}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": f"settings per kind of relevance, one of {PRESET_NAMES} (default: caption for "
            "caption data, class otherwise)"
        },
    )
    model_config: str | None = field(
        default=None,
        metadata={
            "help": "JSON of config overrides over the preset's, e.g. '{\"embed_dim\": 256}'"
        },
    )
    standardize: bool = field(
        default=True,
        metadata={"help": "standardise each feature with the train split's mean and scale"},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "default: runs/<model>-<dataset>-seed<seed>"}
    )
    epochs: int | None = field(
        default=None, metadata={"help": f"epochs over all training stages ({BY_PRESET})"}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": f"global batch, split over processes ({BY_PRESET})"}
    )
    learning_rate: float | None = field(default=None, metadata={"help": BY_PRESET})
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
    report_to: str | None = field(
        default=None,
        metadata={"help": "an Accelerate tracker for the per-epoch logs, e.g. tensorboard"},
    )


@dataclass
class Run:
    """Everything the phases of a run share once it is set up."""

    args: TrainArguments
    accelerator: Accelerator
    model: torch.nn.Module  # prepared (wrapped) for the processes
    optimizer: torch.optim.Optimizer
    streams: dict[str, DataLoader]  # training streams as the model declared them
    validation: Dataset
    test: Dataset
    schedule: list[str]  # the training stage of each epoch
    captions: bool  # caption data (Recall@K) rather than labelled pairs (MAP)
    split_sizes: dict[str, int]
    validation_split: dict | None  # how a validation split was made, if the data had none
    processor: XmodalProcessor  # fitted on the train split; every split went through it
    output_dir: Path

    @property
    def unwrapped(self) -> XmodalPreTrainedModel:
        return self.accelerator.unwrap_model(self.model)


def parse_args(argv: list[str]) -> TrainArguments:
    parser = HfArgumentParser(TrainArguments, allow_abbrev=False)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    for name in ("epochs", "batch_size", "eval_every", "learning_rate"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise SystemExit(f"--{name} must be positive, got {getattr(args, name)}")
    if args.lr_schedule not in ("cosine", "constant"):
        raise SystemExit(f"--lr_schedule must be cosine or constant, got {args.lr_schedule!r}")
    if args.output_dir is None:
        name = Path(args.dataset).name if os.sep in args.dataset else args.dataset
        args.output_dir = f"runs/{args.model.replace(':', '.')}-{name}-seed{args.seed}"
    output_dir = Path(args.output_dir).absolute()
    for folder in (output_dir, *output_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise SystemExit(f"--output_dir {args.output_dir}: {folder} is a file, not a folder")
    return args


def model_class_of(name: str) -> type[XmodalPreTrainedModel]:
    """A registered model name, or `module:ModelClass` naming an importable model class."""
    if name in MODELS:
        return MODELS[name][1]
    if ":" not in name:
        raise SystemExit(
            f"--model must be one of {sorted(MODELS)} or module:ModelClass, got {name!r}"
        )
    module, _, attribute = name.partition(":")
    try:
        model_class = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"--model {name!r} cannot be imported: {e}") from None
    if not (isinstance(model_class, type) and issubclass(model_class, XmodalPreTrainedModel)):
        raise SystemExit(f"--model {name!r} is not an XmodalPreTrainedModel subclass")
    return model_class


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


def load_data(
    args: TrainArguments, model_class
) -> tuple[DatasetDict, DatasetDict | None, dict | None]:
    """The target dataset (train/validation/test), the source dataset if one is given, and how
    the validation split was made if the target had none."""
    if not model_class.requires_source_dataset and args.source_dataset is not None:
        raise SystemExit(f"--model {args.model} trains on one dataset: drop --source_dataset")
    target = load_dataset_by_name(args.dataset, args.data_dir)
    target, validation_split = with_validation(target, args.validation_size, args.validation_from)
    require_splits(target, SPLITS)
    validate_feature_dataset(target["train"])
    source = None
    if args.source_dataset is not None:
        source = load_dataset_by_name(args.source_dataset, args.source_data_dir)
    return target, source, validation_split


def standardized(
    target: DatasetDict, source: DatasetDict | None, standardize: bool
) -> tuple[XmodalProcessor, DatasetDict, DatasetDict | None]:
    """The processor fitted on the target's train split, and the datasets passed through it:
    the inputs that the saved model and processor reproduce. A source in another input space
    (other feature sizes, e.g. Fashion tower features for Wikipedia SIFT/LDA) goes through a
    processor of its own, fitted on its train split."""
    processor = fitted_processor(target["train"], standardize)
    source_processor = processor
    if source is not None:
        own = fitted_processor(source["train"], standardize, like=processor)
        if not own.feature_dims().items() <= processor.feature_dims().items():
            source_processor = own
    if processor.applied_statistics is None:
        return processor, target, source
    source = None if source is None else processed(source, source_processor)
    return processor, processed(target, processor), source


def processed(data: DatasetDict | Dataset, processor) -> DatasetDict | Dataset:
    """`data` with its feature columns passed through `processor` (standardised as a saved
    model's processor standardises them)."""

    def apply(batch):
        given = {name: batch[name] for name in processor.feature_dims() if name in batch}
        return dict(processor(**given, return_tensors="np"))

    return data.map(apply, batched=True, batch_size=4096, keep_in_memory=True)


def fitted_processor(
    train: Dataset, standardize: bool, like: XmodalProcessor | None = None
) -> XmodalProcessor:
    """A processor for the feature sizes of a train split, fitted on it: images, texts and every
    other `<modality>_features` column of one vector per row (an extra modality, as MHTN's
    tags). A split of images alone (MHTN's single-modal source) takes the text size of `like`."""
    extra = extra_feature_columns(train)
    given = [name for name in (*FEATURE_COLUMNS, *extra) if name in train.column_names]
    columns = train.with_format("numpy", columns=given)[:]
    dims = [
        columns[name].shape[1] if name in columns else like.feature_dims()[name]
        for name in FEATURE_COLUMNS
    ]
    extra_dims = {name.removesuffix("_features"): columns[name].shape[1] for name in extra}
    processor = XmodalProcessor(*dims, standardize=standardize, extra_feature_dims=extra_dims)
    return processor.fit(**{name: columns[name] for name in given})


def build_loaders(args, accelerator, model, target: DatasetDict, source: DatasetDict | None):
    """A shuffled loader of whole batches per training stream the model declares."""
    if args.batch_size % accelerator.num_processes:
        raise SystemExit(
            f"--batch_size {args.batch_size} must divide over {accelerator.num_processes} processes"
        )
    declared = model.training_datasets(target, source)
    batch_size, processes = args.batch_size, accelerator.num_processes
    rows = min(len(data) for data in declared.values())
    if rows < batch_size:  # a small dataset trains on one batch of (nearly) all its rows
        batch_size = rows - rows % processes
        if batch_size == 0:
            raise SystemExit(f"a training stream has {rows} rows, fewer than {processes} processes")
        logger.warning(
            f"a training stream has {rows} rows: batches of {batch_size}, not {args.batch_size}"
        )
    # Only whole global batches: Accelerate would fill the last one with repeated rows.
    per_process = batch_size // processes
    return {
        name: DataLoader(data.with_format("torch"), per_process, shuffle=True, drop_last=True)
        for name, data in declared.items()
    }


def stage_schedule(model: XmodalPreTrainedModel, epochs: int) -> list[str]:
    """The training stage of each epoch."""
    schedule = [name for name, n in model.training_stages(epochs) for _ in range(n)]
    if len(schedule) != epochs:
        raise SystemExit(f"the model's stages cover {len(schedule)} epochs, not {epochs}")
    return schedule


def setup(args: TrainArguments) -> Run:
    """Accelerator, seed, data, model, optimizer and loaders, prepared for the processes."""
    model_class = model_class_of(args.model)
    # A model whose stages leave parameters out of the loss needs DDP to look for them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=model_class.has_unused_parameters)
    # A seedable sampler gives every process count the same global batches.
    accelerator = Accelerator(
        kwargs_handlers=[ddp],
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with=args.report_to,
        project_dir=args.output_dir,
    )
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process and not args.resume and latest_checkpoint(output_dir):
        raise SystemExit(f"{output_dir} already holds a run: pass --resume or another --output_dir")
    target, source, validation_split = load_data(args, model_class)
    if validation_split:
        accelerator.print(describe_validation(validation_split))
    processor, target, source = standardized(target, source, args.standardize)
    args.preset = args.preset or preset_for(target["train"])  # recorded with the arguments
    model_type = model_class.config_class.model_type
    try:
        overrides = preset_overrides(args.preset, model_type, model_class.config_class)
        training = preset_training(args.preset, model_type)
    except ValueError as e:
        raise SystemExit(f"--preset: {e}") from None
    for name, value in training.items():  # recorded with the arguments, as the preset
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        fields = model_class.config_from_datasets(target, source)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    try:
        config = model_class.config_class(
            **fields, **{**overrides, **config_overrides(args.model_config)}
        )
    except (TypeError, ValueError, StrictDataclassError) as e:
        raise SystemExit(f"--model_config: {e}") from None
    set_seed(args.seed)  # after the data: building a feature cache draws random numbers
    model = model_class(config)
    if source is None and model.uses_source():
        raise SystemExit(
            f"--model {args.model} transfers from a source with this config: pass "
            "--source_dataset, or switch its source terms off (its card's target-only baseline)"
        )
    streams = build_loaders(args, accelerator, model, target, source)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    model, optimizer, *loaders = accelerator.prepare(model, optimizer, *streams.values())
    if accelerator.log_with:  # a tracker is configured (--report_to)
        accelerator.init_trackers(output_dir.name, config=asdict(args))
    return Run(
        args=args,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        streams=dict(zip(streams, loaders, strict=True)),
        validation=target["validation"],
        test=target["test"],
        schedule=stage_schedule(accelerator.unwrap_model(model), args.epochs),
        captions=label_column(target["train"]) == "image_index",
        split_sizes={s: len(target[s]) for s in SPLITS},
        validation_split=validation_split,
        processor=processor,
        output_dir=output_dir,
    )


def lr_factor(schedule: list[str], epoch: int, step: int, steps_per_epoch: int) -> float:
    """Cosine decay from 1 to 0 over the epochs of the current stage."""
    stage = schedule[epoch - 1]
    first, n = schedule.index(stage), schedule.count(stage)
    progress = ((epoch - 1 - first) * steps_per_epoch + step) / (n * steps_per_epoch)
    return 0.5 * (1 + math.cos(math.pi * progress))


def cycle(loader: DataLoader, seed: int):
    """Endless batches of `loader`, reshuffled each pass (pass p shuffles with `seed + p`)."""
    for p in range(1 << 62):
        loader.set_epoch(seed + p)
        yield from loader


def stream_batches(streams: dict[str, DataLoader], epoch: int):
    """The batches of one epoch: the first stream's, each joined by the next batch of every other
    stream (cycled, shuffled the same way whether resumed or not) with its keys prefixed by the
    stream's name."""
    (_, first), *others = streams.items()
    first.set_epoch(epoch - 1)
    cycled = {
        name: cycle(loader, seed=1_000_000 * i + 1_000 * (epoch - 1))
        for i, (name, loader) in enumerate(others, start=1)
    }
    for batch in first:
        for name, batches in cycled.items():
            batch.update({f"{name}_{key}": value for key, value in next(batches).items()})
        yield batch


def train_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One epoch; the loss and each loss term, averaged over the steps and processes."""
    args, model, optimizer = run.args, run.model, run.optimizer
    steps_per_epoch = len(next(iter(run.streams.values())))
    total_steps = steps_per_epoch * args.epochs
    model.train()
    total_loss = torch.zeros((), device=run.accelerator.device)
    term_sums: dict[str, torch.Tensor] = {}
    for step, batch in enumerate(stream_batches(run.streams, epoch)):
        if args.lr_schedule == "cosine":
            factor = lr_factor(run.schedule, epoch, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = args.learning_rate * factor
        run.unwrapped.set_training_progress(((epoch - 1) * steps_per_epoch + step) / total_steps)
        out = model(**batch)
        run.accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad()
        total_loss += out.loss.detach()
        for name, term in (out.loss_terms or {}).items():
            term_sums[name] = term_sums.get(name, 0) + term
    means = {"loss": run.accelerator.reduce(total_loss, "mean").item() / steps_per_epoch}
    if term_sums:
        terms = run.accelerator.reduce(torch.stack(list(term_sums.values())), "mean")
        for name, term in zip(term_sums, terms.tolist(), strict=True):
            means[name] = term / steps_per_epoch
    return means


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (its state file is written last)."""
    done = [p for p in (output_dir / "checkpoints").glob("epoch_*") if (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(run: Run, state: dict, best_weights: dict) -> None:
    """The training state after an epoch, for `--resume`; older checkpoints are removed."""
    checkpoints = run.output_dir / "checkpoints"
    path = checkpoints / f"epoch_{state['epoch']}"
    run.accelerator.save_state(path)
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        save_file(best_weights, path / BEST_WEIGHTS)
        sync_files(path)  # on disk before the state file marks the checkpoint complete
        atomic_write(path / STATE_FILE, json.dumps(state))
        for old in checkpoints.glob("epoch_*"):
            if old != path:
                shutil.rmtree(old)
    run.accelerator.wait_for_everyone()


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_arguments(args: TrainArguments) -> dict:
    """The arguments that define a run (recorded in its state; `--resume` must repeat them)."""
    defining = {k: v for k, v in asdict(args).items() if k not in MAY_CHANGE_ON_RESUME}
    return {**defining, "model_config": config_overrides(args.model_config)}


def check_resumable(args: TrainArguments, state: dict, last: Path) -> None:
    """Refuse to resume with arguments other than the checkpoint's, naming each difference."""
    recorded = state.get("arguments")
    if recorded is None:
        logger.warning(f"{last} records no arguments: they cannot be checked against the run's")
        return
    given = run_arguments(args)
    differ = [
        f"--{k} {given.get(k)!r} (the run's: {v!r})"
        for k, v in recorded.items()
        if given.get(k) != v
    ]
    if differ:
        raise SystemExit(
            f"--resume continues the run in {last} with its own arguments; "
            f"these differ: {', '.join(differ)}"
        )
    if args.epochs < state["epoch"]:
        raise SystemExit(
            f"--epochs {args.epochs} is below the {state['epoch']} epochs already trained in {last}"
        )


def resume(run: Run) -> tuple[dict, dict]:
    """The training state and best weights to start from: fresh, or the latest checkpoint
    (`--resume`, after checking that it is a run with the same arguments)."""
    state = {
        "epoch": 0,
        "best": -math.inf,
        "best_epoch": None,
        "curve": [],
        "training_curve": [],
        "seconds": 0.0,
        "arguments": run_arguments(run.args),
    }
    last = latest_checkpoint(run.output_dir) if run.args.resume else None
    if last is None:
        if run.args.resume:
            logger.warning(
                f"--resume: no checkpoint in {run.output_dir / 'checkpoints'}, starting afresh"
            )
        return state, weights_of(run.unwrapped)
    saved = json.loads((last / STATE_FILE).read_text())
    check_resumable(run.args, saved, last)
    run.accelerator.load_state(last)
    logger.info(f"resumed from {last} (epoch {saved['epoch']})")
    return {**state, **saved}, load_file(last / BEST_WEIGHTS)


def validate(run: Run, epoch: int, state: dict, best_weights: dict, losses: dict) -> dict:
    """Score the validation split; keep the weights if they are the best of the final stage."""
    key, stage = selection_key(run.captions), run.schedule[epoch - 1]
    metrics = score_embeddings(
        run.unwrapped, embed_split(run.unwrapped, run.validation), run.captions
    )
    state["curve"].append(
        {"epoch": epoch, "stage": stage, "loss": losses["loss"], key: metrics[key]}
    )
    run.accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=epoch)
    # Only the final stage produces the model that retrieval uses.
    if run.schedule[-1] == stage and metrics[key] > state["best"]:
        state.update(best=metrics[key], best_epoch=epoch, best_validation=metrics)
        return weights_of(run.unwrapped)
    return best_weights


def fit(run: Run, state: dict, best_weights: dict) -> dict:
    """Train from the epoch after `state["epoch"]`, validating every `eval_every` epochs and at
    the end of each stage; returns the best weights of the final stage."""
    args, unwrapped, schedule = run.args, run.unwrapped, run.schedule
    key = selection_key(run.captions)
    data = {name: loader.dataset for name, loader in run.streams.items()}
    start = time.perf_counter() - state["seconds"]
    bar = logging.tqdm(
        range(state["epoch"] + 1, args.epochs + 1),
        desc=f"{args.model} on {args.dataset}",
        disable=not run.accelerator.is_local_main_process,
    )
    for epoch in bar:
        # Stage: its loss, and fresh Adam moments when it begins.
        stage = schedule[epoch - 1]
        unwrapped.set_training_stage(stage)
        if epoch > 1 and schedule[epoch - 2] != stage:
            run.optimizer.optimizer.state.clear()
        # Train, let the model act on the epoch, log.
        losses = train_epoch(run, epoch)
        losses |= unwrapped.on_epoch_end(epoch, data)
        state["training_curve"].append({"epoch": epoch, "stage": stage, **losses})
        run.accelerator.log({f"train/{k}": v for k, v in losses.items()}, step=epoch)
        bar.set_postfix(loss=f"{losses['loss']:.4f}")
        # Validate every `eval_every` epochs and at the end of each stage; checkpoint then.
        last_of_stage = epoch == args.epochs or schedule[epoch] != stage
        if epoch % args.eval_every and not last_of_stage:
            continue
        best_weights = validate(run, epoch, state, best_weights, losses)
        state.update(epoch=epoch, seconds=time.perf_counter() - start)
        save_checkpoint(run, state, best_weights)
        bar.set_postfix(
            {"loss": f"{losses['loss']:.4f}", f"val_{key}": f"{state['curve'][-1][key]:.4f}"}
        )
    state["seconds"] = time.perf_counter() - start
    return best_weights


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


def processor_for(run: Run):
    """The processor saved with the model; with the towers when the model is trained on their
    features (or `--with_towers`), which are then added to the model."""
    config = run.unwrapped.config
    with_towers = run.args.with_towers
    if with_towers is None:
        dims = (config.image_feature_dim, config.text_feature_dim)
        with_towers = dims == tuple(TOWER_DIMS.values())
    fitted = run.processor
    if with_towers:
        add_towers(run.unwrapped, fitted.applied_statistics)
        return XmodalTowerProcessor.from_towers(
            standardize=fitted.standardize,
            feature_statistics=fitted.feature_statistics,
            extra_feature_dims=fitted.extra_feature_dims,
        )
    return fitted


def evaluate_and_save(run: Run, state: dict, best_weights: dict) -> dict:
    """Test the best weights once; write the model, `results.json` and the PR-curve plot."""
    args, unwrapped = run.args, run.unwrapped
    unwrapped.load_state_dict(best_weights)
    processor = processor_for(run)
    embeds = embed_split(run.unwrapped, run.test)
    test = score_embeddings(unwrapped, embeds, run.captions)
    config = unwrapped.config.to_dict()
    results = {
        "method": args.model,
        "model_type": unwrapped.config.model_type,
        "config": config,
        "config_hash": config_hash(config),
        "dataset": args.dataset,
        "preset": args.preset,
        "split_sizes": run.split_sizes,
        "validation_split": run.validation_split,
        "seed": args.seed,
        "hyperparameters": asdict(args),
        "test": test,
        "validation": state.get("best_validation"),
        "best_epoch": state["best_epoch"],
        "validation_curve": state["curve"],
        "training_curve": state["training_curve"],
        "train_time_s": state["seconds"],
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_parameters": sum(p.numel() for p in unwrapped.parameters()),
        "num_processes": run.accelerator.num_processes,
        "package_version": version("hf_xmodal"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if run.accelerator.is_main_process:
        save_pretrained_atomically(unwrapped, processor, run.output_dir / "model")
        write_results(run.output_dir / RESULTS_FILE, results)
        plot_pr_curves(
            pr_curves(unwrapped, embeds, run.captions),
            run.output_dir / "pr_curve.png",
            title=f"{args.model} on {args.dataset} (test)",
        )
        logger.info(
            f"test {headline(test)}  (best validation epoch {state['best_epoch']}, "
            f"{state['seconds']:.1f} s)\nsaved to {run.output_dir}"
        )
    return results


def main(argv: list[str]) -> dict:
    """Parse the arguments, train, select on validation, test once, save; returns the results."""
    args = parse_args(argv)
    run = setup(args)
    state, best_weights = resume(run)
    best_weights = fit(run, state, best_weights)
    results = evaluate_and_save(run, state, best_weights)
    run.accelerator.end_training()
    return results
