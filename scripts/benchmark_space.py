"""Load test of the Space: concurrent `gradio_client` searches, by sentence and by photo.

Starts the app in this process as `spaces/xmodal-search/app.py` does (same arguments: the
default model and gallery unless told otherwise; with an empty cache the default model is trained
first), waits until it is ready, then submits all requests at once — half sentences (gallery
captions), half photo uploads (gallery photos) — and prints errors, p50/p95 latency per direction
and the queue settings.

    python scripts/benchmark_space.py                       # 50 requests, the default model
    python scripts/benchmark_space.py --requests 100 -- --model runs/my-run --gallery fashion
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "spaces" / "xmodal-search"))
import app  # noqa: E402
from engine import MAX_UPLOAD_BYTES  # noqa: E402


def percentiles(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    p50, p95 = np.percentile(seconds, [50, 95])
    return f"p50 {p50:.2f} s  p95 {p95:.2f} s  max {max(seconds):.2f} s"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="searches submitted at once")
    parser.add_argument("--k", type=int, default=8, help="results per search")
    parser.add_argument("--ready_timeout", type=float, default=1800)
    parser.add_argument("app_args", nargs="*", help="the app's own arguments, after --")
    args = parser.parse_args(argv)
    app_args = app.parse_args(args.app_args)

    started = time.perf_counter()
    engine, demo = app.create(app_args)
    if not engine.ready.wait(args.ready_timeout):
        raise SystemExit(f"the app was not ready after {args.ready_timeout:.0f} s")
    if engine.failure:
        raise SystemExit(f"the app could not start: {engine.failure}")
    print(f"ready after {time.perf_counter() - started:.1f} s")
    demo.launch(
        server_port=None,  # the first free port from 7860
        prevent_thread_lock=True,
        max_file_size=MAX_UPLOAD_BYTES,
        allowed_paths=engine.photo_folders(),
    )
    gallery = engine.index(engine.default_checkpoint, engine.gallery).gallery
    rng = np.random.default_rng(0)
    texts = [gallery.texts[i] for i in rng.choice(len(gallery.texts), args.requests)]
    photos = [gallery.photos[i] for i in rng.choice(len(gallery.photos), args.requests)]
    jobs = [
        ("text", (texts[i], args.k), "/search_text")
        if i % 2 == 0
        else ("photo", (handle_file(photos[i]), args.k), "/search_photo")
        for i in range(args.requests)
    ]
    # Uploads and downloads wait as a browser would, not httpx's default 5 s.
    client = Client(
        demo.local_url, max_workers=args.requests, verbose=False, httpx_kwargs={"timeout": 300}
    )
    alone = {}
    for kind, inputs, api_name in jobs[:2]:  # one at a time first (also the warm-up)
        begin = time.perf_counter()
        client.predict(*inputs, api_name=api_name)
        alone[kind] = time.perf_counter() - begin

    done: dict[int, float] = {}
    submitted, futures = [], []
    begin = time.perf_counter()
    for i, (_, inputs, api_name) in enumerate(jobs):
        submitted.append(time.perf_counter())
        future = client.submit(*inputs, api_name=api_name)
        future.add_done_callback(lambda _, i=i: done.__setitem__(i, time.perf_counter()))
        futures.append(future)
    errors = []
    for i, future in enumerate(futures):
        try:
            future.result(timeout=600)
        except Exception as e:  # a failed search is counted, and the run goes on
            errors.append(f"{jobs[i][0]} #{i}: {type(e).__name__}: {e}")
    wall = time.perf_counter() - begin
    demo.close()

    latency = {kind: [] for kind in ("text", "photo")}
    for i, (kind, _, _) in enumerate(jobs):
        latency[kind].append(done[i] - submitted[i])
    every = latency["text"] + latency["photo"]
    print(
        f"queue: concurrency limit {app.CONCURRENCY}, queue size {app.QUEUE_SIZE}, "
        f"{app.TORCH_THREADS} torch thread(s) per search"
    )
    print(
        f"gallery: {gallery.summary}; model: {engine.default_checkpoint} "
        f"({engine.checkpoint(engine.default_checkpoint).method})"
    )
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"one search alone: sentence {alone['text']:.2f} s, photo {alone['photo']:.2f} s"
    )
    print(f"{args.requests} concurrent requests, {len(errors)} errors, {wall:.1f} s wall time")
    print(f"  sentence → photos ({len(latency['text'])}): {percentiles(latency['text'])}")
    print(f"  photo → texts     ({len(latency['photo'])}): {percentiles(latency['photo'])}")
    print(f"  all: {percentiles(every)}, {args.requests / wall:.1f} searches/s")
    for error in errors:
        print("  error:", error)
    return {"errors": len(errors), "latency": latency, "wall_s": wall}


if __name__ == "__main__":
    main()
