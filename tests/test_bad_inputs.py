"""Bad input anywhere a user can give it fails with an error naming the problem."""

import inspect
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from datasets import Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from transformers import AutoConfig, AutoModel

from hf_xmodal.data.extraction import extract_features
from hf_xmodal.data.features import load_paired_features
from hf_xmodal.evaluation import (
    RetrievalIndex,
    evaluate_retrieval,
    mean_average_precision,
    pairwise_scores,
)
from hf_xmodal.models import (
    MODELS,
    DAMLConfig,
    DSCMRConfig,
    DSCMRModel,
    UNCSMConfig,
    XmodalProcessor,
    XmodalTowerProcessor,
)

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: DSCMRConfig(embed_dimm=7), r"no field 'embed_dimm' \(did you mean 'embed_dim'"),
        (lambda: DAMLConfig(marginn=0.5), r"'marginn' \(did you mean 'margin'\?\)"),
        (lambda: UNCSMConfig(hiden_dim=8), r"'hiden_dim' \(did you mean 'hidden_dim'\?\)"),
        (lambda: AutoConfig.for_model("daml", bogus=3), r"DAMLConfig has no field 'bogus'; its"),
        (lambda: DSCMRConfig(a=1, b=2), r"no fields 'a', 'b'"),
        (lambda: DSCMRConfig(max_length=20), r"no field 'max_length'"),
        (lambda: DSCMRConfig(num_labels=0), r"num_labels must be positive, got 0"),
        (lambda: DSCMRConfig(id2label={}), r"num_labels must be positive, got 0"),
        (lambda: DSCMRConfig(embed_dim=0), r"embed_dim must be positive"),
        (lambda: DSCMRConfig(embed_dim="8"), r"embed_dim"),
        (lambda: DSCMRConfig(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (lambda: DSCMRConfig(input_mode="pixels"), r"input_mode must be one of"),
        (lambda: DAMLConfig(negative_mining="soft"), r"negative_mining must be one of"),
        (lambda: DAMLConfig(margin=5), r"margin must be in \(0, 4\]"),
        (lambda: UNCSMConfig(rerank_top_k=-1), r"rerank_top_k must be >= 0"),
        (lambda: DSCMRConfig.from_dict({"model_type": "daml"}), r"for model_type 'dscmr'"),
    ],
)
def test_bad_config(make, message):
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        make()


@pytest.mark.parametrize("name", ["dscmr", "daml", "uncsm", "dscmr_raw"])
def test_saved_configs_still_load(tmp_path, name):
    """config.json files as saved by earlier versions (with the keys transformers adds) load."""
    shutil.copy(FIXTURES / "saved_configs" / f"{name}.json", tmp_path / "config.json")
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MODELS[name.split("_")[0]][0])
    assert config.num_labels == (3 if name == "dscmr_raw" else 10)
    assert config.id2label[0] == ("LABEL_0" if name == "dscmr_raw" else "cat0")
    config.save_pretrained(tmp_path / "again")
    assert AutoConfig.from_pretrained(tmp_path / "again").to_diff_dict() == config.to_diff_dict()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_config_round_trips(tmp_path, name):
    """Each registered model's config, saved with its model's files, loads back unchanged."""
    config_class, model_class = MODELS[name]
    model = model_class(config_class(num_labels=3, image_feature_dim=6, text_feature_dim=5))
    model.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.to_diff_dict() == model.config.to_diff_dict()


# ---------------------------------------------------------------- model inputs


def small_model(name):
    """A tiny model of each registered type on 6-d image and 5-d text features, 3 classes."""
    config_class, model_class = MODELS[name]
    torch.manual_seed(0)
    # CMSL on global features alone: these batches have no region maps or words.
    extra = {"local_saliency_weight": 0} if name == "cmsl" else {}
    config = config_class(image_feature_dim=6, text_feature_dim=5, num_labels=3, **extra)
    return model_class(config).eval()


def batch(n=4):
    g = torch.Generator().manual_seed(0)
    return {
        "image_features": torch.randn(n, 6, generator=g),
        "text_features": torch.randn(n, 5, generator=g),
        "labels": torch.arange(n) % 3,
    }


every_model = pytest.mark.parametrize("name", sorted(MODELS))
ROWS = torch.randn(4, 6)

BAD_MODEL_INPUTS = [
    (
        {"image_features": ROWS.double() * 1e300},
        r"image_features has values up to .*e\+300, beyond",
    ),
    ({"image_features": ROWS * float("nan")}, r"image_features contains NaN or inf \(rows \[0, 1"),
    ({"text_features": torch.full((4, 5), float("inf"))}, r"text_features contains NaN or inf"),
    ({"image_features": torch.randn(4, 7)}, r"image_features must have shape \(batch, 6\), got"),
    ({"image_features": torch.randn(6)}, r"image_features must have shape \(batch, 6\)"),
    ({"image_features": torch.randn(0, 6)}, r"image_features is empty"),
    ({"image_features": ROWS > 0}, r"image_features must hold real numbers, got torch.bool"),
    ({"image_features": [[1.0] * 6, [1.0]]}, r"image_features must be a tensor, array or list"),
    ({"image_features": [["a"] * 6]}, r"image_features must be a tensor, array or list"),
]
BAD_LABELS = [
    (torch.tensor(1), r"got a scalar"),
    (torch.tensor([True, False, True, False]), r"must be integer class indices, got torch.bool"),
    (torch.tensor([0.0, 1.0, 2.0, 0.0]), r"must be integer class indices, got torch.float32"),
    (torch.tensor([0, 1, 2, 3]), r"labels must lie in \[0, 3\)"),
    (torch.tensor([0, 1, -1, 0]), r"labels must lie in \[0, 3\)"),
    (torch.rand(4, 3) * 0.9 + 0.05, r"labels must be multi-hot: 0/1 or boolean, got values"),
    (torch.full((4, 3), float("nan")), r"multi-hot: 0/1 or boolean, got values such as \[nan"),
    (torch.full((4, 3), 2), r"multi-hot: 0/1 or boolean, got values such as \[2"),
    (torch.ones(4, 4), r"multi-hot \(batch, 3\), got shape \(4, 4\)"),
    (torch.tensor([0, 1]), r"batch sizes differ: 4 images, 4 texts, 2 labels"),
]


@every_model
@pytest.mark.parametrize("bad, message", BAD_MODEL_INPUTS)
def test_bad_model_input(name, bad, message):
    model = small_model(name)
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    with pytest.raises(ValueError, match=message):
        model(**{**inputs, **bad})


@every_model
@pytest.mark.parametrize("labels, message", BAD_LABELS)
def test_bad_labels_in_the_loss(name, labels, message):
    model = small_model(name).train()
    with pytest.raises(ValueError, match=message):
        model(**{**batch(), "labels": labels}, return_loss=True)


@every_model
@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda t: t.tolist(), id="list"),
        pytest.param(lambda t: t.numpy(), id="ndarray"),
        pytest.param(lambda t: torch.nn.functional.one_hot(t, 3).bool(), id="multi-hot-bool"),
        pytest.param(lambda t: torch.nn.functional.one_hot(t, 3).double(), id="multi-hot-0/1"),
    ],
)
def test_labels_in_other_forms_give_the_same_loss(name, convert):
    model = small_model(name).train()
    b = batch()
    if model.requires_source_dataset:  # a transfer model's source batch: the same pairs
        accepted = inspect.signature(model.forward).parameters
        b |= {f"source_{k}": v for k, v in batch().items() if f"source_{k}" in accepted}
    torch.manual_seed(1)
    expected = model(**b, return_loss=True).loss
    torch.manual_seed(1)
    assert torch.equal(
        model(**{**b, "labels": convert(b["labels"])}, return_loss=True).loss, expected
    )


@every_model
def test_float64_features_are_cast(name):
    model = small_model(name)
    b = {k: v for k, v in batch().items() if k != "labels"}
    with torch.no_grad():
        expected = model(**b)
        got = model(**{k: v.double() for k, v in b.items()})
    assert got.image_embeds.dtype == torch.float32
    assert torch.equal(got.image_embeds, expected.image_embeds)
    assert torch.equal(got.text_embeds, expected.text_embeds)


# ---------------------------------------------------------------- raw inputs (towers)


@pytest.fixture(scope="module")
def raw_model():
    config = DSCMRConfig(input_mode="raw", num_labels=3, hidden_dims=[8], embed_dim=4)
    return DSCMRModel(config).eval()


PIXELS = torch.rand(2, 3, 64, 64) * 2 - 1
IDS = torch.randint(1000, 2000, (2, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "inputs, message",
    [
        (
            {"pixel_values": (PIXELS * 100).to(torch.uint8)},
            r"pixel_values must be normalised .*uint8",
        ),
        ({"pixel_values": PIXELS * float("nan")}, r"pixel_values contains NaN or inf"),
        ({"pixel_values": PIXELS.double() * 1e300}, r"pixel_values has values up to .* beyond"),
        ({"pixel_values": PIXELS[0]}, r"pixel_values must be \(batch, 3, height, width\)"),
        ({"pixel_values": PIXELS[:, :1]}, r"pixel_values must be \(batch, 3, height, width\)"),
        (
            {"input_ids": IDS + 40000},
            r"input_ids must lie in \[0, 30522\) \(the tower's vocabulary\)",
        ),
        ({"input_ids": IDS - 2000}, r"input_ids must lie in \[0, 30522\)"),
        (
            {"input_ids": torch.ones(1, 600, dtype=torch.long)},
            r"600 tokens, more than .* 512 positions",
        ),
        (
            {"input_ids": torch.ones(2, 0, dtype=torch.long)},
            r"input_ids must be \(batch, length\) with",
        ),
        ({"input_ids": IDS[0]}, r"input_ids must be \(batch, length\)"),
        ({"input_ids": IDS.float()}, r"input_ids must be integer token ids, got torch.float32"),
        (
            {"input_ids": IDS, "attention_mask": torch.tensor([[1] * 8, [0] * 8])},
            r"attention_mask rows \[1\] mask every token",
        ),
        (
            {"input_ids": IDS, "attention_mask": torch.ones(2, 7)},
            r"attention_mask has shape \(2, 7\)",
        ),
        (
            {"input_ids": IDS, "attention_mask": torch.full((2, 8), 2)},
            r"attention_mask must hold 0",
        ),
        ({"image_features": torch.randn(2, 1280).double() * 1e300}, r"image_features has values"),
    ],
)
def test_bad_raw_input(raw_model, inputs, message):
    with torch.no_grad(), pytest.raises(ValueError, match=message):
        raw_model(**inputs)


def test_raw_inputs_in_other_dtypes_are_accepted(raw_model):
    with torch.no_grad():
        pixels = raw_model.get_image_features(pixel_values=PIXELS)
        assert torch.allclose(raw_model.get_image_features(pixel_values=PIXELS.double()), pixels)
        texts = raw_model.get_text_features(input_ids=IDS)
        bool_mask = torch.ones_like(IDS, dtype=torch.bool)
        assert torch.equal(
            raw_model.get_text_features(input_ids=IDS, attention_mask=bool_mask), texts
        )
        assert torch.equal(raw_model.get_text_features(input_ids=IDS.int()), texts)


# ---------------------------------------------------------------- processors and image files


def forged_png(path, width, height):
    """A valid PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def bad_image_files(folder):
    """Damaged image files, each with the message it must give."""
    good = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(good, format="PNG")
    (folder / "truncated.png").write_bytes(good.getvalue()[:60])
    (folder / "garbage.jpg").write_bytes(b"not an image" * 20)
    (folder / "empty.png").write_bytes(b"")
    limit = Image.MAX_IMAGE_PIXELS
    side_error, side_warning = int((2.5 * limit) ** 0.5), int((1.5 * limit) ** 0.5)
    return [
        (folder / "truncated.png", r"truncated.png.* cannot be read as an image \(OSError"),
        (folder / "garbage.jpg", r"garbage.jpg.* cannot be read as an image \(UnidentifiedImage"),
        (folder / "empty.png", r"empty.png.* cannot be read as an image"),
        (forged_png(folder / "bomb.png", side_error, side_error), r"bomb.png.* is too large"),
        (forged_png(folder / "big.png", side_warning, side_warning), r"big.png.* is too large"),
    ]


@pytest.fixture(scope="module")
def tower_processor():
    return XmodalTowerProcessor.from_towers()


def test_bad_image_files_in_the_processor(tower_processor, tmp_path):
    for path, message in bad_image_files(tmp_path):
        with pytest.raises(ValueError, match=r"image 0 \(.*" + message):
            tower_processor(images=[str(path)])


def test_bad_image_files_in_feature_extraction(tmp_path):
    """Extraction decodes a dataset's image files itself, so that a bad one is named."""
    ok = tmp_path / "ok.png"
    Image.new("RGB", (32, 32), "red").save(ok)
    features = Features({"image": ImageFeature()})
    for path, message in bad_image_files(tmp_path):
        data = Dataset.from_dict({"image": [str(ok), str(path)]}, features=features)
        with pytest.raises(ValueError, match=r"image file .*" + message):
            extract_features(DatasetDict(train=data), texts=False, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_features": np.full((2, 4), 1e300)}, r"image_features has values up to 1e\+300"),
        (
            {"image_features": [[1, 2, 3, 4], [1]]},
            r"image_features must be a tensor, array or list",
        ),
        ({"image_features": [["a"] * 4]}, r"image_features must be a tensor, array or list"),
        ({"image_features": np.ones((2, 5))}, r"image_features must have shape \(batch, 4\)"),
        ({"text_features": np.full((2, 3), np.nan)}, r"text_features contains NaN or inf"),
        ({}, r"give image_features, text_features or both"),
    ],
)
def test_bad_processor_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        XmodalProcessor(image_feature_dim=4, text_feature_dim=3)(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": []}, r"text is an empty list"),
        ({"text": ["a bus", "  "]}, r"text 1 is empty"),
        ({"text": ["a bus", 3]}, r"text 1 must be a string, got int"),
        ({"images": []}, r"images is an empty list"),
        ({"images": [np.zeros((8, 8, 3))]}, r"image 0 must be a PIL image or a path, got ndarray"),
        ({"image_features": np.ones((1, 12))}, r"image_features must have shape \(batch, 1280\)"),
    ],
)
def test_bad_tower_processor_input(tower_processor, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tower_processor(**kwargs)


def test_processor_casts_float64_and_integers():
    processor = XmodalProcessor(image_feature_dim=4, text_feature_dim=3)
    values = np.arange(8).reshape(2, 4)
    out = processor(image_features=values.astype(np.float64), text_features=[[1, 2, 3]])
    assert out["image_features"].dtype == torch.float32
    assert torch.equal(out["image_features"], torch.arange(8.0).reshape(2, 4))
    assert out["text_features"].tolist() == [[1.0, 2.0, 3.0]]


# ---------------------------------------------------------------- retrieval index


def nan_scorer(queries, gallery, query_modality):
    return torch.full((len(queries), len(gallery)), float("nan"))


def index_of(metric="cosine", n=5, **kwargs):
    index = RetrievalIndex(4, metric, **kwargs)
    index.add(torch.randn(n, 4, generator=torch.Generator().manual_seed(0)))
    return index


@pytest.mark.parametrize(
    "act, message",
    [
        (lambda: index_of().add(np.full((2, 4), 1e300)), r"embeddings has values up to 1e\+300"),
        (lambda: index_of().add(np.full((2, 4), np.nan)), r"embeddings contains NaN or inf"),
        (lambda: index_of().search(np.full((1, 4), 1e300), 2), r"queries has values up to"),
        (lambda: index_of().search(np.ones((1, 4)), -1), r"k must be a positive integer"),
        (
            lambda: index_of(nan_scorer, query_modality="image").search(np.ones((2, 4)), 2),
            r"the scorer returned NaN or inf scores \(query rows \[0, 1\]",
        ),
        (
            lambda: index_of(nan_scorer, query_modality="text").scores(np.ones((1, 4))),
            r"the scorer returned NaN or inf scores",
        ),
        (
            lambda: index_of("inner_product", n=0).add(np.full((2, 4), 3e38)) or None,
            None,
        ),
    ],
)
def test_bad_index_use(act, message):
    if message is None:
        act()  # large but representable values are fine to store
        return
    with pytest.raises(ValueError, match=message):
        act()


def test_index_scores_that_overflow_are_an_error():
    index = RetrievalIndex(4, "inner_product")
    index.add(np.full((3, 4), 3e38, dtype=np.float32))
    for act in (lambda q: index.search(q, 2), index.scores):
        with pytest.raises(ValueError, match=r"inner products overflow float32: NaN or inf"):
            act(np.full((1, 4), 3e38, dtype=np.float32))


@pytest.mark.parametrize("metric", ["cosine", "inner_product", "hamming", "learned"])
def test_index_never_returns_missing_ids(metric):
    """k beyond the gallery is clamped: every id returned is a real gallery row."""
    if metric == "hamming":
        index = RetrievalIndex(4, "hamming")
        index.add(torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 1]]))
    else:
        scorer = (lambda q, g, query_modality: q @ g.T) if metric == "learned" else metric
        index = index_of(
            scorer, n=3, **({"query_modality": "image"} if metric == "learned" else {})
        )
    scores, ids = index.search(
        torch.randn(2, 4) > 0 if metric == "hamming" else torch.randn(2, 4), 10
    )
    assert ids.shape == (2, 3) and sorted(ids[0].tolist()) == [0, 1, 2]
    assert torch.isfinite(scores.float()).all()


def test_uncsm_similarity_rejects_nan():
    model = small_model("uncsm")
    dim = model.config.embed_dim
    with pytest.raises(ValueError, match=r"query_embeds contains NaN or inf"):
        model.similarity(torch.full((2, dim), float("nan")), torch.randn(3, dim))
    with pytest.raises(ValueError, match=rf"gallery_embeds must have shape \(batch, {dim}\)"):
        model.similarity(torch.randn(2, dim), torch.randn(3, dim + 1))


def saved_index(tmp_path):
    index_of().save(tmp_path)
    return tmp_path


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: truncate(d / "index.faiss"),
            r"index.faiss is damaged or truncated \(\d+ bytes\)",
        ),
        (
            lambda d: truncate(d / "index.faiss", 0),
            r"index.faiss is damaged or truncated \(0 bytes\)",
        ),
        (lambda d: truncate(d / "index.json"), r"index.json is damaged: expected JSON with metric"),
        (lambda d: (d / "index.json").write_text('{"metric": "cosine"}'), r"KeyError: 'dim'"),
        (
            lambda d: (d / "index.json").write_text('{"metric": "l2", "dim": 4, "size": 5}'),
            r"index.json is damaged.*metric must be",
        ),
        (
            lambda d: (d / "index.json").write_text('{"metric": "cosine", "dim": 4, "size": 6}'),
            r"index.faiss holds 5 vectors but .*index.json says 6",
        ),
        (
            lambda d: (d / "index.json").write_text('{"metric": "cosine", "dim": 8, "size": 5}'),
            r"index.faiss holds vectors of width 4, not 8",
        ),
        (lambda d: (d / "index.faiss").unlink(), r"no saved index in .* \(expected index.json"),
    ],
)
def test_damaged_saved_index(tmp_path, damage, message):
    directory = saved_index(tmp_path)
    damage(directory)
    with pytest.raises(ValueError, match=message):
        RetrievalIndex.load(directory)


# ---------------------------------------------------------------- evaluation

EMBEDS = np.random.default_rng(0).normal(size=(6, 4))


@pytest.mark.parametrize(
    "act, message",
    [
        (
            lambda: evaluate_retrieval(EMBEDS, EMBEDS, np.full((6, 3), 0.5), np.ones((6, 3))),
            r"image_labels must be multi-hot: 0/1 or boolean, got values such as \[0.5",
        ),
        (
            lambda: evaluate_retrieval(EMBEDS, EMBEDS, np.ones((6, 3)), np.full((6, 3), np.nan)),
            r"text_labels must be multi-hot: 0/1 or boolean, got values such as \[nan",
        ),
        (
            lambda: evaluate_retrieval(EMBEDS, EMBEDS, np.arange(6) + 0.5, np.arange(6)),
            r"image_labels must be integer class ids, got non-integer or NaN",
        ),
        (
            lambda: evaluate_retrieval(EMBEDS * 1e300, EMBEDS, np.arange(6), np.arange(6)),
            r"image_embeds has values up to .*e\+300, beyond float32's range",
        ),
        (
            lambda: evaluate_retrieval(EMBEDS, EMBEDS * np.nan, np.arange(6), np.arange(6)),
            r"text_embeds contains NaN or inf",
        ),
        (
            lambda: mean_average_precision(np.ones((2, 3)), [[0.2, 1]] * 2, [[1, 0]] * 3),
            r"query_labels must be multi-hot",
        ),
        (lambda: pairwise_scores(np.full((2, 4), np.nan), EMBEDS), r"queries contains NaN or inf"),
        (lambda: pairwise_scores(EMBEDS, EMBEDS * 1e300), r"gallery has values up to"),
        (
            lambda: evaluate_retrieval(EMBEDS, EMBEDS, np.arange(6), np.arange(5)),
            r"6 text embeddings but 5 text labels",
        ),
    ],
)
def test_bad_evaluation_input(act, message):
    with pytest.raises(ValueError, match=message):
        act()


def test_evaluation_accepts_float64_and_boolean_labels():
    labels = np.eye(3)[np.arange(6) % 3]
    expected = evaluate_retrieval(EMBEDS.astype(np.float32), EMBEDS, labels, labels)
    assert evaluate_retrieval(EMBEDS, EMBEDS, labels.astype(bool), labels == 1) == expected


# ---------------------------------------------------------------- feature files


def feature_arrays():
    rng = np.random.default_rng(0)
    return {
        k: rng.random((5 if k.endswith("tr") else 4, 3)) for k in ("I_tr", "T_tr", "I_te", "T_te")
    }


def write_file(path, damage):
    if path.suffix == ".npz":
        np.savez(path, **feature_arrays())
    else:
        scipy.io.savemat(path, feature_arrays())
    damage(path)
    return path


@pytest.mark.parametrize(
    "name, damage, message",
    [
        (
            "f.npz",
            lambda p: truncate(p, 0),
            r"f.npz': cannot read as a .npz archive .*the file is empty",
        ),
        ("f.npz", truncate, r"f.npz': cannot read as a .npz archive .*BadZipFile"),
        ("f.npz", lambda p: p.write_bytes(b"junk" * 40), r"f.npz': cannot read as a .npz"),
        ("f.mat", lambda p: truncate(p, 0), r"f.mat': cannot read as a MATLAB .*the file is empty"),
        ("f.mat", truncate, r"f.mat': cannot read as a MATLAB \(v4-v7\) .mat file"),
        ("f.mat", lambda p: p.write_bytes(b"junk" * 40), r"f.mat': cannot read as a MATLAB"),
        ("f.npz", lambda p: np.savez(p), r"missing key\(s\) \['I_tr', 'T_tr', 'I_te', 'T_te'\]"),
    ],
)
def test_damaged_feature_file(tmp_path, name, damage, message):
    path = write_file(tmp_path / name, damage)
    with pytest.raises(ValueError, match=message):
        load_paired_features(path)


def test_damaged_npy_in_a_folder(tmp_path):
    for key, array in feature_arrays().items():
        np.save(tmp_path / f"{key}.npy", array)
    truncate(tmp_path / "T_te.npy")
    with pytest.raises(
        ValueError, match=r"key 'T_te' \(.*T_te.npy\): cannot load as a numeric .npy"
    ):
        load_paired_features(tmp_path)


@pytest.mark.parametrize("keep", [0, 0.5, 0.99])
def test_truncated_weights_file_is_named(tmp_path, keep):
    small_model("dscmr").save_pretrained(tmp_path)
    truncate(tmp_path / "model.safetensors", keep)
    with pytest.raises(OSError, match=r"model.safetensors is truncated or damaged"):
        AutoModel.from_pretrained(tmp_path)
