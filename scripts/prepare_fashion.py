"""Save the Fashion subset as a Hugging Face DatasetDict with the images embedded.

python scripts/prepare_fashion.py --data_dir ../shared/data/fashion --output_dir fashion_hf
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hf_xmodal.data import load_fashion


def folder_size_mb(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path("../shared/data/fashion"))
    parser.add_argument("--output_dir", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    dataset = load_fashion(args.data_dir)
    for split, data in dataset.items():
        print(f"{split}: {len(data)} products, {data.features['label'].num_classes} article types")
    dataset.save_to_disk(str(args.output_dir))
    print(
        f"saved {folder_size_mb(args.output_dir):.1f} MB to {args.output_dir} "
        f"in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
