"""Time CMSL's semantic graph: building it, the random walks, and DeepWalk's skip-gram.

    python scripts/benchmark_graph.py                              # synthetic, 8000 images
    python scripts/benchmark_graph.py --images 20000 --words 8000 --walks_per_node 10
    python scripts/benchmark_graph.py --flickr8k ../shared/data/flickr8k   # its training captions

Synthetic texts draw 3-12 words each from a Zipf-like distribution over the vocabulary, five
texts per image (as Flickr8k). Prints one table row per phase: wall-clock seconds and the
process's CPU seconds (on a shared machine, wall time counts the other processes' share too).
"""

import argparse
import time

import torch

from hf_xmodal.models.semantic_graph import (
    build_semantic_graph,
    deepwalk,
    random_walks,
    word_vocabulary,
)


def synthetic_texts(images: int, words: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    texts = 5 * images
    weights = 1.0 / torch.arange(1, words + 1, dtype=torch.float64) ** 1.1
    ids = torch.multinomial(weights, texts * 12, replacement=True, generator=g).view(texts, 12) + 1
    lengths = torch.randint(3, 13, (texts, 1), generator=g)
    ids[torch.arange(12) >= lengths] = 0
    return ids, torch.arange(texts) // 5


def flickr8k_texts(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    from hf_xmodal.data import load_flickr8k
    from hf_xmodal.data.regions import word_ids
    from hf_xmodal.models.processing_xmodal import XmodalTowerProcessor

    train = load_flickr8k(data_dir)["train"]
    captions = train["captions"]
    texts = [c for image in captions for c in image]
    index = torch.tensor([i for i, image in enumerate(captions) for _ in image])
    tokenizer = XmodalTowerProcessor.from_towers().tokenizer
    return torch.from_numpy(word_ids(texts, tokenizer)).long(), index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--words", type=int, default=4000)
    parser.add_argument("--flickr8k", help="a Flickr8k folder: use its training captions")
    parser.add_argument("--walks_per_node", type=int, default=10)
    parser.add_argument("--walk_length", type=int, default=20)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()

    if args.flickr8k:
        word_ids, image_index = flickr8k_texts(args.flickr8k)
        source = "Flickr8k train captions"
    else:
        word_ids, image_index = synthetic_texts(args.images, args.words, seed=0)
        source = f"synthetic ({args.images} images, {args.words} words)"
    timings = {}
    start, cpu = time.perf_counter(), time.process_time()
    vocabulary = word_vocabulary(word_ids, 0, min_count=2, max_frequency=0.3)
    graph = build_semantic_graph(word_ids, image_index, vocabulary)
    timings["build graph"] = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    walks = random_walks(
        graph, args.walks_per_node, args.walk_length, torch.Generator().manual_seed(0)
    )
    timings["random walks"] = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    deepwalk(
        graph,
        dim=args.dim,
        walks_per_node=args.walks_per_node,
        walk_length=args.walk_length,
        window=args.window,
    )
    timings["DeepWalk (walks + skip-gram)"] = (
        time.perf_counter() - start,
        time.process_time() - cpu,
    )

    print(
        f"\n{source}: {len(word_ids)} texts, {graph.num_nodes} nodes ({len(vocabulary)} words), "
        f"{graph.num_edges} edges, {len(walks)} walks of {args.walk_length}, "
        f"window {args.window}, dim {args.dim}, {torch.get_num_threads()} threads\n"
    )
    print("| phase | wall s | CPU s |\n| --- | --- | --- |")
    for phase, (wall, cpu) in timings.items():
        print(f"| {phase} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
