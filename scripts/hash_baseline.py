"""Hash a trained float model: sign() of its embeddings after a random rotation, ranked by Hamming.

    python scripts/hash_baseline.py --run_dir runs/dscmr-fashion_regions-bits32
    python scripts/hash_baseline.py --run_dir RUN --seeds 0 1 2

The run is a `scripts/train.py` run of a cosine model (e.g. the DSCMR-style model with `embed_dim`
equal to the bits, so that the codes have as many bits); its features go through the run's saved
processor, as in training. The rotation is random per seed, the mean
is that of the training embeddings; no choice is made on test. Writes `<run_dir>/sign_rotation.json`
with the test metrics of the codes per seed beside the float model's own test metrics.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor, HfArgumentParser

from hf_xmodal.baselines import SignOfRotation
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.evaluation import evaluate_caption_retrieval, evaluate_retrieval
from hf_xmodal.training import headline, load_results, unique_images, write_results


@dataclass
class HashArguments:
    run_dir: str = field(metadata={"help": "a scripts/train.py run of a cosine model"})
    seeds: list[int] = field(default_factory=lambda: [0])
    data_dir: str | None = None


def embed(model, processor, split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image and text embeddings of a split, from its features standardised by the run's saved
    processor (as in training), and its labels (or image indices)."""
    label = next(c for c in ("labels", "label", "image_index") if c in split.column_names)
    data = split.with_format("torch", columns=["image_features", "text_features", label])[:]
    images, texts = (
        model.encode(
            data[f"{modality}_features"],
            modality,
            batch_size=1024,
            show_progress_bar=False,
            processor=processor,
        )
        for modality in ("image", "text")
    )
    return images.numpy(), texts.numpy(), data[label].numpy()


def score(images, texts, labels, captions: bool) -> dict[str, float]:
    if not captions:
        return evaluate_retrieval(images, texts, labels, labels, metric="hamming")
    embeds = {"image_embeds": torch.as_tensor(images), "labels": torch.as_tensor(labels)}
    unique, text_image_index = unique_images(embeds)
    return evaluate_caption_retrieval(unique, texts, text_image_index, metric="hamming")


def main(argv: list[str]) -> dict:
    (args,) = HfArgumentParser(HashArguments).parse_args_into_dataclasses(argv)
    run_dir = Path(args.run_dir)
    run = load_results(run_dir)
    if run["config"]["retrieval_metric"] != "cosine":
        raise SystemExit(f"{run_dir} is a {run['config']['retrieval_metric']} model, not cosine")
    model = AutoModel.from_pretrained(run_dir / "model").eval()
    processor = AutoProcessor.from_pretrained(run_dir / "model")
    data = load_dataset_by_name(run["dataset"], args.data_dir)
    captions = "image_index" in data["train"].column_names
    train_images, train_texts, _ = embed(model, processor, data["train"])
    test = embed(model, processor, data["test"])
    per_seed = {}
    for seed in args.seeds:
        hasher = SignOfRotation(seed).fit(np.concatenate([train_images, train_texts]))
        codes = hasher.transform(test[0]), hasher.transform(test[1])
        per_seed[seed] = score(*codes, test[2], captions)
        print(f"sign of rotation, seed {seed}: {headline(per_seed[seed])}")
    print(f"float model ({run['method']}, cosine): {headline(run['test'])}")
    result = {
        "method": f"sign-rotation({run['method']})",
        "run": str(run_dir),
        "bits": int(train_images.shape[1]),
        "dataset": run["dataset"],
        "seeds": args.seeds,
        "test": per_seed,
        "float_test": run["test"],
    }
    write_results(run_dir / "sign_rotation.json", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
