"""`squeezed`'s decode lookup in one compiled call (numba, CPU float32): the same ranking as
`ClusterIndex.select_one` (estimated probability of one key of each cluster, max over the
head's query heads, ties kept in cluster order), then the best clusters' members up to the
key budget, the last cluster cut to fit."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import numba, sync_threads
from .decode import _REASSOCIATE


def _compiled(fastmath):
    def wrap(fn):
        return numba.njit(fastmath=fastmath, cache=True)(fn) if numba is not None else fn
    return wrap


@_compiled(_REASSOCIATE)
def _logits(q, centroids, h, scale, out):  # pragma: no cover - compiled
    g, d = q.shape[1], q.shape[2]
    for c in range(centroids.shape[1]):
        for j in range(g):
            dot = np.float32(0.0)
            for x in range(d):
                dot += q[h, j, x] * centroids[h, c, x]
            out[j, c] = dot * scale


@_compiled(False)
def _head_rows(q, centroids, log_counts, counts, starts, members, scale, h, out):  # pragma: no cover
    g, k = q.shape[1], centroids.shape[1]
    logits = np.empty((g, k), np.float32)
    _logits(q, centroids, h, scale, logits)
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
    budget, filled = out.shape[1], 0
    for c in np.argsort(-best, kind="mergesort"):
        if filled >= budget:
            break
        take = min(counts[h, c], budget - filled)
        out[h, filled:filled + take] = members[h, starts[h, c]:starts[h, c] + take]
        filled += take


if numba is not None:
    @numba.njit(parallel=True, cache=True)
    def _all_heads(q, centroids, log_counts, counts, starts, members, scale, out):  # pragma: no cover
        for h in numba.prange(q.shape[0]):
            _head_rows(q, centroids, log_counts, counts, starts, members, scale, h, out)


def best_cluster_rows(q: torch.Tensor, index, scale: float, budget: int) -> torch.Tensor:
    """Rows [Hkv, budget] (budget < keys) for q [Hkv, g, 1, d] from a one-level `ClusterIndex`."""
    heads, g, _, d = q.shape
    sync_threads()
    out = torch.empty(heads, budget, dtype=torch.int64)
    _all_heads(q.reshape(heads, g, d).contiguous().numpy(), index.centroids.contiguous().numpy(),
               index.log_counts.numpy(), index.counts.numpy(), index.starts.numpy(), index.members.numpy(),
               np.float32(scale), out.numpy())
    return out
