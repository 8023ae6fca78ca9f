"""Top-k search speed: `RetrievalIndex` against raw FAISS and a plain torch matmul + topk.

    python scripts/benchmark_search.py                      # 10k / 100k / 1M items, 2 threads
    python scripts/benchmark_search.py --sizes 10000 --threads 1 --kinds hamming

Two kinds of gallery: 64-bit binary codes ranked by Hamming distance and 256-d float embeddings
ranked by cosine, both random. For each size, one query and a batch of 100 queries, top 10.
Beside the measured times, the bandwidth bound: the bytes of the gallery one search has to read
(codes: 8 bytes per item; floats: 1 KiB per item), divided by this machine's copy bandwidth
measured here (a 1 GiB tensor copied with the same thread count, source bytes per second; the best
of a measurement before and one after the searches, as the load changes meanwhile). Times
are the best of repeated runs after a warm-up (other processes only ever add time), per query (a
batch's time divided by 100), as wall time and, in brackets, CPU time of all threads (on a busy
machine a long call waits for the CPU: its wall time grows with the load, its CPU time much
less); the machine load (`os.getloadavg`) is printed before and after.

torch and FAISS each bring an OpenMP runtime. Their idle threads spin for a while after each
parallel step by default, taking the cores from the other runtime's next search (and, on a busy
machine, stalling a search whose threads wait for each other): this script makes them wait
passively (`OMP_WAIT_POLICY=PASSIVE`, unless the environment sets it), so that each backend is
timed on its own.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the OpenMP runtimes load

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_xmodal.evaluation import RetrievalIndex  # noqa: E402

TOP_K = 10
BITS = 64
FLOAT_DIM = 256


def best_seconds(fn: Callable[[], object], budget: float, max_repeats: int) -> tuple[float, float]:
    """Best wall time and best CPU time (all threads) of repeated calls after a warm-up, within
    about `budget` seconds."""
    fn()
    walls: list[float] = []
    cpus: list[float] = []
    while len(walls) < max_repeats and (len(walls) < 3 or sum(walls) < budget):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def copy_bandwidth() -> float:
    """Bytes per second of copying a 1 GiB tensor (larger than the caches), best of 5."""
    src = torch.ones(1 << 28)  # 1 GiB of float32
    dst = torch.empty_like(src)
    return src.numel() * src.element_size() / best_seconds(lambda: dst.copy_(src), 0, 5)[0]


def hamming_backends(n: int, gen: torch.Generator) -> tuple[dict, torch.Tensor, int]:
    """Search functions over `n` random 64-bit codes; the queries' ±1 codes; bytes per item."""
    signed = torch.randint(0, 2, (n + 100, BITS), generator=gen, dtype=torch.int8) * 2 - 1
    gallery, queries = signed[:n], signed[n:]
    packed = np.packbits(gallery.numpy() > 0, axis=1)

    raw = faiss.IndexBinaryFlat(BITS)
    raw.add(packed)
    index = RetrievalIndex(BITS, "hamming")
    index.add(torch.from_numpy(packed))
    as_float = gallery.float()
    del gallery, signed

    def torch_topk(q: torch.Tensor):
        # For ±1 codes of B bits: distance = (B − <q, g>) / 2, smallest first.
        return (q.float() @ as_float.T).topk(TOP_K, dim=1)

    backends = {
        "RetrievalIndex": lambda q: index.search(q, TOP_K),
        "raw FAISS": lambda q: raw.search(np.packbits(q.numpy() > 0, axis=1), TOP_K),
        "torch matmul+topk": torch_topk,
    }
    return backends, queries, BITS // 8


def float_backends(n: int, gen: torch.Generator) -> tuple[dict, torch.Tensor, int]:
    """Search functions over `n` random 256-d float embeddings (cosine); queries; bytes per item."""
    gallery = F.normalize(torch.randn(n, FLOAT_DIM, generator=gen), dim=1)
    queries = torch.randn(100, FLOAT_DIM, generator=gen)

    raw = faiss.IndexFlatIP(FLOAT_DIM)
    raw.add(gallery.numpy())
    index = RetrievalIndex(FLOAT_DIM, "cosine")
    index.add(gallery)

    def raw_faiss(q: torch.Tensor):
        return raw.search(F.normalize(q, dim=1).numpy(), TOP_K)

    def torch_topk(q: torch.Tensor):
        return (F.normalize(q, dim=1) @ gallery.T).topk(TOP_K, dim=1)

    backends = {
        "RetrievalIndex": lambda q: index.search(q, TOP_K),
        "raw FAISS": raw_faiss,
        "torch matmul+topk": torch_topk,
    }
    return backends, queries, FLOAT_DIM * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of repeats per cell")
    parser.add_argument("--max_repeats", type=int, default=200)
    parser.add_argument(
        "--kinds", nargs="+", choices=["hamming", "float"], default=["hamming", "float"]
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    load_before = os.getloadavg()
    bandwidths = [copy_bandwidth()]
    kinds = {
        "hamming": (f"{BITS}-bit codes, Hamming", hamming_backends),
        "float": (f"{FLOAT_DIM}-d floats, cosine", float_backends),
    }
    measured = []  # (kind, items, queries, {backend: (wall, cpu)}, bytes scanned)
    for kind, make in (kinds[name] for name in args.kinds):
        for n in args.sizes:
            backends, queries, item_bytes = make(n, gen)
            for nq in (1, 100):
                q = queries[:nq]
                times = {
                    name: best_seconds(lambda f=fn, q=q: f(q), args.budget, args.max_repeats)
                    for name, fn in backends.items()
                }
                measured.append((kind, n, nq, times, n * item_bytes))
                print(f"measured {kind}, {n:,} items, {nq} queries", file=sys.stderr, flush=True)
            del backends
    bandwidths.append(copy_bandwidth())
    load_after = os.getloadavg()
    bandwidth = max(bandwidths)

    print(
        f"torch {torch.__version__}, faiss {faiss.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; "
        f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (before "
        f"{bandwidths[0] / 1e9:.1f}, after {bandwidths[1] / 1e9:.1f}); load average before "
        f"{load_before[0]:.2f} (1 min) {load_before[1]:.2f} (5 min), after {load_after[0]:.2f} "
        f"(1 min) {load_after[1]:.2f} (5 min)"
    )
    header = (
        "| gallery | items | queries | RetrievalIndex | raw FAISS | torch matmul+topk "
        "| bandwidth bound | index / fastest other |"
    )
    print(f"\nms per query, wall (CPU of all threads); a batch's time / 100\n\n{header}")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, n, nq, times, scanned in measured:
        cells = [f"{wall * 1e3 / nq:.3f} ({cpu * 1e3 / nq:.3f})" for wall, cpu in times.values()]
        cells.append(f"{scanned / bandwidth * 1e3 / nq:.3f}")
        ratios = [
            times["RetrievalIndex"][i] / min(times["raw FAISS"][i], times["torch matmul+topk"][i])
            for i in (0, 1)
        ]
        cells.append(f"{ratios[0]:.2f} ({ratios[1]:.2f})")
        print(f"| {kind} | {n:,} | {nq} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
