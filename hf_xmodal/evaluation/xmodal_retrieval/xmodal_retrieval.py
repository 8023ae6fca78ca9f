"""Cross-media retrieval metrics of hf_xmodal as an `evaluate` module.

    import evaluate, hf_xmodal.evaluation
    metric = evaluate.load(hf_xmodal.evaluation.metric_path())

The module ships inside the package and loads offline; every number comes from
`hf_xmodal.evaluation.evaluate_retrieval` / `evaluate_caption_retrieval`, so the results are
identical to calling those functions.
"""

import datasets
import evaluate
import numpy as np

from hf_xmodal.evaluation import evaluate_caption_retrieval, evaluate_retrieval

_DESCRIPTION = """
Cross-media retrieval in both directions (image → text, text → image) from the embeddings a model
gives each image and each text of a set of pairs. Each example is one image-text pair.

With class labels (`captions=False`, the default): every image queries all texts and every text
all images; relevant = sharing a label (a class id per pair, or multi-hot: at least one shared).
Reports MAP@all and MAP@k per direction and averaged, precision@k, and for binary codes
(`metric="hamming"`) Hamming-ranked MAP and precision within Hamming radius 2.

With captions (`captions=True`): `labels` is the id of each pair's image, several captions share an
image; every image is counted once (the first pair's embedding of it) and Recall@K is reported:
image → text is a hit if any of the image's captions is in the top K, text → image if the caption's
own image is; `rsum` is their sum.
"""

_KWARGS_DESCRIPTION = """
Args:
    image_embeds (`list[list[float]]`): the image embedding (or binary code) of each pair.
    text_embeds (`list[list[float]]`): the text embedding (or code) of each pair.
    labels (`list[int]` or `list[list[int]]`): each pair's class id, or multi-hot labels; with
        `captions=True`, the id of each pair's image.
    metric (`str` or callable, defaults to `"cosine"`): `"cosine"`, `"inner_product"`,
        `"hamming"` (binary codes in {-1, +1} or {0, 1}), or a learned metric called as
        `scorer(queries, gallery, query_modality=...)`, e.g. a UNCSM model's `similarity`.
    captions (`bool`, defaults to `False`): caption data, Recall@K over images counted once.
    ks (`list[int]`, *optional*): cut-offs; defaults (10, 50, 100) for MAP@k and precision@k,
        (1, 5, 10) for Recall@K.
    tie_averaged (`bool`, defaults to `False`): also report the expected MAP over random orders
        of tied scores (labelled data).
Returns:
    Labelled data: `map_i2t`, `map_t2i`, `map_avg` (MAP@all), `map@{k}_*`, `precision@{k}_*`,
    `queries_without_relevant_*`, `num_queries_*`; with codes `precision@hamming2_*`.
    Caption data: `r@{k}_i2t`, `r@{k}_t2i` (fractions), `rsum`, `queries_without_relevant_i2t`.
Examples:
    >>> metric = evaluate.load(hf_xmodal.evaluation.metric_path())
    >>> metric.compute(image_embeds=[[1, 0], [0, 1]], text_embeds=[[1, 0.1], [0, 1]], labels=[0, 1])
    {'map_i2t': 1.0, ...}
"""

_CITATION = """
@inproceedings{rasiwasia2010,
  title     = {A new approach to cross-modal multimedia retrieval},
  author    = {Rasiwasia, Nikhil and Costa Pereira, Jose and Coviello, Emanuele and Doyle, Gabriel
               and Lanckriet, Gert R. G. and Levy, Roger and Vasconcelos, Nuno},
  booktitle = {ACM Multimedia},
  year      = {2010}
}
"""

_EMBEDS = datasets.Sequence(datasets.Value("float32"))


def _features(labels) -> datasets.Features:
    return datasets.Features({"image_embeds": _EMBEDS, "text_embeds": _EMBEDS, "labels": labels})


def _unique_images(images: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per image id (its first pair's) and each pair's image row; the embeddings
    given for one image must agree."""
    ids, first, rows = np.unique(image_ids, return_index=True, return_inverse=True)
    unique = images[first]
    differ = ~np.isclose(images, unique[rows], rtol=1e-4, atol=1e-5).all(axis=1)
    if differ.any():
        bad = sorted({int(i) for i in image_ids[differ]})[:5]
        raise ValueError(
            f"pairs of the same image (labels {bad}) have different image_embeds: with "
            "captions=True, labels must be each pair's image id"
        )
    return unique, rows


class XmodalRetrieval(evaluate.Metric):
    """MAP@all / @k, precision@k and Hamming-ranked MAP (labels), or Recall@K (captions)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                _features(datasets.Value("int64")),
                _features(datasets.Sequence(datasets.Value("int64"))),
            ],
            codebase_urls=["https://pypi.org/project/hf_xmodal/"],
        )

    def _compute(
        self,
        image_embeds,
        text_embeds,
        labels,
        metric="cosine",
        captions=False,
        ks=None,
        tie_averaged=False,
    ) -> dict:
        if not len(labels):
            raise ValueError("no examples: add_batch or pass image_embeds, text_embeds, labels")
        images = np.asarray(image_embeds, dtype=np.float32)
        texts = np.asarray(text_embeds, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        for name, x in (("image_embeds", images), ("text_embeds", texts)):
            if x.ndim != 2:
                raise ValueError(f"{name} must all have one length (got rows of several lengths)")
        options = {} if ks is None else {"ks": ks}
        if captions:
            if labels.ndim != 1:
                raise ValueError("with captions=True, labels must be one image id per pair")
            if tie_averaged:
                raise ValueError("tie_averaged applies to labelled data (captions=False)")
            unique, rows = _unique_images(images, labels)
            return evaluate_caption_retrieval(unique, texts, rows, metric=metric, **options)
        return evaluate_retrieval(
            images, texts, labels, labels, metric=metric, tie_averaged=tie_averaged, **options
        )
