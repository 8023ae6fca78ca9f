"""MAP of every query modality → gallery modality of a trained model with more than two.

    python scripts/evaluate_modalities.py runs/mhtn-fashion_tags_transfer_target-seed0 \
        --dataset fashion_tags_transfer_target

`scripts/train.py` selects and evaluates on image ↔ text; this adds every other direction of a
model such as MHTN with a third modality, on the `--split` (default test) of the dataset it was
trained on, and writes `<run_dir>/modalities_<split>.json`.
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoModel

import hf_xmodal  # noqa: F401  (registers the model classes)
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.files import atomic_write
from hf_xmodal.training import evaluate_modalities


def main(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a scripts/train.py output folder (holding model/)")
    parser.add_argument("--dataset", required=True, help="the dataset the model was trained on")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "model" / "config.json").is_file():
        raise SystemExit(f"{run_dir} holds no trained model (model/config.json)")
    model = AutoModel.from_pretrained(run_dir / "model")
    if not hasattr(model.config, "modality_dims"):
        raise SystemExit(f"a {model.config.model_type} model has image and text only")
    data = load_dataset_by_name(args.dataset, args.data_dir)
    if args.split not in data:
        raise SystemExit(f"the dataset has no split {args.split!r}; it has {list(data)}")
    results = evaluate_modalities(model, data[args.split])
    atomic_write(run_dir / f"modalities_{args.split}.json", json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:>24}  {value:.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
