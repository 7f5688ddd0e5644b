"""Zero-shot retrieval (SCOPe-40): cosine nearest neighbours of L2-normalised mean embeddings.

Each domain queries all the others (itself excluded). At a level (family ``a.1.1.1``,
superfamily ``a.1.1``, fold ``a.1``) Recall@k is the fraction of queries with at least one
of their k nearest neighbours in the same class; queries that are alone in their class at
that level can never hit and are left out of that level's mean.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def nearest_neighbours(embeddings: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """[N, k] indices of each row's k most cosine-similar other rows, most similar first."""
    x = F.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=1)
    k = min(k, len(x) - 1)
    out = []
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x.T
        rows = torch.arange(len(sims))
        sims[rows, start + rows] = -torch.inf  # never one's own neighbour
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out).numpy()


def first_hits(neighbours: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which queries count (another member of their class exists) and, for each counted query, the
    position of its first neighbour of the same class (a large number when none of them is)."""
    _, codes, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    counted = sizes[codes] > 1
    hits = codes[neighbours[counted]] == codes[counted, None]
    return counted, np.where(hits.any(1), hits.argmax(1), np.iinfo(np.int64).max)


def recall_at_k(first_hit: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Recall@k for each k: the fraction of counted queries with a hit among their k nearest."""
    return {k: float((first_hit < k).mean()) if len(first_hit) else float("nan") for k in ks}


def label_at_level(labels: list[str], parts: int) -> np.ndarray:
    """``a.1.1.1`` -> ``a.1`` for parts = 2."""
    return np.array([".".join(label.split(".")[:parts]) for label in labels], dtype=object)


def retrieval_metrics(
    embeddings: np.ndarray, labels: list[str], levels: dict[str, int], ks: list[int]
) -> tuple[dict[str, float], dict[str, int], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{level}_recall@{k}`` for every level and k, the queries counted per level, and per level
    :func:`first_hits` (which queries count, and where each finds its class)."""
    neighbours = nearest_neighbours(embeddings, max(ks))
    metrics, queries, hits = {}, {}, {}
    for level, parts in levels.items():
        counted, first_hit = hits[level] = first_hits(neighbours, label_at_level(labels, parts))
        queries[level] = int(counted.sum())
        metrics.update({f"{level}_recall@{k}": value for k, value in recall_at_k(first_hit, ks).items()})
    return metrics, queries, hits
