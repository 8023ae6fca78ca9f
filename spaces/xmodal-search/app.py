"""Cross-modal search with hf_xmodal models: photos found by a sentence, sentences by a photo.

    python spaces/xmodal-search/app.py                          # trains its default model once
    python spaces/xmodal-search/app.py --model runs/daml-flickr8k_features-seed0
    python spaces/xmodal-search/app.py --model user/daml-flickr8k  # a Hub model id
    XMODAL_MODEL=user/daml-flickr8k python spaces/xmodal-search/app.py  # as a Space sets it

With no model given, the first start trains the default model on the gallery dataset's tower
features (a few minutes on two CPU cores; the page says it is preparing meanwhile) and caches it
with the gallery's embeddings, so that later starts take seconds.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import torch
from engine import (
    DEFAULT_MODEL,
    GALLERIES,
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    MAX_UPLOAD_BYTES,
    METHOD_NAMES,
    Engine,
    GalleryIndex,
    SearchError,
    open_photo,
)

logger = logging.getLogger("xmodal_space")

CONCURRENCY = 2
"""Searches run at once. Each is one short forward pass of a tower (~10-60 ms on a core) plus a
brute-force scan of at most a few thousand vectors; two at once, one torch thread each, keep
both CPU cores busy without the threads of one search competing with another's."""
QUEUE_SIZE = 64
"""Searches waiting beyond this are turned away with "the queue is full" rather than waiting
(64 searches ≈ 2-4 s of work at two at a time)."""
TORCH_THREADS = 1
DEFAULT_RESULTS = 8
EXAMPLE_PHOTOS = 6
POLL_SECONDS = 2.0
CACHE_DIR = Path.home() / ".cache" / "hf_xmodal" / "space"


def unopened_upload(payload) -> str | None:
    """An uploaded photo's file, unopened: replaces the image input's own preprocessing (which
    opens it with PIL and fails with a bare "Error" on a non-image), so that the app itself
    tells a non-image, corrupt or oversized file apart."""
    return None if payload is None else payload.path


def friendly(fn):
    """Show a `SearchError` as it is, and any other failure as a short note (the traceback
    goes to the server log only)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SearchError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            logger.exception("search failed")
            raise gr.Error(
                "Something went wrong on the server while searching; please try again.",
                print_exception=False,
            ) from None

    return wrapper


def _score(value: float, metric: str) -> str:
    return f"distance {-value:.0f}" if metric == "hamming" else f"{value:.3f}"


def describe(index: GalleryIndex) -> str:
    info = index.describe()
    return (
        f"**Method** {info['method']} · **metric** {info['metric']} · "
        f"**gallery** {info['gallery']} · **model** {info['checkpoint']}, "
        f"trained on {info['trained_on']}"
    )


def preparing(engine: Engine) -> str:
    if engine.failure:
        return f"**Not available**: {engine.failure}"
    minutes = (time.perf_counter() - engine.started) / 60
    what = {
        "training": f"training the default model ({METHOD_NAMES[DEFAULT_MODEL]}) on the "
        f"{engine.gallery} training split (a few minutes, once; later starts skip this)",
        "indexing": "embedding the gallery",
    }.get(engine.status, "loading the gallery (its tower features are extracted once)")
    return f"**Preparing**: {what} — {minutes:.1f} min so far. Search opens when it is ready."


def build_app(engine: Engine) -> gr.Blocks:
    """The page: text → images, image → texts, and the model and gallery selector."""

    def selected(selection: dict | None) -> GalleryIndex:
        if not engine.ready.is_set():
            raise SearchError(
                engine.failure or "The Space is still preparing its model; try again in a minute."
            )
        selection = selection or {}
        return engine.index(
            selection.get("checkpoint", engine.default_checkpoint),
            selection.get("gallery", engine.gallery),
        )

    @friendly
    def search_text(query: str, k: int, selection: dict | None):
        index = selected(selection)
        gallery, metric = index.gallery, index.checkpoint.metric
        hits = index.search_text(query, k)
        photos = [
            (gallery.photos[row], f"#{rank} · {_score(score, metric)} · {texts[0]}")
            for rank, (row, score) in enumerate(hits, 1)
            for texts in [gallery.photo_texts[row]]
        ]
        table = [
            [rank, _score(score, metric), " / ".join(gallery.photo_texts[row])]
            for rank, (row, score) in enumerate(hits, 1)
        ]
        return photos, table

    @friendly
    def search_photo(photo: str | None, k: int, selection: dict | None):
        index = selected(selection)
        gallery, metric = index.gallery, index.checkpoint.metric
        hits = index.search_photo(open_photo(photo), k)
        return [
            [rank, _score(score, metric), gallery.texts[row]]
            for rank, (row, score) in enumerate(hits, 1)
        ]

    @friendly
    def choose(checkpoint: str, gallery: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        if not engine.ready.is_set():
            raise SearchError("The Space is still preparing its model; try again in a minute.")
        index = engine.index(checkpoint, gallery)
        return {"checkpoint": checkpoint, "gallery": gallery}, describe(index)

    def status(selection: dict | None):
        """The page's header while preparing (and the timer stays on), then the session's
        method, metric and gallery."""
        if not engine.ready.is_set():
            return preparing(engine), gr.Timer(active=engine.failure is None), gr.Dropdown()
        selection = selection or {}
        index = engine.index(
            selection.get("checkpoint", engine.default_checkpoint),
            selection.get("gallery", engine.gallery),
        )
        choices = gr.Dropdown(choices=list(engine.sources), value=index.checkpoint.name)
        return describe(index), gr.Timer(active=False), choices

    with gr.Blocks(title="hf_xmodal cross-modal search") as demo:
        gr.Markdown(
            "# Cross-modal search\nFind photos with a sentence, or sentences with a photo. "
            "The models are hf_xmodal's deep cross-media retrieval methods, all searching "
            "through one retrieval index."
        )
        selection = gr.State(None)
        header = gr.Markdown(preparing(engine), elem_id="status")
        timer = gr.Timer(POLL_SECONDS)
        with gr.Tab("Text → images"):
            with gr.Row():
                query = gr.Textbox(
                    label="Sentence",
                    placeholder="a dog runs on the beach",
                    max_length=MAX_QUERY_CHARS,
                    scale=4,
                    elem_id="query",
                )
                k_photos = gr.Slider(1, MAX_RESULTS, DEFAULT_RESULTS, step=1, label="Results")
            text_button = gr.Button("Search photos", variant="primary", elem_id="search-text")
            photos = gr.Gallery(label="Photos", columns=4, height="auto", elem_id="photos")
            photo_table = gr.Dataframe(
                headers=["rank", "score", "the photo's texts"],
                label="Scores and captions",
                wrap=True,
                column_widths=["8%", "12%", "80%"],
            )
        with gr.Tab("Image → texts"):
            with gr.Row():
                photo = gr.Image(label="Photo", type="filepath", elem_id="photo")
                photo.preprocess = unopened_upload
                k_texts = gr.Slider(1, MAX_RESULTS, DEFAULT_RESULTS + 2, step=1, label="Results")
            gr.Examples(engine.example_photos(EXAMPLE_PHOTOS), inputs=[photo], label="Examples")
            photo_button = gr.Button("Search texts", variant="primary", elem_id="search-photo")
            text_table = gr.Dataframe(
                headers=["rank", "score", "text"],
                label="Texts",
                wrap=True,
                column_widths=["8%", "12%", "80%"],
                elem_id="texts",
            )
        with gr.Tab("Model"):
            checkpoint = gr.Dropdown(list(engine.sources), label="Checkpoint")
            gallery = gr.Dropdown(
                [(title, name) for name, title in GALLERIES.items()],
                value=engine.gallery,
                label="Gallery",
            )
            use = gr.Button("Use this model and gallery")

        text_event = dict(fn=search_text, inputs=[query, k_photos, selection])
        text_button.click(**text_event, outputs=[photos, photo_table], api_name="search_text")
        query.submit(**text_event, outputs=[photos, photo_table], api_name=False)
        photo_button.click(
            search_photo,
            inputs=[photo, k_texts, selection],
            outputs=[text_table],
            api_name="search_photo",
        )
        use.click(
            choose,
            inputs=[checkpoint, gallery],
            outputs=[selection, header],
            api_name="choose",
            concurrency_limit=1,  # loading a model or embedding a gallery takes the machine
        )
        for trigger in (demo.load, timer.tick):
            trigger(
                status,
                inputs=[selection],
                outputs=[header, timer, checkpoint],
                api_name=False,
                queue=False,
            )
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        help="a trained checkpoint: model or run folder, or Hub model id (repeat to offer "
        "several; env XMODAL_MODEL, comma-separated). Default: train the default model once",
    )
    parser.add_argument(
        "--gallery", choices=sorted(GALLERIES), default=env("XMODAL_GALLERY", "flickr8k")
    )
    for name in GALLERIES:
        parser.add_argument(
            f"--{name}_dir",
            default=env(f"XMODAL_{name.upper()}_DIR"),
            help=f"the {name} dataset folder, raw or saved (default: the package's location)",
        )
    parser.add_argument("--cache_dir", default=env("XMODAL_CACHE", str(CACHE_DIR)))
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    if args.model is None and env("XMODAL_MODEL"):
        args.model = [m.strip() for m in env("XMODAL_MODEL").split(",") if m.strip()]
    return args


def create_engine(args: argparse.Namespace) -> Engine:
    """The engine the arguments describe; a given checkpoint that cannot load stops here."""
    engine = Engine(
        args.cache_dir,
        data_dirs={name: getattr(args, f"{name}_dir") for name in GALLERIES},
        models=args.model,
        gallery=args.gallery,
    )
    for name in engine.given:
        engine.checkpoint(name)
    return engine


def create(args: argparse.Namespace) -> tuple[Engine, gr.Blocks]:
    """The engine, preparing in the background, and its page."""
    engine = create_engine(args)
    threading.Thread(target=_prepare_then_serve, args=(engine,), daemon=True).start()
    return engine, build_app(engine)


def _prepare_then_serve(engine: Engine) -> None:
    engine.prepare()
    torch.set_num_threads(TORCH_THREADS)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    args = parse_args(argv)
    try:
        engine, demo = create(args)
    except SearchError as e:
        sys.exit(f"error: {e}")
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=MAX_UPLOAD_BYTES,
        allowed_paths=engine.photo_folders(),
    )


if __name__ == "__main__":
    main()
