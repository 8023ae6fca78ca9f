"""What the Space does, without the UI: galleries, checkpoints, cached gallery indexes, queries.

A *gallery* is the test split of a dataset with pretrained-tower features (photos, their texts,
and the towers' features of both, from the package's feature cache). A *checkpoint* is a trained
model that carries the towers, so it embeds a typed sentence or an uploaded photo. Each pair of
them gets a `GalleryIndex`: the gallery embedded by the model (cached on disk, keyed by the
weights' and the gallery's fingerprints) in two `RetrievalIndex`es, one searched by texts and one
by photos, with the model's own retrieval metric (cosine, learned or Hamming).

Every problem a person can cause raises `SearchError`, whose message is meant for them: it names
no server path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors.torch import load_file, save
from tqdm.auto import tqdm
from transformers import AutoModel, AutoProcessor

import hf_xmodal  # noqa: F401  (registers the models with the Auto classes)
from hf_xmodal.data import load_dataset_by_name
from hf_xmodal.evaluation import RetrievalIndex
from hf_xmodal.files import atomic_write
from hf_xmodal.models import TOWER_DIMS, XmodalTowerProcessor, add_towers
from hf_xmodal.training import RESULTS_FILE

logger = logging.getLogger("xmodal_space")

GALLERIES = {
    "flickr8k": "Flickr8k test photos",
    "fashion": "Fashion product photos (test split)",
}
"""Gallery name (a dataset with tower features: `<name>_features`) → what the UI calls it."""
DEFAULT_MODEL = "daml"
DEFAULT_TRAINING = {
    "flickr8k": [
        "--epochs",
        "4",
        "--model_config",
        '{"negative_mining": "hard", "nonlinear_maps": false}',
    ],
    "fashion": ["--epochs", "4"],
}
"""The default model's training arguments per gallery (the README's settings for the data,
with few epochs, so that a first start trains it in minutes on two CPU cores)."""
MAX_QUERY_CHARS = 1000
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MAX_RESULTS = 50
EMBED_BATCH = 512
FILENAME_OF_EMBEDDINGS = "embeddings.safetensors"


class SearchError(ValueError):
    """A problem with what a person asked for; the message is shown to them as it is."""


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class Gallery:
    """The photos and texts of a test split, and the towers' features of both."""

    name: str
    title: str
    photos: list[str]  # a file per photo
    photo_texts: list[list[str]]  # the texts that describe each photo
    texts: list[str]  # the text gallery
    text_photo: np.ndarray  # the photo each text describes
    image_features: torch.Tensor  # [photos, 1280]
    text_features: torch.Tensor  # [texts, 384]
    fingerprint: str
    photo_size: tuple[int, int] | None  # the one size of every gallery photo, if they share one

    @property
    def summary(self) -> str:
        return f"{self.title} ({len(self.photos):,} photos, {len(self.texts):,} texts)"


def raw_test_split(name: str, data_dir: str | os.PathLike | None) -> Dataset:
    """The test split of `name` with its photos undecoded (`{"path", "bytes"}`); a missing
    dataset is a `SearchError` naming no folder (the log has it)."""
    if name not in GALLERIES:
        raise SearchError(f"unknown gallery {name!r}: choose one of {sorted(GALLERIES)}")
    try:
        split = load_dataset_by_name(name, data_dir)["test"]
    except FileNotFoundError as e:
        logger.error("%s", e)
        raise SearchError(f"The {GALLERIES[name]} are not on this server.") from None
    return split.cast_column("image", ImageFeature(decode=False))


def photo_files(raw: Dataset, cache_dir: Path, rows: list[int] | None = None) -> list[str]:
    """A file for each photo of `raw` (or of its `rows`): its own when the dataset names one,
    else its bytes written once under `cache_dir`."""
    rows = list(range(len(raw))) if rows is None else rows
    folder = cache_dir / "photos" / raw._fingerprint
    files = []
    for row, image in zip(rows, raw.select(rows)["image"], strict=True):
        path = image.get("path")
        if path and Path(path).is_file():
            files.append(str(Path(path).resolve()))
            continue
        target = folder / f"{row}.jpg"
        if not target.is_file():
            atomic_write(target, image["bytes"])
        files.append(str(target))
    return files


def load_gallery(name: str, data_dir: str | os.PathLike | None, cache_dir: Path) -> Gallery:
    """The test split of `name` ("flickr8k" or "fashion") from `data_dir` (raw or saved folder;
    None: the package's default location), with tower features from the package's feature
    cache (extracted on first use)."""
    raw = raw_test_split(name, data_dir)
    features = load_dataset_by_name(f"{name}_features", data_dir)["test"].with_format("numpy")
    fingerprint = hashlib.sha256(f"{features._fingerprint}/{raw._fingerprint}".encode())
    photos = photo_files(raw, cache_dir)
    texts = list(features["text"])
    if name == "flickr8k":  # one row per caption; image_index names the photo
        text_photo = np.asarray(features["image_index"])
        described, first = np.unique(text_photo, return_index=True)
        if not np.array_equal(described, np.arange(len(photos))):
            raise SearchError("the gallery's captions and photos do not match")
        image_features = features["image_features"][first]
        photo_texts = [list(c) for c in raw["captions"]]
    else:  # one product per row, its title the text
        text_photo = np.arange(len(photos))
        image_features = features["image_features"]
        photo_texts = [[t] for t in texts]
    return Gallery(
        name=name,
        title=GALLERIES[name],
        photos=photos,
        photo_texts=photo_texts,
        texts=texts,
        text_photo=text_photo,
        image_features=torch.from_numpy(np.stack(image_features).astype(np.float32)),
        text_features=torch.from_numpy(np.stack(features["text_features"]).astype(np.float32)),
        fingerprint=fingerprint.hexdigest(),
        photo_size=shared_size(photos),
    )


def shared_size(photos: list[str], sample: int = 64) -> tuple[int, int] | None:
    """The size every photo of an evenly spread sample has (e.g. 224×224 for copies squashed to
    one size), or None when they differ."""
    rows = np.linspace(0, len(photos) - 1, min(sample, len(photos))).round().astype(int)
    sizes = set()
    for row in rows:
        with Image.open(photos[row]) as image:
            sizes.add(image.size)
    return sizes.pop() if len(sizes) == 1 else None


def fit_to_gallery(photo: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """An upload brought to the shape of the gallery's photos: when those were all resized to
    one size regardless of their aspect ratio (Flickr8k's copies here were squashed to 224×224),
    the model learnt from such photos, so an upload is squashed the same way (`photo_shapes.py`
    measures what that is worth); otherwise it is left as it is."""
    if size is None or photo.size == size:
        return photo
    return photo.resize(size, Image.Resampling.BICUBIC)


METHOD_NAMES = {"dscmr": "DSCMR-style", "daml": "DAML", "uncsm": "UNCSM"}
METRIC_NAMES = {
    "cosine": "cosine similarity",
    "learned": "learned metric network",
    "hamming": "Hamming distance of binary codes",
}


@dataclass
class Checkpoint:
    """A trained model with its towers and processor, ready to embed photos and sentences."""

    name: str
    model: torch.nn.Module
    processor: object
    fingerprint: str
    trained_on: str | None

    @property
    def method(self) -> str:
        model_type = self.model.config.model_type
        return METHOD_NAMES.get(model_type, model_type.upper())

    @property
    def metric(self) -> str:
        return self.model.config.retrieval_metric

    def _output(self, embeds: torch.Tensor) -> torch.Tensor:
        return embeds > 0 if self.metric == "hamming" else embeds  # codes: the signs' bits

    @torch.inference_mode()
    def embed_features(self, features: torch.Tensor, modality: str, desc: str) -> torch.Tensor:
        """Embed tower features (`modality` "image" or "text") in batches, with a progress bar;
        the processor standardises them as in training."""
        model = self.model
        embed = model.get_image_features if modality == "image" else model.get_text_features
        name = f"{modality}_features"
        parts = [
            embed(self.processor(**{name: features[start : start + EMBED_BATCH]})[name])
            for start in tqdm(range(0, len(features), EMBED_BATCH), desc=desc, unit="batch")
        ]
        return self._output(torch.cat(parts))

    @torch.inference_mode()
    def embed_text(self, text: str) -> torch.Tensor:
        batch = self.processor(text=[text])
        embeds = self.model.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        return self._output(embeds)

    @torch.inference_mode()
    def embed_photos(self, photos: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=photos)["pixel_values"]
        return self._output(self.model.get_image_features(pixel_values=pixels))

    def embed_photo(self, photo: Image.Image) -> torch.Tensor:
        return self.embed_photos([photo])


def checkpoint_folder(source: str) -> Path:
    """The local folder of a checkpoint given as a model folder, a training run folder (its
    `model/`), or a Hub model id (downloaded once into the Hugging Face cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "model" / "config.json").is_file():
            path = path / "model"
        if not (path / "config.json").is_file():
            raise SearchError(
                f"{source} holds no checkpoint (no config.json): give a model folder, a "
                "training run folder or a Hub model id"
            )
        return path
    try:
        return Path(snapshot_download(source))
    except (RepositoryNotFoundError, HFValidationError):
        raise SearchError(
            f"no checkpoint {source!r}: it is neither a folder here nor a model on the Hub"
        ) from None
    except LocalEntryNotFoundError:
        raise SearchError(
            f"cannot fetch {source!r}: the Hub is unreachable and it is not in the local cache"
        ) from None


def load_checkpoint(source: str, name: str | None = None) -> Checkpoint:
    """Load a checkpoint (see `checkpoint_folder`) for searching photos and sentences.

    A model trained on the towers' features but saved without them gets them back; any other
    feature-input model cannot take photos and is refused.
    """
    folder = checkpoint_folder(source)
    try:
        model = AutoModel.from_pretrained(folder).eval()
        processor = AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as e:
        raise SearchError(f"{source} is not a loadable hf_xmodal checkpoint: {e}") from None
    config = model.config
    if config.input_mode != "raw":
        dims = (config.image_feature_dim, config.text_feature_dim)
        if dims != tuple(TOWER_DIMS.values()):
            raise SearchError(
                f"{source} takes {dims[0]}-d image and {dims[1]}-d text features, not photos "
                "and sentences: use a model trained on flickr8k_features or fashion_features"
            )
        add_towers(model, processor.applied_statistics)
        model.eval()
        processor = XmodalTowerProcessor.from_towers(
            standardize=processor.standardize, feature_statistics=processor.feature_statistics
        )
    results = folder / RESULTS_FILE
    if not results.is_file():
        results = folder.parent / RESULTS_FILE
    trained_on = json.loads(results.read_text())["dataset"] if results.is_file() else None
    weights = sorted(folder.glob("*.safetensors"))
    return Checkpoint(
        name=name or source,
        model=model,
        processor=processor,
        fingerprint=_sha256([folder / "config.json", *weights]),
        trained_on=trained_on,
    )


def default_run_dir(gallery: str, data_dir: str | os.PathLike | None, cache_dir: Path) -> Path:
    """Where the default model for `gallery` is trained: one folder per recipe and data."""
    recipe = [DEFAULT_MODEL, gallery, DEFAULT_TRAINING[gallery], str(data_dir or "")]
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:8]
    return cache_dir / "models" / f"{DEFAULT_MODEL}-{gallery}-{key}"


def is_trained(run_dir: Path) -> bool:
    return (run_dir / RESULTS_FILE).is_file() and (run_dir / "model" / "config.json").is_file()


def train_default_model(gallery: str, data_dir: str | os.PathLike | None, cache_dir: Path) -> Path:
    """Train the default model on the tower features of `gallery`'s dataset with the package's
    training loop (train split, selected on validation), unless it is cached; a run cut short
    resumes. Returns the run folder."""
    from hf_xmodal.training import main as train

    run_dir = default_run_dir(gallery, data_dir, cache_dir)
    if is_trained(run_dir):
        return run_dir
    argv = ["--model", DEFAULT_MODEL, "--dataset", f"{gallery}_features"]
    argv += [*DEFAULT_TRAINING[gallery], "--output_dir", str(run_dir)]
    if data_dir is not None:
        argv += ["--data_dir", str(data_dir)]
    if (run_dir / "checkpoints").is_dir():
        argv.append("--resume")
    logger.info("training the default model: %s", " ".join(argv))
    train(argv)
    return run_dir


class GalleryIndex:
    """A gallery embedded by one checkpoint: photos searched by sentences, texts by photos,
    both through `RetrievalIndex` with the checkpoint's own metric."""

    def __init__(self, checkpoint: Checkpoint, gallery: Gallery, photo_embeds, text_embeds):
        self.checkpoint, self.gallery = checkpoint, gallery
        metric = checkpoint.metric
        dim = photo_embeds.shape[1]
        if metric == "learned":
            scorer = checkpoint.model.similarity
            self.photos = RetrievalIndex(dim, scorer, query_modality="text")
            self.texts = RetrievalIndex(dim, scorer, query_modality="image")
        else:
            self.photos, self.texts = RetrievalIndex(dim, metric), RetrievalIndex(dim, metric)
        self.photos.add(photo_embeds)
        self.texts.add(text_embeds)

    @classmethod
    def build(cls, checkpoint: Checkpoint, gallery: Gallery, cache_dir: Path) -> GalleryIndex:
        """Embed the gallery with the checkpoint, or read the embeddings cached by an earlier
        build of the same weights and gallery."""
        path = (
            cache_dir
            / "indexes"
            / (f"{checkpoint.fingerprint[:16]}-{gallery.fingerprint[:16]}")
            / FILENAME_OF_EMBEDDINGS
        )
        if path.is_file():
            embeds = load_file(path)
        else:
            embeds = {
                "photos": checkpoint.embed_features(
                    gallery.image_features, "image", f"embedding {gallery.name} photos"
                ),
                "texts": checkpoint.embed_features(
                    gallery.text_features, "text", f"embedding {gallery.name} texts"
                ),
            }
            atomic_write(path, save({k: v.contiguous() for k, v in embeds.items()}))
        return cls(checkpoint, gallery, embeds["photos"], embeds["texts"])

    def describe(self) -> dict[str, str]:
        c = self.checkpoint
        return {
            "method": c.method,
            "metric": METRIC_NAMES.get(c.metric, c.metric),
            "gallery": self.gallery.summary,
            "trained_on": c.trained_on or "unknown data",
            "checkpoint": c.name,
        }

    def search_text(self, query: str, k: int) -> list[tuple[int, float]]:
        """The k gallery photos best matching a sentence: (photo row, score), best first."""
        query = check_text(query)
        scores, ids = self.photos.search(self.checkpoint.embed_text(query), check_k(k))
        return list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))

    def search_photo(self, photo: Image.Image, k: int) -> list[tuple[int, float]]:
        """The k gallery texts best matching a photo: (text row, score), best first."""
        photo = fit_to_gallery(photo, self.gallery.photo_size)
        scores, ids = self.texts.search(self.checkpoint.embed_photo(photo), check_k(k))
        return list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))


def check_k(k) -> int:
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_RESULTS:
        raise SearchError(f"the number of results must be a whole number from 1 to {MAX_RESULTS}")
    return k


def check_text(query) -> str:
    """The query, stripped; refused when empty or longer than a few sentences (the text tower
    reads a long query window by window)."""
    if not isinstance(query, str) or not query.strip():
        raise SearchError("Type a sentence to search for, e.g. “a dog runs on the beach”.")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(
            f"The text is {len(query):,} characters long; keep it under {MAX_QUERY_CHARS:,} "
            "(a sentence or two)."
        )
    return query


def open_photo(path: str | os.PathLike | None) -> Image.Image:
    """An uploaded file as an RGB photo (EXIF orientation applied), or a `SearchError` saying
    why not: no file, not an image, corrupt, too large."""
    if path is None:
        raise SearchError("Upload a photo, or pick one of the examples.")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise SearchError(
            f"The file is {size / 2**20:.0f} MB; upload a photo under "
            f"{MAX_UPLOAD_BYTES // 2**20} MB."
        )
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise SearchError(
                    f"The image is {width:,}×{height:,} pixels; the limit is "
                    f"{MAX_PIXELS / 1e6:.0f} megapixels. Upload a smaller copy."
                )
            image.load()
            photo = ImageOps.exif_transpose(image).convert("RGB")
    except SearchError:
        raise
    except Image.DecompressionBombError:
        raise SearchError(
            f"The image is too large to open safely; the limit is {MAX_PIXELS / 1e6:.0f} "
            "megapixels. Upload a smaller copy."
        ) from None
    except UnidentifiedImageError:
        raise SearchError(
            "The file is not an image this app can read: upload a JPEG, PNG or WebP photo."
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise SearchError("The image file is corrupt or cut short: upload another copy.") from None
    return photo


class Engine:
    """The galleries and checkpoints a Space serves, loaded on first use and kept.

    Args:
        cache_dir: where default models, gallery embeddings and photo files are cached.
        data_dirs: each gallery's dataset folder (raw or saved); None for the package default.
        models: checkpoints to offer (folders or Hub ids). With none, the default model of
            `gallery` is trained on first start (`prepare`) and offered.
        gallery: the gallery a new session starts with.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        data_dirs: dict[str, str | None] | None = None,
        models: list[str] | None = None,
        gallery: str = "flickr8k",
    ):
        if gallery not in GALLERIES:
            raise SearchError(f"unknown gallery {gallery!r}: choose one of {sorted(GALLERIES)}")
        self.cache_dir = Path(cache_dir)
        self.data_dirs = {name: (data_dirs or {}).get(name) for name in GALLERIES}
        self.gallery = gallery
        self.sources: dict[str, str] = {}  # name shown → folder or Hub id
        for source in models or []:
            self.sources[self._unique(_display_name(source))] = source
        self.given = list(self.sources)
        self._galleries: dict[str, Gallery] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._indexes: dict[tuple[str, str], GalleryIndex] = {}
        self._lock = threading.RLock()
        self.ready = threading.Event()
        self.status = "starting"
        self.failure: str | None = None
        self.started = time.perf_counter()
        self.default_checkpoint: str | None = self.given[0] if self.given else None

    def _unique(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.sources:
            candidate, n = f"{name} ({n})", n + 1
        return candidate

    def discover(self) -> None:
        """Offer every default model trained in the cache folder, besides the given ones."""
        for run_dir in sorted((self.cache_dir / "models").glob("*")):
            if is_trained(run_dir) and str(run_dir) not in self.sources.values():
                dataset = json.loads((run_dir / RESULTS_FILE).read_text())["dataset"]
                method = run_dir.name.split("-")[0]
                name = f"{METHOD_NAMES.get(method, method)} on {dataset} (default)"
                self.sources[self._unique(name)] = str(run_dir)

    def prepare(self) -> None:
        """Get the first session's model and gallery index ready: train the default model if
        no checkpoint was given and none is cached, then load and index. Sets `ready`, or
        `failure` with a message for the page."""
        try:
            self.gallery_data(self.gallery)
            if self.default_checkpoint is None:
                data_dir = self.data_dirs[self.gallery]
                run_dir = default_run_dir(self.gallery, data_dir, self.cache_dir)
                if not is_trained(run_dir):
                    self.status = "training"
                    train_default_model(self.gallery, data_dir, self.cache_dir)
                self.discover()
                self.default_checkpoint = next(
                    n for n, s in self.sources.items() if s == str(run_dir)
                )
            else:
                self.discover()
            self.status = "indexing"
            self.index(self.default_checkpoint, self.gallery)
            self.status = "ready"
            self.ready.set()
            logger.info("ready after %.1f s", time.perf_counter() - self.started)
        except SearchError as e:
            self.failure = str(e)
            logger.error("the Space could not get ready: %s", e)
        except Exception:
            self.failure = "the Space could not get ready; the server log says why"
            logger.exception("the Space could not get ready")

    def example_photos(self, n: int) -> list[list[str]]:
        """`n` photos of the first session's gallery, evenly spread, as Gradio examples."""
        raw = raw_test_split(self.gallery, self.data_dirs[self.gallery])
        rows = np.linspace(0, len(raw) - 1, n).round().astype(int).tolist()
        return [[f] for f in photo_files(raw, self.cache_dir, rows)]

    def photo_folders(self) -> list[str]:
        """The folders gallery photos are served from (the galleries whose data is here)."""
        folders = {str(self.cache_dir / "photos")}
        for name in GALLERIES:
            try:
                raw = raw_test_split(name, self.data_dirs[name])
            except SearchError:
                continue
            folders.update(str(Path(f).parent) for f in photo_files(raw, self.cache_dir, [0]))
        return sorted(folders)

    # Each getter answers from memory without the lock, so that searches on what is loaded
    # never wait for another session's model or gallery to load.
    def gallery_data(self, name: str) -> Gallery:
        if name in self._galleries:
            return self._galleries[name]
        with self._lock:
            if name not in self._galleries:
                self._galleries[name] = load_gallery(name, self.data_dirs.get(name), self.cache_dir)
            return self._galleries[name]

    def checkpoint(self, name: str) -> Checkpoint:
        if name in self._checkpoints:
            return self._checkpoints[name]
        with self._lock:
            if name not in self._checkpoints:
                if name not in self.sources:
                    raise SearchError(f"no checkpoint called {name!r} here")
                self._checkpoints[name] = load_checkpoint(self.sources[name], name)
            return self._checkpoints[name]

    def index(self, checkpoint: str, gallery: str) -> GalleryIndex:
        """The gallery embedded by the checkpoint (built once; kept in memory and on disk)."""
        key = (checkpoint, gallery)
        if key in self._indexes:
            return self._indexes[key]
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = GalleryIndex.build(
                    self.checkpoint(checkpoint), self.gallery_data(gallery), self.cache_dir
                )
            return self._indexes[key]


def _display_name(source: str) -> str:
    """A checkpoint's name in the selector: a Hub id as it is, a folder by its own name (its
    run's name for a run's `model/` folder), never the whole server path."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    path = path.resolve()
    if path.name == "model":
        path = path.parent
    return path.name
