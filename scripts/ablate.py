"""Train a method with each of its components switched off in turn, over several seeds.

    python scripts/ablate.py --model daml                        # bundled Wikipedia, seeds 0 1 2
    python scripts/ablate.py --model uncsm --dataset fashion_features --seeds 0 --epochs 20
    python scripts/ablate.py --model dscmr --dataset my_features.mat --validation_size 0.2

The components are those of `model_cards/<model_type>.yaml`, each switched off through its config
field: 0 for a weight or a count, false for a switch. An optional component the model leaves off
is switched on instead, at the yaml's `paper_values` (else 1); the yaml's optional `baselines`
(e.g. a transfer method trained on its target alone) follow. Every run is a `scripts/train.py`
run in `<output_dir>/<variant>-seed<seed>` (arguments this script does not know go to train.py,
e.g. `--validation_size` / `--validation_from`); every variant starts from the dataset's preset
(`--preset`, default chosen from the data as train.py does) and `--model_config`;
a finished run is reused, so an interrupted ablation continues where it stopped.
`<output_dir>/ablation.json` holds the mean ± std of every test metric per variant; it is copied
into each full-model run, whose model card then shows the table (`scripts/push_to_hub.py
--ablation` adds the tables of other datasets).
"""

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.hub import (
    ABLATION_FILE,
    headline_metrics,
    load_method_card,
    metric_label,
    off_value,
)
from hf_xmodal.models import MODELS
from hf_xmodal.training import (
    PRESET_NAMES,
    RESULTS_FILE,
    load_results,
    mean_std,
    preset_for,
    preset_overrides,
    summarize,
    write_results,
)
from hf_xmodal.training import main as train
from hf_xmodal.training.trainer import config_overrides


@dataclass
class AblationArguments:
    model: str = field(default="dscmr", metadata={"help": f"one of {sorted(MODELS)}"})
    dataset: str = "wikipedia"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model_config: str | None = field(
        default=None, metadata={"help": "JSON of config overrides shared by every variant"}
    )
    preset: str | None = field(
        default=None,
        metadata={"help": f"one of {PRESET_NAMES} (default: chosen from the dataset)"},
    )
    data_dir: str | None = field(default=None, metadata={"help": "folder of flickr8k / fashion"})
    output_dir: str | None = field(
        default=None, metadata={"help": "default: runs/ablation-<model>-<dataset>"}
    )


def variants(model: str, base: dict) -> list[tuple[str, str, dict]]:
    """(variant, row name, config overrides): the full model, then each component switched off
    in turn (a component the model leaves off is switched on instead, at the paper's value),
    then the card's baselines."""
    config_class, _ = MODELS[model]
    defaults = config_class(**base).to_dict()
    method = load_method_card(model)
    rows = [("full", "full model", base)]
    for component in method["components"]:
        name = component["config"]
        off = off_value(defaults[name])
        if defaults[name] != off:
            rows.append((f"no-{name}", f"without {component['name']}", {**base, name: off}))
        else:
            on = method["paper_values"].get(name, True if isinstance(off, bool) else 1.0)
            rows.append((f"with-{name}", f"with {component['name']}", {**base, name: on}))
    for baseline in method.get("baselines", []):
        rows.append((baseline["variant"], baseline["name"], {**base, **baseline["config"]}))
    return rows


def main(argv: list[str]) -> dict:
    parser = HfArgumentParser(AblationArguments)
    args, train_argv = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if args.model not in MODELS:
        raise SystemExit(f"--model must be one of {sorted(MODELS)}, got {args.model!r}")
    if not args.seeds:
        raise SystemExit("--seeds needs at least one seed")
    output_dir = Path(args.output_dir or f"runs/ablation-{args.model}-{Path(args.dataset).name}")
    preset = args.preset or preset_for(load_dataset_by_name(args.dataset, args.data_dir)["train"])
    config_class = MODELS[args.model][0]
    try:
        base = {
            **preset_overrides(preset, args.model, config_class),
            **config_overrides(args.model_config),
        }
    except ValueError as e:
        raise SystemExit(f"--preset: {e}") from None
    if args.data_dir is not None:
        train_argv = [*train_argv, "--data_dir", args.data_dir]
    rows = []
    for variant, name, overrides in variants(args.model, base):
        runs = []
        for seed in args.seeds:
            run_dir = output_dir / f"{variant}-seed{seed}"
            if not (run_dir / RESULTS_FILE).is_file():
                train(
                    [
                        *("--model", args.model, "--dataset", args.dataset),
                        *("--seed", str(seed), "--output_dir", str(run_dir), "--preset", preset),
                        *("--model_config", json.dumps(overrides), "--resume"),
                        *train_argv,
                    ]
                )
            runs.append(load_results(run_dir))
        rows.append(
            {
                "variant": variant,
                "name": name,
                "model_config": overrides,
                "runs": [f"{variant}-seed{seed}" for seed in args.seeds],
                "test": summarize(runs),
                "validation": summarize(runs, "validation"),
            }
        )
    ablation = {
        "model": args.model,
        "dataset": args.dataset,
        "preset": preset,
        "seeds": args.seeds,
        "rows": rows,
    }
    write_results(output_dir / ABLATION_FILE, ablation)
    for seed in args.seeds:
        shutil.copy2(output_dir / ABLATION_FILE, output_dir / f"full-seed{seed}" / ABLATION_FILE)

    keys = headline_metrics({k: v["mean"] for k, v in rows[0]["test"].items()})
    print(f"\n{args.model} on {args.dataset}, test split, seeds {args.seeds} (mean ± std)\n")
    print("| variant | " + " | ".join(metric_label(k) for k in keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for row in rows:
        print(f"| {row['name']} | " + " | ".join(mean_std(row["test"], k) for k in keys) + " |")
    return ablation


if __name__ == "__main__":
    main(sys.argv[1:])
