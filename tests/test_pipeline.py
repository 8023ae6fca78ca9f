"""The "cross-modal-retrieval" pipeline answers as the model's own retrieval metric ranks."""

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from transformers import pipeline

from hf_xmodal import MODELS, CrossModalRetrievalPipeline
from hf_xmodal.evaluation import pairwise_scores
from hf_xmodal.models import XmodalProcessor, XmodalTowerProcessor, add_towers

DIMS = {"image_feature_dim": 12, "text_feature_dim": 7}


def saved_model(name, folder):
    config_class, model_class = MODELS[name]
    torch.manual_seed(0)
    # CMSL on global features alone: these galleries have no region maps or words.
    extra = {"local_saliency_weight": 0} if name == "cmsl" else {}
    model = model_class(config_class(**DIMS, num_labels=3, **extra)).eval()
    model.save_pretrained(folder)
    XmodalProcessor(**DIMS).save_pretrained(folder)
    return model


def metric_of(model):
    metric = model.config.retrieval_metric
    return model.similarity if metric == "learned" else metric


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hits_follow_the_models_retrieval_metric(name, tmp_path):
    model = saved_model(name, tmp_path)
    retriever = pipeline("cross-modal-retrieval", model=str(tmp_path))
    assert isinstance(retriever, CrossModalRetrievalPipeline)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 12)).astype(np.float32)
    texts = rng.normal(size=(30, 7)).astype(np.float32)
    retriever.build_index(image_features=images, text_features=texts, batch_size=16)
    with torch.no_grad():
        u = model.get_image_features(torch.from_numpy(images))
        v = model.get_text_features(torch.from_numpy(texts))
    for queries, key, gallery, modality in (
        (v, "text_features", u, "text"),
        (u, "image_features", v, "image"),
    ):
        raw = texts if key == "text_features" else images
        expected = pairwise_scores(queries[:9], gallery, metric_of(model), query_modality=modality)
        # ties (Hamming) in gallery order, the index's stated rule
        order = expected.sort(dim=1, descending=True, stable=True)
        top = torch.return_types.topk((order.values[:, :4], order.indices[:, :4]))
        hits = retriever([{key: row} for row in raw[:9]], top_k=4, batch_size=4)
        assert [[h["index"] for h in row] for row in hits] == top.indices.tolist()
        got = torch.tensor([[h["score"] for h in row] for row in hits])
        torch.testing.assert_close(got, top.values, rtol=1e-4, atol=1e-5, check_dtype=False)
        alone = retriever({key: raw[3]}, top_k=4)  # one query, unbatched: the same hits
        assert [h["index"] for h in alone] == top.indices[3].tolist()
        assert [h["score"] for h in alone] == pytest.approx(got[3].tolist(), rel=1e-4)


def test_dataset_column_save_and_load(tmp_path):
    from datasets import Dataset

    saved_model("dscmr", tmp_path / "model")
    retriever = pipeline("cross-modal-retrieval", model=str(tmp_path / "model"))
    rng = np.random.default_rng(1)
    gallery = Dataset.from_dict({"image_features": rng.normal(size=(25, 12)).tolist()})
    retriever.build_index(dataset=gallery, column="image_features")
    query = {"text_features": rng.normal(size=7)}
    before = retriever(query, top_k=5)
    retriever.save_index(tmp_path / "gallery")
    again = pipeline("cross-modal-retrieval", model=str(tmp_path / "model"))
    assert again.load_index(tmp_path / "gallery")(query, top_k=5) == before


def test_learned_metric_galleries_are_not_saved(tmp_path):
    saved_model("uncsm", tmp_path)
    retriever = pipeline("cross-modal-retrieval", model=str(tmp_path))
    retriever.build_index(image_features=np.ones((3, 12), dtype=np.float32))
    with pytest.raises(ValueError, match="learned metric cannot be saved"):
        retriever.save_index(tmp_path / "gallery")


def test_clear_errors(tmp_path):
    saved_model("dscmr", tmp_path)
    retriever = pipeline("cross-modal-retrieval", model=str(tmp_path))
    with pytest.raises(ValueError, match="build_index\\(images=...\\) first"):
        retriever({"text_features": np.zeros(7)})
    with pytest.raises(ValueError, match="not raw texts"):
        retriever.build_index(texts=["a red bus"])
    with pytest.raises(ValueError, match="a query is a text"):
        retriever(3)
    with pytest.raises(ValueError, match="column must be one of"):
        retriever.build_index(dataset={"x": [1]}, column="x")
    with pytest.raises(ValueError, match="text_features must have shape"):
        retriever.build_index(text_features=np.zeros((2, 8)))
    retriever.build_index(image_features=np.eye(12, dtype=np.float32))
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        retriever({"text_features": np.zeros(7)}, top_k=0)


def test_photos_and_sentences_with_the_towers(tmp_path):
    """A model carrying the towers: photos and sentences in, gallery items out."""
    config_class, model_class = MODELS["dscmr"]
    torch.manual_seed(0)
    model = add_towers(
        model_class(
            config_class(
                num_labels=3, input_mode="features", image_feature_dim=1280, text_feature_dim=384
            )
        )
    )
    model.eval().save_pretrained(tmp_path)
    processor = XmodalTowerProcessor.from_towers()
    processor.save_pretrained(tmp_path)
    photos = [Image.fromarray(getattr(skimage.data, n)()) for n in ("chelsea", "coffee", "rocket")]
    sentences = ["a cat lying on a rug", "a cup of coffee", "a rocket\non its launch pad"]
    retriever = pipeline("cross-modal-retrieval", model=str(tmp_path))
    retriever.build_index(images=photos, texts=sentences)
    with torch.no_grad():
        u = model.get_image_features(**processor(images=photos))
        v = model.get_text_features(**processor(text=sentences))
    expected = pairwise_scores(v, u).argsort(dim=1, descending=True)
    hits = retriever(sentences, top_k=3)
    assert [[h["index"] for h in row] for row in hits] == expected.tolist()
    assert all(isinstance(h["item"], Image.Image) for h in hits[0])
    to_texts = retriever(photos[0], top_k=1)[0]
    assert to_texts["item"] == sentences[pairwise_scores(u[:1], v).argmax().item()]
    # saved and loaded: the same text hits, with their sentences
    retriever.save_index(tmp_path / "gallery")
    again = pipeline("cross-modal-retrieval", model=str(tmp_path)).load_index(tmp_path / "gallery")
    assert again(photos, top_k=3) == retriever(photos, top_k=3)
