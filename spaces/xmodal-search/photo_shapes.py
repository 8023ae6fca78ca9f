"""How photos with a real camera shape fare against the gallery's squashed 224×224 copies.

Flickr8k's photos here were resized to 224×224 without keeping their aspect ratio, and the
gallery (and the default model's training) uses those copies; a photo a person uploads keeps its
shape. The originals are not here, so each squashed test photo is stretched back to a common
camera shape (500×375 landscape or 375×500 portrait) as a stand-in, and queries the gallery's
captions (image → texts). Printed: Recall@1/5/10 of the photo's own captions for

- the squashed copy itself (what the gallery holds),
- the stretched photo as the image processor takes it (short side to 256, centre crop 224),
- the stretched photo squashed back to the gallery's size first (what the Space does).

    python spaces/xmodal-search/photo_shapes.py                 # the default model, 1,000 photos
    python spaces/xmodal-search/photo_shapes.py --limit 200 -- --model runs/my-run
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))
import app  # noqa: E402
from engine import fit_to_gallery  # noqa: E402

from hf_xmodal.evaluation import evaluate_caption_retrieval  # noqa: E402

SHAPES = {"landscape 4:3": (500, 375), "portrait 3:4": (375, 500)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N gallery photos only")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("app_args", nargs="*", help="the app's own arguments, after --")
    args = parser.parse_args(argv)
    engine = app.create_engine(app.parse_args(args.app_args))
    engine.prepare()
    if engine.failure:
        raise SystemExit(engine.failure)
    index = engine.index(engine.default_checkpoint, engine.gallery)
    gallery, checkpoint = index.gallery, index.checkpoint
    rows = list(range(len(gallery.photos)))[: args.limit]
    keep = torch.as_tensor([photo in set(rows) for photo in gallery.text_photo])
    texts = checkpoint.embed_features(gallery.text_features[keep], "text", "texts")
    text_photo = torch.as_tensor(gallery.text_photo)[keep]
    metric = checkpoint.model.similarity if checkpoint.metric == "learned" else checkpoint.metric

    variants = {"squashed copy (as in the gallery)": lambda p: p}
    for name, size in SHAPES.items():
        variants[f"{name}, centre-cropped"] = lambda p, size=size: p.resize(size, Image.BICUBIC)
        variants[f"{name}, squashed to the gallery's size"] = lambda p, size=size: fit_to_gallery(
            p.resize(size, Image.BICUBIC), gallery.photo_size
        )
    results = {}
    for name, transform in variants.items():
        started = time.perf_counter()
        parts = []
        for start in tqdm(range(0, len(rows), args.batch_size), desc=name, unit="batch"):
            photos = []
            for row in rows[start : start + args.batch_size]:
                with Image.open(gallery.photos[row]) as image:
                    photos.append(transform(image.convert("RGB")))
            parts.append(checkpoint.embed_photos(photos))
        images = torch.cat(parts)
        recall = evaluate_caption_retrieval(images, texts, text_photo, metric=metric)
        results[name] = {k: recall[f"r@{k}_i2t"] for k in (1, 5, 10)}
        results[name]["seconds"] = time.perf_counter() - started
    print(f"\n{gallery.summary}, {len(rows)} photos as queries; model {checkpoint.name}")
    print(f"gallery photo size: {gallery.photo_size}")
    print(f"{'query photo':<52} R@1    R@5    R@10")
    for name, r in results.items():
        print(f"{name:<52} {100 * r[1]:5.1f}  {100 * r[5]:5.1f}  {100 * r[10]:5.1f}")
    return results


if __name__ == "__main__":
    main()
