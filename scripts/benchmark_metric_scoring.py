"""Time and peak memory of learned-metric retrieval: full scoring against cosine-then-rerank.

    python scripts/benchmark_metric_scoring.py                      # 5,000 x 5,000, UNCSM defaults
    python scripts/benchmark_metric_scoring.py --top_k 10 100 1000 --threads 1

Each case runs in a fresh process; its peak memory is the growth of the process's peak resident
set while it scores (on top of the model and the embeddings). glibc keeps freed blocks mapped, so
this overstates the tensors' own peak; `MALLOC_MMAP_THRESHOLD_=65536` in the environment shows it.
"""

import argparse
import json
import multiprocessing
import resource
import time

import torch


def run_case(args: argparse.Namespace, top_k: int, queue) -> None:
    from hf_xmodal.models import UNCSMConfig, UNCSMModel

    if args.threads:
        torch.set_num_threads(args.threads)
    config = UNCSMConfig(**json.loads(args.model_config))
    model = UNCSMModel(config).eval()
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(
        torch.randn(args.queries, config.embed_dim, generator=gen)
    )
    gallery = torch.nn.functional.normalize(
        torch.randn(args.gallery, config.embed_dim, generator=gen)
    )
    model.similarity(queries[:10], gallery, "text", rerank_top_k=top_k)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    scores = model.similarity(queries, gallery, "text", rerank_top_k=top_k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert scores.shape == (args.queries, args.gallery)
    queue.put((seconds, peak / 1024, torch.get_num_threads()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--gallery", type=int, default=5000)
    parser.add_argument("--top_k", type=int, nargs="+", default=[100], help="rerank sizes")
    parser.add_argument(
        "--model_config", default="{}", help="JSON of UNCSMConfig fields (default: its defaults)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    print(f"{args.queries:,} queries x {args.gallery:,} gallery items, config {args.model_config}")
    context = multiprocessing.get_context("spawn")
    for top_k in [0, *args.top_k]:
        queue = context.Queue()
        process = context.Process(target=run_case, args=(args, top_k, queue))
        process.start()
        seconds, peak_mb, threads = queue.get()
        process.join()
        name = "full learned scoring" if top_k == 0 else f"cosine, rerank top {top_k}"
        pairs = args.queries * (args.gallery if top_k == 0 else min(top_k, args.gallery))
        print(
            f"{name:>26}: {seconds:7.2f} s, +{peak_mb:6.0f} MB peak, "
            f"{pairs / seconds / 1e6:6.2f} M pairs/s through the metric network "
            f"({threads} threads)"
        )


if __name__ == "__main__":
    main()
