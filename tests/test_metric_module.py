"""The `evaluate` module shipped in the package returns exactly what `hf_xmodal.evaluation` does."""

import os
import subprocess
import sys

import evaluate
import numpy as np
import pytest
import torch

from hf_xmodal.evaluation import evaluate_caption_retrieval, evaluate_retrieval, metric_path
from hf_xmodal.models import UNCSMConfig, UNCSMModel


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(metric_path())


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(60, 16)).astype(np.float32)
    texts = (images + rng.normal(scale=2.0, size=images.shape)).astype(np.float32)
    return images, texts, rng.integers(0, 5, 60)


def add_in_batches(metric, size, **columns):
    n = len(next(iter(columns.values())))
    for start in range(0, n, size):
        metric.add_batch(**{k: v[start : start + size] for k, v in columns.items()})


def test_loads_offline_in_a_fresh_process(tmp_path):
    code = (
        "import evaluate, hf_xmodal.evaluation as e\n"
        "m = evaluate.load(e.metric_path())\n"
        "print(m.compute(image_embeds=[[1, 0], [0, 1]], text_embeds=[[1, 0], [0, 1]], "
        "labels=[0, 1])['map_avg'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    env.update(HF_DATASETS_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "1.0"


def test_labelled_pairs_added_in_batches(metric, pairs):
    images, texts, labels = pairs
    add_in_batches(
        metric, 25, image_embeds=images, text_embeds=torch.from_numpy(texts), labels=labels
    )
    got = metric.compute(ks=(5, 20), tie_averaged=True)
    assert got == evaluate_retrieval(images, texts, labels, labels, ks=(5, 20), tie_averaged=True)
    assert got["map_avg"] > 0.3  # the texts are noisy copies of the images


def test_multi_hot_labels_and_inner_product(metric, pairs):
    images, texts, _ = pairs
    multi_hot = (np.random.default_rng(1).random((60, 4)) > 0.6).astype(np.int64)
    got = metric.compute(
        image_embeds=images, text_embeds=texts, labels=multi_hot, metric="inner_product"
    )
    expected = evaluate_retrieval(images, texts, multi_hot, multi_hot, metric="inner_product")
    assert got == expected
    single = metric.compute(image_embeds=images, text_embeds=texts, labels=multi_hot.argmax(1))
    assert single["map_avg"] != got["map_avg"]  # the multi-hot relevance was used


def test_hamming_ranked_codes(metric, pairs):
    images, texts, labels = pairs
    codes_i, codes_t = np.sign(images), np.sign(texts)
    got = metric.compute(image_embeds=codes_i, text_embeds=codes_t, labels=labels, metric="hamming")
    assert got == evaluate_retrieval(codes_i, codes_t, labels, labels, metric="hamming")
    assert "precision@hamming2_i2t" in got


def test_captions_count_each_image_once(metric):
    """Five captions per image, pairs shuffled: Recall@K over the 20 distinct images."""
    rng = np.random.default_rng(2)
    images = rng.normal(size=(20, 8)).astype(np.float32)
    image_of_text = np.repeat(np.arange(20), 5)
    texts = (images[image_of_text] + rng.normal(size=(100, 8))).astype(np.float32)
    order = rng.permutation(100)
    ids = 100 + 7 * image_of_text[order]  # any ids, not rows
    add_in_batches(
        metric,
        30,
        image_embeds=images[image_of_text[order]],
        text_embeds=texts[order],
        labels=ids,
    )
    got = metric.compute(captions=True, ks=(1, 5))
    # Images in id order, each text pointing at its image's row.
    expected = evaluate_caption_retrieval(images, texts[order], image_of_text[order], ks=(1, 5))
    assert got == expected
    assert 0 < got["r@1_i2t"] < got["r@5_i2t"] <= 1


def test_captions_reject_ids_that_are_not_images(metric, pairs):
    images, texts, labels = pairs
    with pytest.raises(ValueError, match="different image_embeds"):
        metric.compute(image_embeds=images, text_embeds=texts, labels=labels, captions=True)


def test_learned_metric(metric, pairs):
    images, texts, labels = pairs
    torch.manual_seed(0)
    model = UNCSMModel(UNCSMConfig(image_feature_dim=16, text_feature_dim=16, num_labels=5)).eval()
    with torch.no_grad():
        u = model.get_image_features(torch.from_numpy(images))
        v = model.get_text_features(torch.from_numpy(texts))
    got = metric.compute(image_embeds=u, text_embeds=v, labels=labels, metric=model.similarity)
    assert got == evaluate_retrieval(u, v, labels, labels, metric=model.similarity)
    assert got != metric.compute(image_embeds=u, text_embeds=v, labels=labels)  # not cosine
