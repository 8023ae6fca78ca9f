"""Throughput of the pretrained towers next to plain timm / transformers on the same inputs.

    python scripts/benchmark_towers.py                          # Flickr8k test photos + captions
    python scripts/benchmark_towers.py --images 128 --texts 1024 --batch_size 64

"hf_xmodal" is the package's path (processor + frozen tower, channels_last, batch norms folded
into the convolutions); "plain" is the textbook path: timm's model in its default memory format
with torchvision transforms, and transformers' AutoModel + AutoTokenizer with mean pooling.
Preprocessing is included in both.
"""

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from hf_xmodal.data.extraction import Towers
from hf_xmodal.models.towers import (
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    RESIZE_SIZE,
    TEXT_MAX_LENGTH,
    build_image_tower,
    minilm_folder,
)


def throughput(fn, items: list, batch_size: int) -> float:
    """Items per second of `fn` over `items` in batches, after one warm-up batch."""
    fn(items[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        fn(items[i : i + batch_size])
    return len(items) / (time.perf_counter() - start)


def plain_image_fn():
    from torchvision import transforms

    model = build_image_tower(pretrained=True).to(memory_format=torch.contiguous_format).eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(RESIZE_SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(IMAGE_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(IMAGE_MEAN, IMAGE_STD),
        ]
    )

    @torch.inference_mode()
    def embed(images):
        return model(torch.stack([preprocess(image.convert("RGB")) for image in images]))

    return embed


def plain_text_fn():
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    model = AutoModel.from_pretrained(minilm_folder()).eval()

    @torch.inference_mode()
    def embed(texts):
        batch = tokenizer(
            texts, padding=True, truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt"
        )
        states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)

    return embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", type=Path, default=Path("../shared/data/flickr8k"))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--texts", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = sorted(p.name for p in (args.data_dir / "images").glob("*.jpg"))[: args.images]
    if not names:
        raise SystemExit(f"no .jpg images in {args.data_dir / 'images'}")
    images = [Image.open(args.data_dir / "images" / name).convert("RGB") for name in names]
    with open(args.data_dir / "captions.txt", newline="") as f:
        texts = [caption for _, caption in list(csv.reader(f))[1 : args.texts + 1]]

    towers = Towers()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for what, items, ours, plain in (
        ("images", images, towers.embed_images, plain_image_fn()),
        ("sentences", texts, towers.embed_texts, plain_text_fn()),
    ):
        ours_rate = throughput(ours, items, args.batch_size)
        plain_rate = throughput(plain, items, args.batch_size)
        print(
            f"{what:>9}: hf_xmodal {ours_rate:7.1f}/s   plain {plain_rate:7.1f}/s   "
            f"({len(items)} items, ×{ours_rate / plain_rate:.2f})"
        )


if __name__ == "__main__":
    main()
