"""`squeezed`'s decode lookup in one compiled call (numba, CPU float32): the same keys as
`ClusterIndex.select_one` (clusters ranked by the estimated probability of one of their keys,
max over the head's query heads, ties kept in cluster order; the best ones up to the key
budget, the last one cut to its first keys), listed in memory order."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import compiled, in_parallel


@compiled
def _heads_rows(q, centroids, log_counts, counts, labels, rank, scale, out, first, stop):  # pragma: no cover
    """For heads [first, stop): rank the clusters, take the best ones up to the budget, then list
    their keys by one pass over the labels, in memory order (reads that walk forward)."""
    g, k, d = q.shape[1], centroids.shape[1], q.shape[2]
    budget = out.shape[1]
    logits = np.empty((g, k), np.float32)
    taken = np.zeros(k, np.int64)  # keys taken from each cluster: its first ones in memory order
    for h in range(first, stop):
        for c in range(k):
            for j in range(g):
                dot = np.float32(0.0)
                for x in range(d):
                    dot += q[h, j, x] * centroids[h, c, x]
                logits[j, c] = dot * scale
        best = np.full(k, -np.inf, np.float32)
        for j in range(g):
            top = -np.inf
            for c in range(k):
                top = max(top, logits[j, c] + log_counts[h, c])
            total = 0.0
            for c in range(k):
                total += math.exp(logits[j, c] + log_counts[h, c] - top)
            log_norm = top + math.log(total)
            for c in range(k):
                best[c] = max(best[c], np.float32(math.exp(logits[j, c] - log_norm)))
        taken[:] = 0
        filled = 0
        for c in np.argsort(-best, kind="mergesort"):
            if filled >= budget:
                break
            taken[c] = min(counts[h, c], budget - filled)
            filled += taken[c]
        filled = 0
        for r in range(labels.shape[1]):
            if rank[h, r] < taken[labels[h, r]]:
                out[h, filled] = r
                filled += 1


def best_cluster_rows(q: torch.Tensor, index, scale: float, budget: int) -> torch.Tensor:
    """Rows [Hkv, budget] (budget < keys; ascending in each head) for q [Hkv, g, 1, d] from a
    one-level `ClusterIndex`."""
    heads, g, _, d = q.shape
    out = torch.empty(heads, budget, dtype=torch.int64)
    in_parallel(_heads_rows, heads, q.reshape(heads, g, d).contiguous().numpy(),
                index.centroids.contiguous().numpy(), index.log_counts.numpy(), index.counts.numpy(),
                index.labels.contiguous().numpy(), index.rank.numpy(), np.float32(scale), out.numpy())
    return out
