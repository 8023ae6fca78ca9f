"""Extract the image tower's region maps and the texts' words, and save the dataset to disk.

    python scripts/prepare_regions.py --dataset fashion --output_dir runs/fashion_regions
    python scripts/prepare_regions.py --dataset fashion --limit train=1000 validation=300 \
        test=600 --output_dir runs/fashion_regions_small      # the first n images of each split
    python scripts/prepare_regions.py --dataset fashion --only train   # fill the cache, one split

Region maps are cached under the tower-feature cache (`--only` fills it for some splits, e.g. in
two processes at once); the saved folder then loads with `--dataset <output_dir>` in
`scripts/train.py`. Prints the size of the region maps.
"""

import sys
import time
from dataclasses import dataclass, field

from datasets import DatasetDict
from transformers import HfArgumentParser

from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.data.regions import REGION_SHAPE, extract_region_features, load_region_features


@dataclass
class RegionArguments:
    dataset: str = field(default="fashion", metadata={"help": "fashion or flickr8k"})
    data_dir: str | None = None
    output_dir: str | None = None
    limit: list[str] = field(default_factory=list, metadata={"help": "split=n, first n images"})
    only: list[str] = field(default_factory=list, metadata={"help": "only cache these splits"})
    batch_size: int = 32


def main(argv: list[str]) -> None:
    (args,) = HfArgumentParser(RegionArguments).parse_args_into_dataclasses(argv)
    try:
        limits = {k: int(v) for k, v in (item.split("=") for item in args.limit)}
    except ValueError:
        raise SystemExit(f"--limit takes split=n items, got {args.limit}") from None
    start = time.perf_counter()
    if args.only:
        images = load_dataset_by_name(args.dataset, args.data_dir)
        images = DatasetDict(
            {s: images[s].select(range(limits[s])) if s in limits else images[s] for s in args.only}
        )
        extract_region_features(images, batch_size=args.batch_size)
        print(f"cached region maps of {args.only} in {time.perf_counter() - start:.0f} s")
        return
    if args.output_dir is None:
        raise SystemExit("--output_dir is needed (unless --only fills the cache)")
    data = load_region_features(args.dataset, args.data_dir, args.batch_size, limits)
    data.save_to_disk(args.output_dir)
    images = sum(
        len(set(split["image_index"])) if "image_index" in split.column_names else len(split)
        for split in data.values()
    )
    size = images * REGION_SHAPE[0] * REGION_SHAPE[1] * 2
    print(data)
    print(
        f"{images} images × {REGION_SHAPE} float16 region maps = {size / 1e6:.0f} MB; "
        f"saved to {args.output_dir} in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
