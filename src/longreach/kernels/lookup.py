"""Squeezed Attention's decode lookup in one compiled call (numba, CPU).

For each KV head: score every centroid for the head's query heads, estimate one key's attention
probability per cluster (as `ClusterIndex.estimate`), rank the clusters and list the rows of the
best ones until the key budget (the last cluster taken in part). The same choice as the torch
path in `ClusterIndex.select_one`, without its dozen small tensor operations (about 0.4 ms per
layer for 3 heads x 2K clusters, against tens of microseconds here).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import compiled
from .decode import exp_shifted


@compiled
def _select(q, centroids, log_counts, counts, starts, members, budget, scale, rows):  # pragma: no cover
    heads, g, d = q.shape
    k = centroids.shape[1]
    logits = np.empty((g, k), np.float32)
    best = np.empty(k, np.float32)
    weighted = np.empty(k, np.float32)
    bits = np.empty(k, np.int32)
    for h in range(heads):
        for c in range(k):
            for j in range(g):
                dot = np.float32(0.0)
                for e in range(d):
                    dot += q[h, j, e] * centroids[h, c, e]
                logits[j, c] = dot * scale
        best[:] = -np.inf
        for j in range(g):
            # log of the normaliser sum_c N_c exp(logit_c), as a log-sum-exp
            for c in range(k):
                weighted[c] = logits[j, c] + log_counts[h, c]
            top = weighted.max()
            log_norm = np.float32(top + math.log(exp_shifted(weighted, top, bits, weighted)))
            for c in range(k):
                best[c] = max(best[c], logits[j, c] - log_norm)
        probability = np.exp(best)  # one key's estimated probability, max over the query heads
        _take_best(probability, counts[h], starts[h], members[h], budget, rows[h])


@compiled
def _take_best(probability, counts, starts, members, budget, rows):  # pragma: no cover
    """rows <- the members of the most probable clusters until `budget` (ties: lower cluster first;
    the last cluster taken in part), cluster by cluster in cluster order."""
    k = probability.shape[0]
    # The best clusters fill the budget long before the end: rank only those at least as probable
    # as the n-th best, n two budgets' worth of average clusters; all of them if that falls short.
    n = min(k, max(1, 2 * budget * k // max(1, counts.sum())))
    candidates = np.arange(k)
    if n < k:
        cut = -np.partition(-probability, n - 1)[n - 1]
        candidates = np.nonzero(probability >= cut)[0]  # ascending: the stable sort keeps ties in order
        if counts[candidates].sum() < budget:
            candidates = np.arange(k)
    order = candidates[np.argsort(-probability[candidates], kind="mergesort")]
    take = np.zeros(k, np.int64)
    filled = 0
    for c in order:
        if filled >= budget:
            break
        take[c] = min(counts[c], budget - filled)
        filled += take[c]
    # Listed in cluster order, the order of a memory laid out cluster by cluster: neighbouring
    # clusters (often chosen together, the tree k-means numbers a coarse cluster's ones in a row)
    # are then read as one longer run.
    filled = 0
    for c in range(k):
        first = starts[c]
        for r in range(take[c]):
            rows[filled + r] = members[first + r]
        filled += take[c]


def select_rows(q: torch.Tensor, centroids: torch.Tensor, log_counts: torch.Tensor, counts: torch.Tensor,
                starts: torch.Tensor, members: torch.Tensor, scale: float, budget: int) -> torch.Tensor:
    """Rows [Hkv, budget] each KV head attends for queries q [Hkv, g, d] (budget < the rows stored):
    the index's tensors as `ClusterIndex` keeps them, on the CPU."""
    rows = np.empty((q.shape[0], budget), np.int64)
    _select(q.float().contiguous().numpy(), centroids.float().contiguous().numpy(),
            log_counts.contiguous().numpy(), counts.contiguous().numpy(), starts.contiguous().numpy(),
            members.contiguous().numpy(), budget, np.float32(scale), rows)
    return torch.from_numpy(rows)
