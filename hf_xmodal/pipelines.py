"""The `"cross-modal-retrieval"` pipeline: search a gallery of images with texts and a gallery of
texts with images, with any hf_xmodal model.

    import hf_xmodal  # registers the task with transformers
    from transformers import pipeline

    retriever = pipeline("cross-modal-retrieval", model="runs/daml-flickr8k_features-seed0/model")
    retriever.build_index(images=photos)            # or texts=[...], or dataset=..., column=...
    retriever("a dog runs on the beach", top_k=3)    # [{"score": ..., "index": ..., "item": ...}]

Queries are texts (`str`), images (`PIL.Image`), or a dict naming the input, `{"image": path}`,
`{"text_features": vector}`, `{"image_features": vector}` (feature models take feature vectors,
models that carry the towers take photos and sentences too). A text searches the image gallery and
an image the text gallery. Galleries live in `RetrievalIndex`es ranked by the model's retrieval
metric: cosine, Hamming distance of codes, or the model's learned metric.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import logging

from .evaluation import RetrievalIndex
from .files import atomic_write
from .models import XmodalTowerProcessor

logger = logging.get_logger(__name__)

TASK = "cross-modal-retrieval"
MEDIA = ("image", "text")
INPUT_KEYS = {"image": "image", "text": "text", "image_features": "image", "text_features": "text"}
"""Query and gallery inputs by name → their medium."""
OTHER = {"image": "text", "text": "image"}
ITEMS_FILE = "texts.json"


class CrossModalRetrievalPipeline(Pipeline):
    """Text → image and image → text search over galleries embedded by an hf_xmodal model.

    `build_index` (or `load_index`) fills a gallery per medium; calling the pipeline with one
    query returns its `top_k` hits, best first, as `{"score", "index", "item"}` (`item`: the
    gallery's text or image, absent for feature vectors); with a list it returns one list per
    query. Queries are embedded in batches of `batch_size` (default 32) and searched together.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._galleries: dict[str, tuple[RetrievalIndex, list | None]] = {}

    # ---------------------------------------------------------------------------------------------
    # The gallery

    def _index_for(self, medium: str, dim: int) -> RetrievalIndex:
        """An empty index for a gallery of `medium` under the model's retrieval metric."""
        config = self.model.config
        if config.retrieval_metric == "learned":
            return RetrievalIndex(dim, metric=self.model.similarity, query_modality=OTHER[medium])
        return RetrievalIndex(dim, metric=config.retrieval_metric)

    def build_index(
        self,
        images: Sequence | None = None,
        texts: Sequence[str] | None = None,
        image_features: Any = None,
        text_features: Any = None,
        dataset=None,
        column: str | None = None,
        batch_size: int = 64,
    ) -> CrossModalRetrievalPipeline:
        """Embed a gallery and index it, replacing any gallery of the same medium: `images` (PIL
        images or paths), `texts`, feature matrices, or a `datasets.Dataset` `column` named
        `image`, `text`, `image_features` or `text_features`. Returns the pipeline."""
        given = {
            "image": images,
            "text": texts,
            "image_features": image_features,
            "text_features": text_features,
        }
        if dataset is not None:
            if column not in INPUT_KEYS:
                raise ValueError(
                    f"column must be one of {list(INPUT_KEYS)} (the input it holds), got "
                    f"{column!r}; for another column pass images=dataset[column] or texts=..."
                )
            given[column] = dataset[column]
        elif column is not None:
            raise ValueError("column applies to a dataset")
        chosen = {key: value for key, value in given.items() if value is not None}
        if not chosen:
            raise ValueError(
                "give a gallery: images, texts, image_features, text_features or a dataset"
            )
        for key, values in chosen.items():
            medium = INPUT_KEYS[key]
            if len(values) == 0:
                raise ValueError(f"the {key} gallery is empty")
            embeds = self._embed(key, values, batch_size)
            index = self._index_for(medium, embeds.shape[1])
            index.add(embeds)
            items = list(values) if key in MEDIA else None
            self._galleries[medium] = (index, items)
            logger.info(f"indexed {len(index)} {medium}s ({index.metric})")
        return self

    def save_index(self, directory: str | os.PathLike) -> Path:
        """Write the galleries (`RetrievalIndex.save` per medium, and the gallery's texts) into
        `directory`; a learned metric is the model's, so its galleries are embedded again."""
        directory = Path(directory)
        if not self._galleries:
            raise ValueError("no gallery to save: build_index first")
        for medium, (index, items) in self._galleries.items():
            index.save(directory / medium)
            if medium == "text" and items is not None:
                atomic_write(directory / medium / ITEMS_FILE, json.dumps(items))
        return directory

    def load_index(self, directory: str | os.PathLike) -> CrossModalRetrievalPipeline:
        """Load galleries written by `save_index` (hits on images then carry no `item`)."""
        directory = Path(directory)
        found = [m for m in MEDIA if (directory / m).is_dir()]
        if not found:
            raise ValueError(f"no saved gallery in {directory} (expected image/ or text/)")
        for medium in found:
            index = RetrievalIndex.load(directory / medium)
            if index.metric != self.model.config.retrieval_metric:
                raise ValueError(
                    f"the saved {medium} gallery is ranked by {index.metric}; this model's "
                    f"retrieval metric is {self.model.config.retrieval_metric}"
                )
            texts = directory / medium / ITEMS_FILE
            items = json.loads(texts.read_text()) if texts.is_file() else None
            self._galleries[medium] = (index, items)
        return self

    # ---------------------------------------------------------------------------------------------
    # One batch of inputs of one kind: preprocess → _forward (embed) → postprocess (search)

    def _sanitize_parameters(self, top_k=None, **kwargs):
        return {}, {}, ({} if top_k is None else {"top_k": top_k})

    def preprocess(self, batch: tuple[str, Sequence]) -> dict[str, Any]:
        """`(input name, values)` → the model's inputs, through the model's processor."""
        key, values = batch
        self._check_raw(key)
        if key == "image":
            inputs = self.processor(images=list(values))
        elif key == "text":
            inputs = self.processor(text=list(values))
        else:
            inputs = self.processor(**{key: np.asarray(values, dtype=np.float32)})
        return {"medium": INPUT_KEYS[key], "inputs": dict(inputs)}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        medium = model_inputs["medium"]
        encode = (
            self.model.get_image_features if medium == "image" else self.model.get_text_features
        )
        return {"medium": medium, "embeds": encode(**model_inputs["inputs"])}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int = 5) -> list[list[dict]]:
        """The `top_k` hits of each query in the gallery of the other medium."""
        target = OTHER[model_outputs["medium"]]
        if target not in self._galleries:
            raise ValueError(
                f"{model_outputs['medium']} queries search a gallery of {target}s: "
                f"build_index({target}s=...) first"
            )
        index, items = self._galleries[target]
        scores, ids = index.search(model_outputs["embeds"], top_k)
        return [
            [
                {"score": score, "index": i} | ({} if items is None else {"item": items[i]})
                for score, i in zip(row_scores, row_ids, strict=True)
            ]
            for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True)
        ]

    def _check_raw(self, key: str) -> None:
        """Photos and sentences need a processor with the towers' image and text processing."""
        if key in MEDIA and not isinstance(self.processor, XmodalTowerProcessor):
            raise ValueError(
                f"this model takes {key}_features, not raw {key}s: photos and sentences need a "
                "model that carries the pretrained towers (trained on their features)"
            )

    def _batches(self, key: str, values: Sequence, batch_size: int, desc: str):
        """Batches `(key, values[i:i + batch_size])`, with a progress bar when there are several."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        starts = range(0, len(values), batch_size)
        for start in logging.tqdm(starts, desc=desc, disable=len(starts) < 2):
            yield key, values[start : start + batch_size]

    def _embed(self, key: str, values: Sequence, batch_size: int) -> torch.Tensor:
        """A gallery's embeddings, through the model's batched `encode`."""
        self._check_raw(key)
        items = list(values) if key in MEDIA else np.asarray(values, dtype=np.float32)
        return self.model.encode(
            items, INPUT_KEYS[key], batch_size=batch_size, processor=self.processor
        )

    # ---------------------------------------------------------------------------------------------
    # Queries

    @staticmethod
    def _query_key(query) -> tuple[str, Any]:
        """(input name, value) of one query."""
        if isinstance(query, str):
            return "text", query
        if isinstance(query, Image.Image):
            return "image", query
        if isinstance(query, dict) and len(query) == 1 and next(iter(query)) in INPUT_KEYS:
            return next(iter(query.items()))
        raise ValueError(
            "a query is a text (str), an image (PIL.Image) or a dict with one of the keys "
            f"{list(INPUT_KEYS)}, got {type(query).__name__}"
        )

    def __call__(self, inputs, top_k: int = 5, batch_size: int | None = None):
        """Search: one query → its hits; a list of queries → a list of hit lists. Queries of one
        kind are embedded and searched in batches of `batch_size` (default 32)."""
        single = not isinstance(inputs, list | tuple)
        queries = [inputs] if single else list(inputs)
        if not queries:
            raise ValueError("no queries")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        keyed = [self._query_key(q) for q in queries]
        results: list[list[dict] | None] = [None] * len(queries)
        for key in dict.fromkeys(k for k, _ in keyed):
            rows = [i for i, (k, _) in enumerate(keyed) if k == key]
            values = [keyed[i][1] for i in rows]
            hits = []
            desc = f"{INPUT_KEYS[key]} queries"
            for batch in self._batches(key, values, batch_size or 32, desc):
                hits += self.run_single(batch, {}, {}, {"top_k": top_k})
            for row, hit in zip(rows, hits, strict=True):
                results[row] = hit
        return results[0] if single else results


PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=CrossModalRetrievalPipeline, pt_model=AutoModel, type="multimodal"
)
