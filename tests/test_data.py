"""Tests of hf_xmodal.data: bundled Wikipedia, Flickr8k/Fashion loaders, user feature files."""

from __future__ import annotations

import html
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from datasets import ClassLabel, Dataset, DatasetDict, Image, List, Value
from PIL import Image as PILImage

from hf_xmodal.data import (
    DATASET_NAMES,
    WIKIPEDIA_CATEGORIES,
    WIKIPEDIA_FEATURES,
    fashion_split_ids,
    load_dataset_by_name,
    load_fashion,
    load_flickr8k,
    load_paired_features,
    load_wikipedia,
    split_off_validation,
    validate_feature_dataset,
)
from hf_xmodal.data.fashion import FASHION_SPLIT_DIR, FASHION_STYLES_COLUMNS, _read_styles
from hf_xmodal.data.wikipedia import WIKIPEDIA_DIR

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def needs_real_data(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (REAL_DATA / name).is_dir(),
        reason=f"real data folder ../shared/data/{name} (next to the repository) is absent",
    )


def as_matrix(dataset: Dataset, column: str) -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")[column])


# --- Wikipedia (bundled) --------------------------------------------------------------------


def test_wikipedia_splits_and_columns():
    wiki = load_wikipedia()
    assert {split: len(data) for split, data in wiki.items()} == {
        "train": 2173,
        "validation": 231,
        "test": 462,
    }
    for data in wiki.values():
        assert data.features == WIKIPEDIA_FEATURES
        assert all(text.strip() == text and text for text in data["text"])
        assert set(data["label"]) == set(range(10))
    assert wiki["train"].features["label"].names == list(WIKIPEDIA_CATEGORIES)
    assert validate_feature_dataset(wiki, image_dim=128, text_dim=10) == (128, 10)
    text_ids = [i for data in wiki.values() for i in data["text_id"]]
    assert len(set(text_ids)) == 2866


def test_wikipedia_full_test_protocol():
    standard = load_wikipedia()
    full = load_wikipedia(split_protocol="full_test")
    assert list(full) == ["train", "test"]
    assert len(full["train"]) == 2173
    assert list(full["test"]["text_id"]) == list(standard["validation"]["text_id"]) + list(
        standard["test"]["text_id"]
    )
    with pytest.raises(ValueError, match="unknown split_protocol 'paper'"):
        load_wikipedia(split_protocol="paper")


def test_wikipedia_bundle_is_small():
    size = sum(path.stat().st_size for path in WIKIPEDIA_DIR.iterdir())
    assert size < 5e6


def _read_list(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@needs_real_data("wikipedia")
def test_wikipedia_bundle_matches_source():
    source = REAL_DATA / "wikipedia"
    mat = scipy.io.loadmat(source / "raw_features.mat")
    rows = {"train": _read_list(source / "trainset_txt_img_cat.list")}
    test_rows = _read_list(source / "testset_txt_img_cat.list")
    rows["validation"], rows["test"] = test_rows[:231], test_rows[231:]
    image = {"train": mat["I_tr"], "validation": mat["I_te"][:231], "test": mat["I_te"][231:]}
    text = {"train": mat["T_tr"], "validation": mat["T_te"][:231], "test": mat["T_te"][231:]}
    texts = {}
    with tarfile.open(source / "texts.tar.gz") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".xml"):
                document = tar.extractfile(member).read().decode("utf-8")
                body = re.search(r"<text>(.*?)</text>", document, re.DOTALL).group(1)
                texts[Path(member.name).stem] = html.unescape(body).strip()

    wiki = load_wikipedia()
    for split, data in wiki.items():
        np.testing.assert_array_equal(
            as_matrix(data, "image_features"), image[split].astype(np.float32)
        )
        np.testing.assert_array_equal(
            as_matrix(data, "text_features"), text[split].astype(np.float32)
        )
        assert list(data["text_id"]) == [row[0] for row in rows[split]]
        assert list(data["image_id"]) == [row[1] for row in rows[split]]
        assert list(data["label"]) == [int(row[2]) - 1 for row in rows[split]]
        assert list(data["text"]) == [texts[row[0]] for row in rows[split]]


# --- Generic paired features ----------------------------------------------------------------

N_TRAIN, N_TEST, IMAGE_DIM, TEXT_DIM, N_CLASSES = 12, 9, 6, 4, 3


def make_arrays(
    layout: str = "I", labels: str | None = "index", validation: str | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random arrays in layout "I" (I_tr, ...) or "train" (train_img, ...)."""
    rng = np.random.default_rng(seed)
    sizes = {"train": N_TRAIN, "test": N_TEST}
    if validation:
        sizes[validation] = 5
    arrays = {}
    for split, n in sizes.items():
        names = (
            {"train": ("I_tr", "T_tr", "L_tr"), "test": ("I_te", "T_te", "L_te")}[split]
            if layout == "I"
            else (f"{split}_img", f"{split}_txt", f"{split}_lab")
        )
        arrays[names[0]] = rng.normal(size=(n, IMAGE_DIM))
        arrays[names[1]] = rng.normal(size=(n, TEXT_DIM))
        classes = np.arange(n) % N_CLASSES
        if labels == "index":
            arrays[names[2]] = classes + 1  # MATLAB-style 1-based classes
        elif labels == "onehot":
            arrays[names[2]] = np.eye(N_CLASSES)[classes]
        elif labels == "multihot":
            multi = np.eye(N_CLASSES)[classes]
            multi[0] = 1
            arrays[names[2]] = multi
    return arrays


def save_npy_folder(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir()
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value)
    return folder


def test_mat_layout_with_index_labels(tmp_path):
    arrays = make_arrays("I", labels="index")
    path = tmp_path / "features.mat"
    scipy.io.savemat(path, arrays)  # stores the 1-D labels as 1 x n row vectors
    data = load_paired_features(path)
    assert list(data) == ["train", "test"]
    assert data["train"].column_names == ["image_features", "text_features", "label"]
    assert data["train"].features["image_features"] == List(Value("float32"), length=IMAGE_DIM)
    assert data["train"].features["label"] == ClassLabel(names=["1", "2", "3"])
    np.testing.assert_array_equal(
        as_matrix(data["test"], "image_features"), arrays["I_te"].astype(np.float32)
    )
    assert list(data["test"]["label"]) == list(arrays["L_te"] - 1)
    assert validate_feature_dataset(data) == (IMAGE_DIM, TEXT_DIM)


def test_mat_layout_without_labels(tmp_path):
    path = tmp_path / "features.mat"
    scipy.io.savemat(path, make_arrays("I", labels=None))
    data = load_paired_features(path)
    assert data["train"].column_names == ["image_features", "text_features"]
    assert len(data["train"]) == N_TRAIN and len(data["test"]) == N_TEST


@pytest.mark.parametrize("validation", ["val", "valid"])
def test_npy_folder_with_onehot_labels_and_validation(tmp_path, validation):
    arrays = make_arrays("train", labels="onehot", validation=validation)
    data = load_paired_features(save_npy_folder(tmp_path / "features", arrays))
    assert list(data) == ["train", "validation", "test"]
    assert len(data["validation"]) == 5
    assert data["train"].features["label"] == ClassLabel(num_classes=N_CLASSES)
    assert list(data["train"]["label"]) == list(arrays["train_lab"].argmax(axis=1))
    np.testing.assert_array_equal(
        as_matrix(data["validation"], "text_features"),
        arrays[f"{validation}_txt"].astype(np.float32),
    )


def test_npz_with_multihot_labels(tmp_path):
    arrays = make_arrays("train", labels="multihot")
    path = tmp_path / "features.npz"
    np.savez(path, **arrays)
    data = load_paired_features(path)
    assert "label" not in data["train"].column_names
    assert data["train"].features["labels"] == List(Value("float32"), length=N_CLASSES)
    np.testing.assert_array_equal(as_matrix(data["test"], "labels"), arrays["test_lab"])


def test_validation_size_takes_seeded_rows_from_train_or_test(tmp_path):
    arrays = make_arrays("I", labels="index")
    path = tmp_path / "features.mat"
    scipy.io.savemat(path, arrays)
    data = load_paired_features(path, validation_size=4)  # from train by default
    sizes = {split: len(d) for split, d in data.items()}
    assert sizes == {"train": N_TRAIN - 4, "validation": 4, "test": N_TEST}
    train, validation = (
        as_matrix(data["train"], "image_features"),
        as_matrix(data["validation"], "image_features"),
    )
    rows = np.concatenate([train, validation])
    expected = np.sort(arrays["I_tr"].astype(np.float32), axis=0)
    np.testing.assert_array_equal(np.sort(rows, axis=0), expected)
    again = load_paired_features(path, validation_size=4)
    np.testing.assert_array_equal(as_matrix(again["validation"], "image_features"), validation)

    from_test = load_paired_features(path, validation_size=0.25, validation_from="test")
    sizes = {split: len(d) for split, d in from_test.items()}
    assert sizes == {"train": N_TRAIN, "validation": 2, "test": N_TEST - 2}
    with pytest.raises(ValueError, match="comes from one of"):
        load_paired_features(path, validation_size=2, validation_from="validation")
    with pytest.raises(ValueError, match=r"fractional validation size must be in \(0, 1\)"):
        load_paired_features(path, validation_size=1.5)


def test_split_off_validation_keeps_the_captions_of_an_image_together():
    image_index = np.repeat(np.arange(10), 5)  # 10 images, 5 captions each
    train = Dataset.from_dict(
        {"image_features": np.repeat(np.eye(10), 5, axis=0), "image_index": image_index}
    )
    data, info = split_off_validation(DatasetDict(train=train, test=train), 0.3, "train", seed=1)
    assert info == {"from": "train", "size": 0.3, "rows": 15, "seed": 1, "images": 3}
    images = {}
    for split, n_images in (("train", 7), ("validation", 3)):
        part = data[split].with_format("numpy")[:]
        assert sorted(set(part["image_index"])) == list(range(n_images))
        # the same image_index means the same image
        for i in range(n_images):
            rows = part["image_features"][part["image_index"] == i]
            assert len(rows) == 5 and (rows == rows[0]).all()
        images[split] = set(part["image_features"].argmax(1))
    moved, kept = images["validation"], images["train"]
    assert not moved & kept and len(moved | kept) == 10
    with pytest.raises(ValueError, match="already has a validation split"):
        split_off_validation(data, 2)
    with pytest.raises(ValueError, match="between 1 and 9 images"):
        split_off_validation(DatasetDict(train=train), 10)


def _drop(key):
    return lambda arrays: arrays.pop(key)


def _set(key, value):
    return lambda arrays: arrays.__setitem__(key, value(arrays))


BAD_INPUTS = {
    "missing key": (_drop("T_te"), r"missing key\(s\) \['T_te'\].*accepted layouts"),
    "image/text rows": (
        _set("T_tr", lambda a: a["T_tr"][:-1]),
        r"train split: 'I_tr' has 12 rows but 'T_tr' has 11",
    ),
    "label rows": (
        _set("L_te", lambda a: a["L_te"][:-2]),
        r"key 'L_te' has 7 rows but the features of its split have 9",
    ),
    "dims between splits": (
        _set("I_te", lambda a: a["I_te"][:, :3]),
        r"image feature dims differ between splits: \{'I_tr': 6, 'I_te': 3\}",
    ),
    "non-numeric": (
        _set("T_tr", lambda a: a["T_tr"].astype(str)),
        r"key 'T_tr' has non-numeric dtype",
    ),
    "nan": (
        _set("I_tr", lambda a: np.where(np.eye(12, 6) > 0, np.nan, a["I_tr"])),
        r"key 'I_tr' contains 6 NaN and 0 infinite",
    ),
    "inf": (
        _set("T_te", lambda a: np.full_like(a["T_te"], 1e300)),
        r"key 'T_te' contains 0 NaN and 36 infinite",
    ),
    "empty": (_set("I_te", lambda a: np.zeros((0, 6))), r"key 'I_te' is empty"),
    "1-D features": (
        _set("T_te", lambda a: a["T_te"][:, 0]),
        r"key 'T_te' must be a 2-D \(rows x dim\) array",
    ),
    "labels in one split": (_drop("L_te"), r"labels are given for some splits.*'L_te'"),
    "non-integer labels": (
        _set("L_tr", lambda a: a["L_tr"] + 0.5),
        r"key 'L_tr' is a 1-D label vector with non-integer values",
    ),
    "non-binary label matrix": (
        lambda a: a.update(L_tr=np.full((12, 3), 2.0), L_te=np.eye(3)[np.arange(9) % 3]),
        r"key 'L_tr' is a label matrix with values other than 0 and 1",
    ),
    "vector and matrix labels": (
        _set("L_tr", lambda a: np.eye(3)[np.arange(12) % 3]),
        r"are class-index vectors but \['L_tr'\] are label matrices",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_feature_inputs(tmp_path, case):
    change, message = BAD_INPUTS[case]
    arrays = make_arrays("I", labels="index")
    change(arrays)
    with pytest.raises(ValueError, match=message):
        load_paired_features(save_npy_folder(tmp_path / "features", arrays))


def test_bad_feature_paths_and_options(tmp_path):
    with pytest.raises(ValueError, match="feature file or folder not found"):
        load_paired_features(tmp_path / "absent.mat")
    (tmp_path / "features.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported feature file"):
        load_paired_features(tmp_path / "features.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .npy files in folder"):
        load_paired_features(tmp_path / "empty")

    arrays = make_arrays("train", labels=None, validation="val")
    folder = save_npy_folder(tmp_path / "with_val", arrays)
    with pytest.raises(ValueError, match="already has a validation split"):
        load_paired_features(folder, validation_size=2)
    np.save(folder / "valid_img.npy", arrays["val_img"])
    np.save(folder / "valid_txt.npy", arrays["val_txt"])
    with pytest.raises(ValueError, match="give one validation split"):
        load_paired_features(folder)
    (folder / "val_txt.npy").unlink()
    (folder / "valid_img.npy").unlink()
    (folder / "valid_txt.npy").unlink()
    with pytest.raises(ValueError, match="missing key 'val_txt' for the validation split"):
        load_paired_features(folder)

    path = tmp_path / "features.mat"
    scipy.io.savemat(path, make_arrays("I"))
    with pytest.raises(ValueError, match="between 1 and 8 rows of the test split"):
        load_paired_features(path, validation_size=9, validation_from="test")


# --- validate_feature_dataset ---------------------------------------------------------------


def test_validate_feature_dataset_errors():
    good = Dataset.from_dict({"image_features": [[0.0, 1.0]], "text_features": [[1.0]]})
    assert validate_feature_dataset(good, image_dim=2, text_dim=1) == (2, 1)
    with pytest.raises(ValueError, match=r"missing column 'text_features'; present columns: \["):
        validate_feature_dataset(good.remove_columns("text_features"))
    with pytest.raises(ValueError, match="'image_features' has vectors of length 2, expected 3"):
        validate_feature_dataset(good, image_dim=3)
    nan = Dataset.from_dict({"image_features": [[np.nan, 1.0]], "text_features": [[1.0]]})
    with pytest.raises(ValueError, match="'image_features' has 1 NaN or infinite values"):
        validate_feature_dataset(nan)
    ragged = Dataset.from_dict({"image_features": [[0.0], [0.0, 1.0]], "text_features": [[1], [2]]})
    with pytest.raises(ValueError, match="rows of different lengths"):
        validate_feature_dataset(ragged)
    splits = DatasetDict(
        train=good,
        test=Dataset.from_dict({"image_features": [[0.0]], "text_features": [[1.0]]}),
    )
    with pytest.raises(ValueError, match="split 'test': column 'image_features' .* expected 2"):
        validate_feature_dataset(splits)


# --- Registry -------------------------------------------------------------------------------


def test_registry(tmp_path):
    assert set(DATASET_NAMES) == {
        "wikipedia",
        "wikipedia_full_test",
        "wikipedia_minilm",
        "flickr8k",
        "flickr8k_features",
        "fashion",
        "fashion_features",
        "flickr8k_regions",
        "fashion_regions",
        "fashion_tags_features",
        "fashion_transfer_source",
        "fashion_transfer_target",
        "fashion_tags_transfer_target",
    }
    assert len(load_dataset_by_name("wikipedia_full_test")["test"]) == 693
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist': choose one of \['wikipedia'"):
        load_dataset_by_name("mnist")
    with pytest.raises(ValueError, match="bundled with the package"):
        load_dataset_by_name("wikipedia", data_dir="somewhere")
    with pytest.raises(ValueError, match="validation_size only applies to feature files"):
        load_dataset_by_name("wikipedia", validation_size=10)

    path = tmp_path / "features.mat"
    scipy.io.savemat(path, make_arrays("I"))
    assert len(load_dataset_by_name(path, validation_size=3)["validation"]) == 3
    saved = tmp_path / "saved"
    load_paired_features(path).save_to_disk(str(saved))
    assert load_dataset_by_name(str(saved))["test"].num_rows == N_TEST


# --- Flickr8k -------------------------------------------------------------------------------


def make_flickr_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    for name in names:
        PILImage.new("RGB", (8, 8), "red").save(root / "images" / name)
    lines = ["image,caption"] + [f'{n},"{n} caption {k}, five"' for n in names for k in range(5)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("b.jpg\na.jpg\nmissing.png\n")
    (root / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    (root / "Flickr_8k.testImages.txt").write_text("d.jpg\n")
    return root


def test_flickr8k_small_folder(tmp_path):
    data = load_flickr8k(make_flickr_folder(tmp_path / "flickr8k"))
    assert list(data["train"]["image_name"]) == ["b.jpg", "a.jpg"]
    assert data["train"][0]["captions"] == [f"b.jpg caption {k}, five" for k in range(5)]
    assert data["test"][0]["image"].size == (8, 8)


def test_flickr8k_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Flickr8k data folder not found"):
        load_flickr8k(tmp_path / "nowhere")
    folder = make_flickr_folder(tmp_path / "flickr8k")
    (folder / "Flickr_8k.devImages.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Flickr_8k.devImages.txt"):
        load_flickr8k(folder)
    (folder / "captions.txt").write_text("image,caption\na.jpg,only a\n")
    with pytest.raises(ValueError, match="images without captions .*b.jpg"):
        load_flickr8k(folder)


@needs_real_data("flickr8k")
def test_flickr8k_real():
    data = load_flickr8k(REAL_DATA / "flickr8k")
    assert {split: len(d) for split, d in data.items()} == {
        "train": 6000,
        "validation": 1000,
        "test": 1000,
    }
    names = [set(d["image_name"]) for d in data.values()]
    assert sum(map(len, names)) == 8000 and len(set.union(*names)) == 8000
    for split_data in data.values():
        assert all(len(captions) == 5 for captions in split_data["captions"])
        raw = split_data.cast_column("image", Image(decode=False))[0]["image"]
        assert raw["bytes"] is None and raw["path"].endswith(split_data[0]["image_name"])
        for row in split_data.select(range(2)):
            assert row["image"].size == (224, 224) and row["image"].mode == "RGB"
    first = data["train"][0]
    assert first["image_name"] == "2513260012_03d33305cf.jpg"


# --- Fashion --------------------------------------------------------------------------------


def test_fashion_packaged_split():
    ids = fashion_split_ids()
    assert {split: len(i) for split, i in ids.items()} == {
        "train": 6459,
        "validation": 916,
        "test": 1821,
    }
    assert len(set().union(*ids.values())) == 9196
    assert (FASHION_SPLIT_DIR / "README.md").is_file()


def test_fashion_styles_parsing(tmp_path):
    header = ",".join(FASHION_STYLES_COLUMNS)
    path = tmp_path / "styles.csv"
    path.write_text(f'{header}\n1,Men,Apparel,Topwear,Shirts,Blue,Fall,Casual,"A, B Shirt",Blue\n')
    assert _read_styles(path)[1]["productDisplayName"] == "A, B Shirt"
    path.write_text(f"{header}\n1,Men,Apparel,Topwear,Shirts,Blue,Fall,Casual,A, B Shirt,Blue\n")
    with pytest.raises(ValueError, match="line 2: expected 10 fields, got 11.*unquoted comma"):
        _read_styles(path)


def test_fashion_missing_rows_and_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="Fashion data folder not found"):
        load_fashion(tmp_path / "nowhere")
    folder = tmp_path / "fashion"
    (folder / "images").mkdir(parents=True)
    ids = sorted(i for split_ids in fashion_split_ids().values() for i in split_ids)
    rows = [f"{i},Men,Apparel,Topwear,Shirts,Blue,Fall,Casual,Shirt {i},Blue" for i in ids]
    (folder / "styles.csv").write_text("\n".join([",".join(FASHION_STYLES_COLUMNS), *rows[1:]]))
    with pytest.raises(ValueError, match=f"ids with no row in .*styles.csv: {ids[0]}"):
        load_fashion(folder)
    (folder / "styles.csv").write_text("\n".join([",".join(FASHION_STYLES_COLUMNS), *rows]))
    with pytest.raises(FileNotFoundError, match=r"ids with no image in .*\(6459 in total\)"):
        load_fashion(folder)


@needs_real_data("fashion")
def test_fashion_real():
    data = load_fashion(REAL_DATA / "fashion")
    assert {split: len(d) for split, d in data.items()} == {
        "train": 6459,
        "validation": 916,
        "test": 1821,
    }
    features = data["train"].features
    assert features["label"].num_classes == 43
    assert features["label"].names == sorted(features["label"].names)
    assert features["master_category"].names == ["Accessories", "Apparel", "Footwear"]
    assert features["sub_category"].num_classes == 18
    for split, ids in fashion_split_ids().items():
        assert list(data[split]["id"]) == ids
        shared_list = (REAL_DATA / "fashion" / "splits" / f"{split}.txt").read_text()
        assert ids == [int(i) for i in shared_list.split()]
        assert all(data[split]["text"])
        for row in data[split].select(range(2)):
            assert row["image"].size == (224, 224)
    split, ids = next((s, ids) for s, ids in fashion_split_ids().items() if 15970 in ids)
    shirt = data[split][ids.index(15970)]
    assert shirt["text"] == "Turtle Check Men Navy Blue Shirt"
    assert features["label"].int2str(shirt["label"]) == "Shirts"


# --- Slow: every image, saved copies --------------------------------------------------------


@pytest.mark.slow
@needs_real_data("flickr8k")
@needs_real_data("fashion")
def test_all_test_images_decode():
    for data in (load_flickr8k(REAL_DATA / "flickr8k"), load_fashion(REAL_DATA / "fashion")):
        for image in data["test"]["image"]:
            assert image.size == (224, 224) and image.mode == "RGB"


@pytest.mark.slow
@needs_real_data("flickr8k")
def test_saved_flickr8k_round_trip(tmp_path):
    data = load_flickr8k(REAL_DATA / "flickr8k")
    data.save_to_disk(str(tmp_path / "saved"))
    saved = load_flickr8k(tmp_path / "saved")
    assert list(saved["test"]["image_name"]) == list(data["test"]["image_name"])
    raw = saved["test"].cast_column("image", Image(decode=False))[0]["image"]
    assert raw["bytes"] is not None
    assert saved["test"][0]["image"].tobytes() == data["test"][0]["image"].tobytes()
