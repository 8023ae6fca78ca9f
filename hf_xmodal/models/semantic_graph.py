"""Image-word semantic correlation graph and DeepWalk node embeddings (CMSL's first component).

Nodes are the words of a training vocabulary and the training images; an image links to the words
of its texts, and two words link when they occur in the same text. DeepWalk (Perozzi et al., KDD
2014) runs truncated random walks from every node, all walks one vectorised step at a time, and
trains a skip-gram with negative sampling on the (node, context) pairs of the walks, in batches.
The word rows of the result are semantic word embeddings; `expansion_words` finds the words
nearest to a text's own, for semantic expansion.

Pure torch, so that a checkpoint's remote code can rebuild the graph when training further.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import logging
from transformers.utils.logging import tqdm

logger = logging.get_logger(__name__)


@dataclass
class SemanticGraph:
    """An undirected graph in CSR form: node `i`'s neighbours are `col[rowptr[i]:rowptr[i + 1]]`.

    Nodes `0 .. len(words) - 1` are the words (their ids in `words`), then one node per image.
    """

    words: torch.Tensor
    num_images: int
    rowptr: torch.Tensor
    col: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return len(self.words) + self.num_images

    @property
    def num_edges(self) -> int:
        return len(self.col) // 2


def word_vocabulary(
    word_ids: torch.Tensor, pad_id: int, min_count: int, max_frequency: float
) -> torch.Tensor:
    """Sorted ids of the words kept as graph nodes: in at least `min_count` texts and in at most
    a fraction `max_frequency` of them (stop words, such as "a", are in most texts)."""
    texts, present = _unique_text_words(word_ids, pad_id)
    counts = torch.bincount(present)
    keep = (counts >= min_count) & (counts <= max_frequency * len(word_ids))
    return keep.nonzero().flatten()


def _unique_text_words(word_ids: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(text row, word id) of every distinct word of every text (padding left out)."""
    if word_ids.ndim != 2 or word_ids.is_floating_point():
        raise ValueError(f"word_ids must be a 2-D integer tensor, got {tuple(word_ids.shape)}")
    rows = torch.arange(len(word_ids)).unsqueeze(1).expand_as(word_ids)
    mask = word_ids != pad_id
    pairs = torch.stack([rows[mask], word_ids[mask].long()], 1).unique(dim=0)
    return pairs[:, 0], pairs[:, 1]


def build_semantic_graph(
    word_ids: torch.Tensor,
    image_index: torch.Tensor,
    vocabulary: torch.Tensor,
    pad_id: int = 0,
) -> SemanticGraph:
    """The image-word graph of training texts `word_ids` `(texts, length)`; text t belongs to
    image `image_index[t]` (several texts may share an image). Only `vocabulary` words are nodes.

    Edges: image–word for each word of the image's texts, word–word for two words of one text;
    each edge once, in both directions.
    """
    if len(image_index) != len(word_ids):
        raise ValueError(f"{len(word_ids)} texts but {len(image_index)} image indices")
    image_index = image_index.long()
    num_images = int(image_index.max()) + 1 if len(image_index) else 0
    largest = max(int(word_ids.max()), int(vocabulary.max()) if len(vocabulary) else 0)
    node_of = torch.full((largest + 1,), -1)
    node_of[vocabulary] = torch.arange(len(vocabulary))
    texts, words = _unique_text_words(word_ids, pad_id)
    nodes = node_of[words]
    texts, nodes = texts[nodes >= 0], nodes[nodes >= 0]
    image_word = torch.stack([len(vocabulary) + image_index[texts], nodes], 1)
    # Word–word: every ordered pair of distinct words within a text, from a padded per-text matrix.
    starts = torch.searchsorted(texts, texts, right=False)
    position = torch.arange(len(texts)) - starts
    width = int(position.max()) + 1 if len(position) else 1
    padded = torch.full((int(texts.max()) + 1 if len(texts) else 0, width), -1)
    padded[texts, position] = nodes
    a, b = padded.unsqueeze(2).expand(-1, -1, width), padded.unsqueeze(1).expand(-1, width, -1)
    keep = (a >= 0) & (b >= 0) & (a < b)
    word_word = torch.stack([a[keep], b[keep]], 1)
    edges = torch.cat([image_word, word_word]).unique(dim=0)
    edges = torch.cat([edges, edges.flip(1)])
    order = torch.argsort(edges[:, 0] * (len(vocabulary) + num_images) + edges[:, 1])
    edges = edges[order]
    num_nodes = len(vocabulary) + num_images
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
    rowptr[1:] = torch.bincount(edges[:, 0], minlength=num_nodes).cumsum(0)
    return SemanticGraph(vocabulary.clone(), num_images, rowptr, edges[:, 1].contiguous())


def random_walks(
    graph: SemanticGraph, walks_per_node: int, walk_length: int, generator: torch.Generator
) -> torch.Tensor:
    """Truncated random walks `(num_nodes · walks_per_node, walk_length)`, all advanced together;
    a walk at a node without neighbours stays there."""
    current = torch.arange(graph.num_nodes).repeat(walks_per_node)
    walks = torch.empty(len(current), walk_length, dtype=torch.long)
    walks[:, 0] = current
    degree = graph.rowptr[1:] - graph.rowptr[:-1]
    for step in range(1, walk_length):
        d = degree[current]
        offset = (torch.rand(len(current), generator=generator) * d).long()
        neighbour = graph.col[
            (graph.rowptr[current] + offset).clamp(max=max(len(graph.col) - 1, 0))
        ]
        current = torch.where(d > 0, neighbour, current)
        walks[:, step] = current
    return walks


def skipgram_pairs(walks: torch.Tensor, window: int) -> torch.Tensor:
    """(centre, context) node pairs `(n, 2)` of every walk position within `window` steps."""
    pairs = []
    for shift in range(1, min(window, walks.shape[1] - 1) + 1):
        a, b = walks[:, :-shift].reshape(-1), walks[:, shift:].reshape(-1)
        pairs += [torch.stack([a, b], 1), torch.stack([b, a], 1)]
    return torch.cat(pairs)


@torch.no_grad()
def deepwalk(
    graph: SemanticGraph,
    dim: int = 64,
    walks_per_node: int = 10,
    walk_length: int = 20,
    window: int = 3,
    negatives: int = 5,
    batch_size: int = 4096,
    learning_rate: float = 0.025,
    seed: int = 0,
) -> torch.Tensor:
    """Node embeddings `(num_nodes, dim)`: skip-gram with negative sampling over random walks.

    One pass over the shuffled (centre, context) pairs in batches, word2vec's updates: plain SGD
    on the summed gradients with the learning rate decaying linearly to 0, negatives drawn from
    the walk frequencies to the power 3/4. The progress bar follows
    `transformers.utils.logging.disable_progress_bar`.
    """
    generator = torch.Generator().manual_seed(seed)
    walks = random_walks(graph, walks_per_node, walk_length, generator)
    pairs = skipgram_pairs(walks, window)
    pairs = pairs[torch.randperm(len(pairs), generator=generator)]
    noise = torch.bincount(walks.flatten(), minlength=graph.num_nodes).double() ** 0.75
    noise_cdf = (noise.cumsum(0) / noise.sum()).float()
    centre = (torch.rand(graph.num_nodes, dim, generator=generator) - 0.5) / dim
    context = torch.zeros(graph.num_nodes, dim)
    steps = range(0, len(pairs), batch_size)
    loss = torch.zeros(())
    for step, start in enumerate(tqdm(steps, desc="DeepWalk skip-gram")):
        lr = learning_rate * (1 - step / len(steps))
        a, b = pairs[start : start + batch_size].T
        fake = torch.searchsorted(noise_cdf, torch.rand(len(a), negatives, generator=generator))
        fake = fake.clamp_(max=graph.num_nodes - 1)
        c, o, n = centre[a], context[b], context[fake]
        # maximise log σ(c·o) + Σ_k log σ(−c·n_k): gradients of its negative
        positive = (c * o).sum(1)
        negative = torch.einsum("bd,bkd->bk", c, n)
        g_pos = torch.sigmoid(positive) - 1
        g_neg = torch.sigmoid(negative)
        centre.index_add_(
            0, a, g_pos[:, None] * o + torch.einsum("bk,bkd->bd", g_neg, n), alpha=-lr
        )
        context.index_add_(0, b, g_pos[:, None] * c, alpha=-lr)
        context.index_add_(
            0, fake.flatten(), (g_neg[..., None] * c[:, None]).flatten(0, 1), alpha=-lr
        )
        loss = F.softplus(-positive).mean() + F.softplus(negative).sum(1).mean()
    logger.info(
        f"DeepWalk: {graph.num_nodes} nodes, {graph.num_edges} edges, {len(walks)} walks, "
        f"{len(pairs)} pairs, final batch loss {loss.item():.3f}"
    )
    return centre


def expansion_words(
    text_words: torch.Tensor,
    text_mask: torch.Tensor,
    word_embeddings: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic expansion: for each text, the `k` candidate words nearest (cosine) to the mean of
    its own words' embeddings, other than its own words.

    `text_words` `(batch, length)` are word ids with `text_mask` marking real words;
    `word_embeddings` `(vocabulary, dim)` is indexed by word id; `candidates` `(vocabulary,)`
    marks the words that may be added. Returns the ids `(batch, k)` and their cosine similarity
    to the text (−inf where a text has no words or too few candidates: masked out downstream).
    """
    unit = F.normalize(word_embeddings, dim=1)
    own = unit[text_words] * text_mask.unsqueeze(-1)
    query = F.normalize(own.sum(1), dim=1)
    pool = candidates.nonzero().flatten()
    scores = query @ unit[pool].T
    allowed = ~(pool[None, :, None] == text_words[:, None, :]).any(-1)
    allowed &= text_mask.any(1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    if scores.shape[1] < k:  # fewer candidates than k: pad with masked-out slots
        scores = F.pad(scores, (0, k - scores.shape[1]), value=float("-inf"))
        pool = F.pad(pool, (0, k - len(pool)), value=0)
    top, index = scores.topk(k, dim=1)
    return pool[index], top
