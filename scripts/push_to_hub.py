"""Publish a training run (or a dataset) on the Hugging Face Hub.

    python scripts/push_to_hub.py --run_dir runs/dscmr-wikipedia-seed0            # <user>/<name>
    python scripts/push_to_hub.py --run_dir runs/dscmr-wikipedia-seed0 --dry_run upload/
    python scripts/push_to_hub.py --run_dir runs/my-run --repo_id my-org/my-model --private
    python scripts/push_to_hub.py --run_dir runs/ablation-daml-wikipedia/full-seed0 \
        --ablation runs/ablation-daml-fashion_features/ablation.json  # both ablations on the card
    python scripts/push_to_hub.py --dataset wikipedia --repo_id wikipedia-xmodal

The default model repo name is `<model_type>-<dataset>-<variant>-seed<seed>`, the variant hashing
the model config, the data and the training arguments, so one name never means two recipes; a
repo that already holds other weights is refused. `--dry_run DIR` writes exactly the folder that
would be uploaded (weights, config, processor, code, results.json, pr_curve.png, ablation files,
README.md card) and uploads nothing. The token comes from `HF_TOKEN` or `hf auth login`.
"""

import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_xmodal.hub import build_upload_folder, default_repo_name, push_dataset, push_run
from hf_xmodal.training import load_results


@dataclass
class PushArguments:
    run_dir: str | None = field(default=None, metadata={"help": "a scripts/train.py output_dir"})
    dataset: str | None = field(
        default=None, metadata={"help": "push this dataset (a load_dataset_by_name name or path)"}
    )
    data_dir: str | None = field(default=None, metadata={"help": "folder of flickr8k / fashion"})
    repo_id: str | None = field(
        default=None,
        metadata={"help": "namespace/name or name (your user's); default for runs: see above"},
    )
    dataset_repo_id: str | None = field(
        default=None, metadata={"help": "the training data's dataset repo, linked from the card"}
    )
    ablation: list[str] = field(
        default_factory=list,
        metadata={"help": "more ablation.json files of the method (e.g. on another dataset)"},
    )
    private: bool = False
    dry_run: str | None = field(
        default=None, metadata={"help": "write the upload folder here instead of pushing"}
    )


def main(argv: list[str]) -> str:
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(argv)
    if (args.run_dir is None) == (args.dataset is None):
        raise SystemExit("give exactly one of --run_dir and --dataset")
    if args.dataset is not None:
        if args.repo_id is None:
            raise SystemExit("--dataset needs --repo_id")
        if args.dry_run:
            raise SystemExit("--dry_run applies to runs; a dataset is pushed as it loads")
        repo_id = push_dataset(args.dataset, args.repo_id, args.data_dir, private=args.private)
        print(f"pushed dataset {args.dataset} to {repo_id}")
        return repo_id
    if args.dry_run:
        repo_id = args.repo_id or f"<user>/{default_repo_name(load_results(args.run_dir))}"
        folder = build_upload_folder(
            args.run_dir, args.dry_run, repo_id, args.dataset_repo_id, args.ablation
        )
        for path in sorted(folder.iterdir()):
            print(f"{path.stat().st_size:>10}  {path.name}")
        print(f"would upload {folder} to {repo_id}")
        return repo_id
    repo_id = push_run(
        args.run_dir, args.repo_id, args.private, args.dataset_repo_id, args.ablation
    )
    print(f"pushed {args.run_dir} to {repo_id}")
    return repo_id


if __name__ == "__main__":
    main(sys.argv[1:])
