"""MAP of every query modality → gallery modality of a trained model, on a split of its dataset.

    python scripts/evaluate_modalities.py runs/mhtn-fashion_tags_transfer_target-seed0 \
        --dataset fashion_tags_transfer_target --split validation

`scripts/train.py` already reports every direction on the test split (`results.json`); this scores
a saved model on any split of the data it was trained on, the features passed through its saved
processor as in training, and writes `<run_dir>/modalities_<split>.json`.
"""

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoModel, AutoProcessor

import hf_xmodal  # noqa: F401  (registers the model classes)
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.files import atomic_write
from hf_xmodal.training import embed_split, score_embeddings
from hf_xmodal.training.trainer import processed


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
    processor = AutoProcessor.from_pretrained(run_dir / "model")
    data = load_dataset_by_name(args.dataset, args.data_dir)
    if args.split not in data:
        raise SystemExit(f"the dataset has no split {args.split!r}; it has {list(data)}")
    split = processed(data[args.split], processor)
    results = score_embeddings(model, embed_split(model, split))
    results = {k: v for k, v in results.items() if k.startswith("map_")}
    atomic_write(run_dir / f"modalities_{args.split}.json", json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:>24}  {value:.4f}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
