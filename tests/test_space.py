"""The Gradio Space (`spaces/xmodal-search`): its functions, an in-process launch queried with
`gradio_client`, a Hub checkpoint served from the local Hub, and a headless Chromium session.

The default suite runs on a tiny Flickr8k-format gallery cut from the real data (16 / 6 / 8
photos); the slow test serves the real test split with the real default model.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

gr = pytest.importorskip(
    "gradio", reason="the Space needs the 'space' extra: pip install '.[space]'"
)
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

from hf_xmodal.data.flickr8k import FLICKR8K_SPLIT_FILES  # noqa: E402
from hf_xmodal.evaluation import hamming_distance  # noqa: E402
from hf_xmodal.models import (  # noqa: E402
    DSCMRConfig,
    DSCMRModel,
    UNCSMConfig,
    UNCSMModel,
    XmodalProcessor,
)

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "xmodal-search"
REAL_DATA = ROOT.parent / "shared" / "data"
SCREENSHOTS = ROOT / "runs" / "space-screenshots"
CHROMIUM = Path("/usr/bin/chromium")
sys.path.insert(0, str(SPACE))
import app  # noqa: E402
import engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import USER, HubServer  # noqa: E402
from test_hub import TOKEN, client_env, finish, python  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (REAL_DATA / "flickr8k").is_dir(),
    reason="real data folder ../shared/data/flickr8k (next to the repository) is absent",
)


def tiny_flickr8k(root: Path, sizes=(("train", 16), ("validation", 6), ("test", 8))) -> Path:
    """A raw Flickr8k folder with the first few photos of each official split."""
    source = REAL_DATA / "flickr8k"
    lines = (source / "captions.txt").read_text().splitlines()
    captions: dict[str, list[str]] = {}
    for line in lines[1:]:
        name = line.split(",", 1)[0]
        captions.setdefault(name, []).append(line)
    (root / "images").mkdir(parents=True)
    rows = [lines[0]]
    for split, n in sizes:
        list_name = FLICKR8K_SPLIT_FILES[split]
        names = [
            name
            for name in (source / list_name).read_text().split()
            if (source / "images" / name).is_file()
        ][:n]
        (root / list_name).write_text("\n".join(names) + "\n")
        for name in names:
            shutil.copy(source / "images" / name, root / "images" / name)
            rows += captions[name]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_data():
    """Built once under runs/ (git-ignored): its photos keep their paths, so the package's
    tower-feature cache serves later runs."""
    folder = ROOT / "runs" / "space-test-data" / "flickr8k"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        built = tiny_flickr8k(Path(tempfile.mkdtemp(dir=folder.parent)) / "flickr8k")
        try:
            built.rename(folder)  # whole, or not at all
        except OSError:
            assert folder.is_dir()  # another run built it first
        shutil.rmtree(built.parent, ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory):
    """A first start on the tiny gallery: the default model trained, the gallery indexed."""
    cache = tmp_path_factory.mktemp("space-cache")
    space = engine.Engine(cache, {"flickr8k": str(tiny_data)})
    space.prepare()
    assert space.failure is None and space.ready.is_set()
    return space


@pytest.fixture(scope="module")
def index(prepared):
    return prepared.index(prepared.default_checkpoint, "flickr8k")


@pytest.fixture(scope="module")
def served(prepared):
    """The page launched in this process, as `python app.py` launches it."""
    demo = app.build_app(prepared)
    demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        max_file_size=engine.MAX_UPLOAD_BYTES,
        allowed_paths=prepared.photo_folders(),
    )
    yield demo
    demo.close()


# --- first start, warm start ----------------------------------------------------------------
def test_first_start_trains_and_caches_then_later_starts_reuse_everything(
    prepared, tiny_data, monkeypatch
):
    run_dir = engine.default_run_dir("flickr8k", str(tiny_data), prepared.cache_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "flickr8k_features" and results["model_type"] == "daml"
    assert results["split_sizes"] == {"train": 80, "validation": 30, "test": 40}  # 5 captions each
    assert prepared.sources[prepared.default_checkpoint] == str(run_dir)
    cached = list((prepared.cache_dir / "indexes").glob(f"*/{engine.FILENAME_OF_EMBEDDINGS}"))
    assert len(cached) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("a later start must not train or embed the gallery again")

    monkeypatch.setattr(engine, "train_default_model", refuse)
    monkeypatch.setattr(engine.Checkpoint, "embed_features", refuse)
    again = engine.Engine(prepared.cache_dir, {"flickr8k": str(tiny_data)})
    again.prepare()
    assert again.failure is None and again.ready.is_set()
    assert again.default_checkpoint == prepared.default_checkpoint
    first, later = (e.index(e.default_checkpoint, "flickr8k").photos for e in (prepared, again))
    probe = torch.ones(1, first.dim)
    torch.testing.assert_close(first.scores(probe), later.scores(probe))


def test_gallery_rows_line_up(index):
    gallery = index.gallery
    assert len(gallery.photos) == 8 and len(gallery.texts) == 40
    for text, photo in zip(gallery.texts, gallery.text_photo, strict=True):
        assert text in gallery.photo_texts[photo]
    assert all(Path(p).is_file() for p in gallery.photos)


# --- searching --------------------------------------------------------------------------------
def processed(checkpoint, image=None, text=None, rows=slice(None)) -> dict:
    """A gallery's tower features of one medium through the checkpoint's processor, which
    standardises them as in training."""
    if image is not None:
        return dict(checkpoint.processor(image_features=image.image_features[rows]))
    return dict(checkpoint.processor(text_features=text.text_features[rows]))


def test_text_search_is_the_models_cosine_ranking(index):
    checkpoint, gallery = index.checkpoint, index.gallery
    query = gallery.photo_texts[3][0]
    hits = index.search_text(f"  {query} ", 5)
    with torch.no_grad():
        photos = checkpoint.model.get_image_features(**processed(checkpoint, image=gallery))
    expected = F.normalize(checkpoint.embed_text(query), dim=1) @ F.normalize(photos, dim=1).T
    scores, ids = expected[0].topk(5)
    assert [row for row, _ in hits] == ids.tolist()
    assert [s for _, s in hits] == pytest.approx(scores.tolist(), abs=1e-5)


def test_photo_search_is_the_models_cosine_ranking(index):
    checkpoint, gallery = index.checkpoint, index.gallery
    photo = engine.open_photo(gallery.photos[2])
    hits = index.search_photo(photo, 7)
    with torch.no_grad():
        texts = checkpoint.model.get_text_features(**processed(checkpoint, text=gallery))
        from_features = checkpoint.model.get_image_features(
            **processed(checkpoint, image=gallery, rows=slice(2, 3))
        )
    query = checkpoint.embed_photo(photo)
    # An uploaded gallery photo embeds as its cached tower features do.
    torch.testing.assert_close(query, from_features, atol=2e-3, rtol=1e-3)
    expected = F.normalize(query, dim=1) @ F.normalize(texts, dim=1).T
    scores, ids = expected[0].topk(7)
    assert [row for row, _ in hits] == ids.tolist()
    assert [s for _, s in hits] == pytest.approx(scores.tolist(), abs=1e-5)


def _features_checkpoint(model, folder: Path) -> engine.Checkpoint:
    """Save a tower-feature model without its towers; the Space adds them when loading."""
    model.save_pretrained(folder)
    XmodalProcessor(image_feature_dim=1280, text_feature_dim=384).save_pretrained(folder)
    return engine.load_checkpoint(str(folder))


def test_learned_metric_searches_through_the_index(index, tmp_path):
    torch.manual_seed(0)
    config = UNCSMConfig(image_feature_dim=1280, text_feature_dim=384, num_labels=8, embed_dim=32)
    checkpoint = _features_checkpoint(UNCSMModel(config).eval(), tmp_path / "uncsm")
    assert checkpoint.metric == "learned" and checkpoint.method == "UNCSM"
    assert checkpoint.model.config.input_mode == "raw"
    learned = engine.GalleryIndex.build(checkpoint, index.gallery, tmp_path / "cache")
    gallery, model = index.gallery, checkpoint.model
    query = gallery.photo_texts[1][0]
    with torch.no_grad():
        photos = model.get_image_features(gallery.image_features)
        texts = model.get_text_features(gallery.text_features)
        by_text = model.similarity(checkpoint.embed_text(query), photos, query_modality="text")
        photo = engine.open_photo(gallery.photos[1])
        by_photo = model.similarity(checkpoint.embed_photo(photo), texts, query_modality="image")
    for hits, expected in (
        (learned.search_text(query, 4), by_text),
        (learned.search_photo(photo, 6), by_photo),
    ):
        scores, ids = expected[0].sort(descending=True, stable=True)
        assert [row for row, _ in hits] == ids[: len(hits)].tolist()
        assert [s for _, s in hits] == pytest.approx(scores[: len(hits)].tolist(), abs=1e-5)


def test_hamming_codes_search_through_the_index(index, tmp_path):
    """A cosine model's embeddings, binarised, stand in for a hashing model's codes."""
    torch.manual_seed(0)
    config = DSCMRConfig(
        image_feature_dim=1280, text_feature_dim=384, num_labels=8, embed_dim=48, hidden_dims=[64]
    )
    checkpoint = _features_checkpoint(DSCMRModel(config).eval(), tmp_path / "codes")
    checkpoint.model.config.retrieval_metric = "hamming"
    coded = engine.GalleryIndex.build(checkpoint, index.gallery, tmp_path / "cache")
    assert coded.photos.metric == coded.texts.metric == "hamming"
    query = index.gallery.photo_texts[5][1]
    hits = coded.search_text(query, 8)
    codes = checkpoint.embed_features(index.gallery.image_features, "image", "codes")
    distances = hamming_distance(checkpoint.embed_text(query), codes)[0]
    assert sorted(-s for _, s in hits) == sorted(distances.tolist())
    assert [-s for _, s in hits] == [distances[row].item() for row, _ in hits]
    assert app._score(hits[0][1], "hamming") == f"distance {distances.min().item()}"


# --- errors a person understands --------------------------------------------------------------
def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(exist_ok=True)
    photo = folder / "photo.jpg"
    Image.new("RGB", (64, 48), "red").save(photo, quality=90)
    files = {
        "text file": (folder / "notes.jpg", "not an image"),
        "cut short": (folder / "half.jpg", "corrupt or cut short"),
        "too many pixels": (folder / "huge.png", "megapixels"),
        "too many bytes": (folder / "big.jpg", "MB"),
    }
    files["text file"][0].write_text("this is not a photo\n" * 20)
    files["cut short"][0].write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    Image.new("1", (7000, 6000)).save(files["too many pixels"][0])
    files["too many bytes"][0].write_bytes(os.urandom(engine.MAX_UPLOAD_BYTES + 1))
    return files


def test_bad_input_gets_a_message_for_a_person(index, tmp_path):
    for query, message in (
        ("", "Type a sentence"),
        ("   \n ", "Type a sentence"),
        ("word " * 300, "characters long"),
    ):
        with pytest.raises(engine.SearchError, match=message):
            index.search_text(query, 5)
    long = "a brown dog runs across the green grass of a park " * 8  # > one 64-token window
    assert index.checkpoint.processor(text=[long])["input_ids"].ndim == 3
    assert len(index.search_text(long, 5)) == 5
    for k in (0, 51, 2.5, "3", True):
        with pytest.raises(engine.SearchError, match="number of results"):
            index.search_text("a dog", k)
    with pytest.raises(engine.SearchError, match="Upload a photo"):
        engine.open_photo(None)
    for path, message in _bad_files(tmp_path).values():
        with pytest.raises(engine.SearchError, match=message) as error:
            engine.open_photo(path)
        assert str(tmp_path) not in str(error.value)


def test_a_checkpoint_that_is_missing_or_unusable_is_refused_clearly(tmp_path):
    with pytest.raises(engine.SearchError, match="neither a folder here nor a model on the Hub"):
        engine.load_checkpoint(str(tmp_path / "no-such-run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(engine.SearchError, match="holds no checkpoint"):
        engine.load_checkpoint(str(tmp_path / "empty"))
    wikipedia = DSCMRModel(DSCMRConfig(num_labels=10, embed_dim=8, hidden_dims=[16]))
    wikipedia.save_pretrained(tmp_path / "wiki")
    XmodalProcessor().save_pretrained(tmp_path / "wiki")
    with pytest.raises(engine.SearchError, match="takes 128-d image and 10-d text features"):
        engine.load_checkpoint(str(tmp_path / "wiki"))
    with pytest.raises(SystemExit, match="error: no checkpoint"):
        app.main(["--model", str(tmp_path / "no-such-run"), "--cache_dir", str(tmp_path)])


def test_checkpoint_names_show_no_server_path(tmp_path):
    run = tmp_path / "runs" / "daml-flickr8k_features-seed0"
    (run / "model").mkdir(parents=True)
    assert engine._display_name(str(run / "model")) == "daml-flickr8k_features-seed0"
    assert engine._display_name(str(run)) == "daml-flickr8k_features-seed0"
    assert engine._display_name("user/daml-flickr8k") == "user/daml-flickr8k"


# --- the page, over HTTP ----------------------------------------------------------------------
def test_gradio_client_searches_both_ways(served, index, tmp_path):
    client = Client(served.local_url, verbose=False)
    photos, table = client.predict("a dog in the snow", 4, api_name="/search_text")
    assert len(photos) == 4 and all(Path(p["image"]).is_file() for p in photos)
    assert len(table["data"]) == 4 and [r[0] for r in table["data"]] == [1, 2, 3, 4]
    scores = [float(r[1]) for r in table["data"]]
    assert scores == sorted(scores, reverse=True)
    assert photos[0]["caption"].startswith(f"#1 · {table['data'][0][1]}")

    texts = client.predict(handle_file(index.gallery.photos[0]), 6, api_name="/search_photo")
    assert len(texts["data"]) == 6
    assert {r[2] for r in texts["data"]} <= set(index.gallery.texts)
    scores = [float(r[1]) for r in texts["data"]]
    assert scores == sorted(scores, reverse=True)

    header = client.predict(index.checkpoint.name, "flickr8k", api_name="/choose")
    assert "**Method** DAML" in header and "cosine" in header and "Flickr8k" in header

    with pytest.raises(AppError, match="Type a sentence"):
        client.predict("   ", 4, api_name="/search_text")
    for path, message in _bad_files(tmp_path).values():
        if path.stat().st_size > 1 << 20:
            continue  # gradio's own max_file_size turns it away before the app
        with pytest.raises(AppError, match=message) as error:
            client.predict(handle_file(str(path)), 3, api_name="/search_photo")
        assert "Traceback" not in str(error.value) and "/" not in str(error.value)


def test_the_page_says_it_is_preparing_until_ready(tmp_path):
    waiting = engine.Engine(tmp_path, {"flickr8k": str(tmp_path / "nothing")})
    assert "Preparing" in app.preparing(waiting)
    waiting.prepare()  # the data is missing: the page says so, without the path
    assert waiting.failure == "The Flickr8k test photos are not on this server."
    assert str(tmp_path) not in app.preparing(waiting)


# --- a real browser ---------------------------------------------------------------------------
def browse(url: str, out: Path, query: str, photo: str, prefix: str) -> list[Path]:
    """Type a query and search, then upload a photo and search, in headless Chromium; returns
    the screenshots (also copied to runs/space-screenshots/)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is absent: apt-get install -y chromium")
    shots = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            page.locator("#status").get_by_text("Method").wait_for(timeout=120_000)
            page.locator("#query textarea").fill(query)
            page.locator("#search-text").click()
            page.locator("#photos img").first.wait_for(timeout=60_000)
            assert page.locator("#photos img").count() >= 1
            shots.append(out / f"{prefix}text-to-images.png")
            page.screenshot(path=shots[-1], full_page=True)

            page.get_by_role("tab", name="Image → texts").click()
            page.locator("#photo input[type=file]").set_input_files(photo)
            page.locator("#photo img").first.wait_for(timeout=30_000)
            page.locator("#search-photo").click()
            rows = page.locator("#texts [role=row]:visible")  # the header row, then the texts
            page.wait_for_function(
                "() => Number(document.querySelector('#texts [role=grid]')"
                ".getAttribute('aria-rowcount')) > 3",
                timeout=60_000,
            )
            assert rows.count() >= 4
            assert rows.nth(1).inner_text().split()[0] == "1"
            shots.append(out / f"{prefix}image-to-texts.png")
            page.screenshot(path=shots[-1], full_page=True)
        finally:
            browser.close()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        shutil.copy(shot, SCREENSHOTS / shot.name)
    return shots


def test_a_person_searches_in_chromium(served, index, tmp_path):
    shots = browse(served.local_url, tmp_path, "a dog runs", index.gallery.photos[4], "tiny-")
    assert all(s.stat().st_size > 10_000 for s in shots)


# --- the Space folder and the Hub -------------------------------------------------------------
def test_space_card_and_requirements():
    card = (SPACE / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gr.__version__
    assert (SPACE / meta["app_file"]).is_file()
    colors = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert {meta["colorFrom"], meta["colorTo"]} <= colors
    assert len(meta["short_description"]) <= 60
    assert meta["license"] == "apache-2.0"
    for key in ("models", "datasets"):
        assert meta[key] and all(isinstance(v, str) and v.count("/") == 1 for v in meta[key])
    lines = [line for line in (SPACE / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    assert [r.name for r in requirements] == ["hf_xmodal"]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {process.communicate()[1][-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the app did not answer at {url} in {timeout} s")


def test_a_hub_checkpoint_serves_from_the_local_hub(prepared, tiny_data, tmp_path):
    """`app.py --model <Hub id>` in a fresh process, against the local Hub server."""
    run_dir = Path(prepared.sources[prepared.default_checkpoint])
    repo_id = f"{USER}/space-model"
    with HubServer(token=TOKEN) as hub:
        env = client_env(hub.url, tmp_path / "home")
        upload = (
            "from huggingface_hub import HfApi\napi = HfApi()\n"
            f"api.create_repo({repo_id!r})\n"
            f"api.upload_folder(repo_id={repo_id!r}, folder_path={str(run_dir / 'model')!r})\n"
        )
        finish(python(["-c", upload], env, tmp_path))

        missing = python(
            [str(SPACE / "app.py"), "--model", f"{USER}/nothing-here", "--cache_dir", "c"],
            env,
            tmp_path,
        )
        port = free_port()
        args = ["--model", repo_id, "--flickr8k_dir", str(tiny_data), "--port", str(port)]
        server = python(
            [str(SPACE / "app.py"), *args, "--cache_dir", str(tmp_path / "cache")], env, tmp_path
        )
        try:
            _, err = missing.communicate(timeout=300)
            assert missing.returncode == 1
            assert f"error: no checkpoint '{USER}/nothing-here'" in err and "Traceback" not in err
            url = f"http://127.0.0.1:{port}/"
            _wait_for(url, server)
            client = Client(url, verbose=False)
            header = client.predict(repo_id, "flickr8k", api_name="/choose")
            assert f"**model** {repo_id}" in header
            photos, _ = client.predict("a dog", 3, api_name="/search_text")
            assert len(photos) == 3
        finally:
            server.terminate()
            server.communicate(timeout=60)
        assert any(r.startswith(f"GET /{repo_id}/resolve/") for r in hub.requests)
        assert not hub.errors


# --- the real gallery -------------------------------------------------------------------------
@pytest.mark.slow
def test_real_gallery_reproduces_the_default_models_test_recall(tmp_path):
    """First start on the real Flickr8k data: the Space's own index ranks the test captions'
    photos as the training run's test evaluation did; then a browser session on it."""
    space = engine.Engine(tmp_path / "cache")
    started = time.perf_counter()
    space.prepare()
    assert space.failure is None, space.failure
    print(f"first start (training + indexing): {time.perf_counter() - started:.0f} s")
    index = space.index(space.default_checkpoint, "flickr8k")
    gallery, model = index.gallery, index.checkpoint.model
    assert (len(gallery.photos), len(gallery.texts)) == (1000, 5000)
    with torch.no_grad():
        texts = model.get_text_features(**processed(index.checkpoint, text=gallery))
    _, top = index.photos.search(texts, 10)
    own = torch.as_tensor(gallery.text_photo)[:, None]
    results = json.loads(
        (Path(space.sources[space.default_checkpoint]) / "results.json").read_text()
    )
    for k in (1, 5, 10):
        recall = (top[:, :k] == own).any(1).float().mean().item()
        assert recall == pytest.approx(results["test"][f"r@{k}_t2i"], abs=2e-3)
    assert results["test"]["r@10_t2i"] > 0.3  # far above chance (0.01)

    demo = app.build_app(space)
    demo.launch(
        server_port=free_port(),
        prevent_thread_lock=True,
        allowed_paths=space.photo_folders(),
    )
    try:
        browse(demo.local_url, tmp_path, "two dogs play in the snow", gallery.photos[10], "")
    finally:
        demo.close()
