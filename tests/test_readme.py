"""The README's Python examples run as written, beside the runs they load."""

import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from PIL import Image
from test_train import load_script

README = Path(__file__).parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PHOTOS = {"cat.jpg": "chelsea", "coffee.jpg": "coffee", "rocket.jpg": "rocket"}


def tower_sized_features(path: Path) -> None:
    """A small labelled DatasetDict with the towers' feature sizes (1280 / 384)."""
    rng = np.random.default_rng(0)
    features = Features(
        {
            "image_features": List(Value("float32"), length=1280),
            "text_features": List(Value("float32"), length=384),
            "label": ClassLabel(names=["a", "b", "c"]),
        }
    )
    splits = {}
    for split, n in (("train", 60), ("validation", 30), ("test", 30)):
        columns = {
            "image_features": rng.random((n, 1280), dtype=np.float32),
            "text_features": rng.random((n, 384), dtype=np.float32),
            "label": rng.integers(0, 3, n),
        }
        splits[split] = Dataset.from_dict(columns, features=features)
    DatasetDict(splits).save_to_disk(str(path))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runs and photos the examples name: Wikipedia features, and tower features."""
    root = tmp_path_factory.mktemp("readme")
    train = load_script().main
    train(["--epochs", "2", "--output_dir", str(root / "runs/dscmr-wikipedia-seed0")])
    tower_sized_features(root / "tower_features")
    train(
        [
            *("--dataset", str(root / "tower_features"), "--epochs", "1", "--batch_size", "20"),
            *("--output_dir", str(root / "runs/dscmr-flickr8k_features-seed0")),
        ]
    )
    for name, sample in PHOTOS.items():
        Image.fromarray(getattr(skimage.data, sample)()).save(root / name)
    return root


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    exec(compile(code, str(README), "exec"), {})
