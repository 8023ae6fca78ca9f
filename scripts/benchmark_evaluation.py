"""Wall time of the evaluation metrics and index search on random data.

python scripts/benchmark_evaluation.py --size 5000
"""

import argparse
import time

import torch

from hf_xmodal.evaluation import (
    RetrievalIndex,
    evaluate_caption_retrieval,
    mean_average_precision,
)


def best_time(fn, repeats: int) -> float:
    """Best wall time of `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5000, help="queries = gallery for MAP@all")
    parser.add_argument(
        "--images", type=int, default=1000, help="images for Recall@K (x5 captions)"
    )
    parser.add_argument("--dim", type=int, default=256, help="embedding size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    n = args.size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    scores = torch.randn(n, n, generator=gen)
    single_q, single_g = (
        torch.randint(0, 10, (n,), generator=gen),
        torch.randint(0, 10, (n,), generator=gen),
    )
    multi_q = (torch.rand(n, 24, generator=gen) < 0.1).long()
    multi_g = (torch.rand(n, 24, generator=gen) < 0.1).long()
    cases = {
        "single-label, 10 classes": (scores, single_q, single_g),
        "multi-label, 24 classes": (scores, multi_q, multi_g),
        "single-label, tied scores (1 decimal)": (scores.round(decimals=1), single_q, single_g),
    }
    for name, (s, ql, gl) in cases.items():
        seconds = best_time(
            lambda s=s, ql=ql, gl=gl: mean_average_precision(s, ql, gl), args.repeats
        )
        print(f"MAP@all {n}x{n} {name}: {seconds:.3f} s")

    images = torch.randn(args.images, args.dim, generator=gen)
    captions = torch.randn(5 * args.images, args.dim, generator=gen)
    owner = torch.arange(args.images).repeat_interleave(5)
    seconds = best_time(lambda: evaluate_caption_retrieval(images, captions, owner), args.repeats)
    print(
        f"Recall@1/5/10 both directions, {args.images} images x {5 * args.images} captions, "
        f"dim {args.dim} (cosine scoring included): {seconds:.3f} s"
    )

    gallery = torch.randn(n, args.dim, generator=gen)
    queries = torch.randn(n, args.dim, generator=gen)
    for metric, data in {
        "cosine": (gallery, queries),
        "hamming": (torch.sign(gallery[:, :64]), torch.sign(queries[:, :64])),
    }.items():
        g, q = data
        index = RetrievalIndex(g.shape[1], metric)
        index.add(g)
        seconds = best_time(lambda index=index, q=q: index.search(q, 10), args.repeats)
        print(
            f"RetrievalIndex.search {metric} (dim {g.shape[1]}), {n} queries x {n} items, k=10: "
            f"{seconds:.3f} s ({n / seconds:,.0f} queries/s)"
        )


if __name__ == "__main__":
    main()
