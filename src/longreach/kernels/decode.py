"""One query position's attention over stored keys, read where they lie (numba, CPU float32).

Each KV head's keys are cut into splits; a split's scores for the head's g query heads are
computed in one pass over its key rows, exponentiated against the split's own maximum, and its
value rows are summed in a second pass; the splits are then merged by their maxima (the
log-sum-exp merge). Over a long context the work items (head, split) are shared out over the
threads, so one query still uses every core. With `rows`, KV head h reads only its rows rows[h],
where they lie, each asked of the memory a few rows ahead of its use: fast when they come in runs
(squeezed stores each head's keys cluster by cluster, and a lookup selects whole clusters), still
about 2.5x a streamed row per row in runs of 16 (the start of each run waits on the memory), and
4-5x for rows scattered one by one. `attend_segments` does this over several key segments, each
read by its own query (keys rotated differently), in one softmax and one call.

`select_rows` is Squeezed Attention's decode lookup in one call: for each KV head, score every
centroid for the head's query heads, estimate one key's attention probability per cluster (as
`ClusterIndex.estimate`), rank the clusters and list the rows of the best ones until the key
budget (the last cluster taken in part); with a coarse level, only the fine centroids inside the
best coarse clusters are scored. It chooses what the torch path does (`ClusterIndex.select_one`
with one level, `ClusterIndex.select` with two), up to float32 rounding (a near tie at the
budget's edge may go either way), without that path's dozen small tensor operations. Both
kernels live in this one file: numba's on-disk cache does not notice a change to a compiled
function called from another file.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import compiled, in_parallel, numba, threads


def _prefetch_intrinsic():
    """prefetch(a, i, j) in compiled code: ask the CPU to bring the cache line holding a[i, j] (a 2-D
    array) closer, for reading soon; no effect on any result. LLVM's prefetch intrinsic."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, array, row, column):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            at = cgutils.get_item_pointer(context, builder, array_type, view, [args[1], args[2]])
            byte = builder.bitcast(at, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            opaque = str(byte.type) == "ptr"  # LLVM 15+ pointers carry no element type
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte.type, i32, i32, i32]),
                "llvm.prefetch.p0" if opaque else "llvm.prefetch.p0i8")
            builder.call(function, [byte, i32(0), i32(3), i32(1)])  # read, keep in every cache level, data
            return context.get_dummy_value()
        return types.void(array, row, column), codegen

    return prefetch


prefetch = _prefetch_intrinsic() if numba is not None else None


_ROWS_PER_SPLIT = 512
# Rows picked one by one (`rows`) are asked of the memory this many rows ahead of their use: the CPU
# fetches a run's next rows by itself, but not the first rows of the next run.
_AHEAD = 16
# Key rows (summed over KV heads) from which a call shares its work over threads: below this, waking
# a thread costs about what it saves (measured inside SmolLM2 decode steps on 2 cores).
PARALLEL_MIN_ROWS = 12 * 1024


_LOG2E = np.float32(1.4426950408889634)
_LN2 = np.float32(0.6931471805599453)


@compiled
def exp_shifted(x, shift, bits):  # pragma: no cover - compiled
    """x[i] <- exp(x[i] - shift) for x <= shift, in place, and their sum; bits: int32 scratch as
    long as x. Vectorised (libm's expf is called one value at a time, about 8x slower here; and an
    output array that may be x would make the compiler keep to one value at a time too):
    exp(y) = 2^m e^f with m = round(y / ln 2) and f = y - m ln 2 (one fused multiply-add, |f| <=
    ln 2 / 2), e^f by its degree-7 Taylor polynomial, 2^m written as float32 exponent bits.
    Relative error within a few 1e-7 (float32 rounding); values under 2^-126 come out as about
    2^-126 instead of 0 (the maximum is exactly 1)."""
    n = x.shape[0]
    for i in range(n):
        y = max(x[i] - shift, np.float32(-87.0))
        m = np.floor(y * _LOG2E + np.float32(0.5))
        f = y - m * _LN2
        p = np.float32(1.0 / 5040)
        p = p * f + np.float32(1.0 / 720)
        p = p * f + np.float32(1.0 / 120)
        p = p * f + np.float32(1.0 / 24)
        p = p * f + np.float32(1.0 / 6)
        p = p * f + np.float32(0.5)
        p = p * f + np.float32(1.0)
        p = p * f + np.float32(1.0)
        x[i] = p
        bits[i] = (np.int32(m) + np.int32(127)) << 23
    powers = bits[:n].view(np.float32)
    total = np.float32(0.0)
    for i in range(n):
        e = x[i] * powers[i]
        x[i] = e
        total += e
    return total


@compiled
def _splits(queries, which, keys, values, head_rows, rows, items, scale, top, total, acc, first,
            stop):  # pragma: no cover - compiled
    """Items [first, stop) of items[i] = (segment, head, a, b, slot): the maxima, weights and weighted
    values of keys a..b of one segment for one KV head, into slot `slot` of that head. Segment s
    holds keys[s], values[s] (head h's rows start at h * head_rows[s]) read by queries[which[s]];
    its i-th key for head h is row rows[s][h, i], or row i when rows[s] has no columns."""
    g, d = queries.shape[2], queries.shape[3]
    for item in range(first, stop):
        s, h, a, b, slot = items[item, 0], items[item, 1], items[item, 2], items[item, 3], items[item, 4]
        k, v, picked_rows = keys[s], values[s], rows[s]
        picked = picked_rows.shape[1] > 0
        base = h * head_rows[s]
        scores = np.empty((g, b - a), np.float32)
        bits = np.empty(b - a, np.int32)
        weighted = np.zeros((g, d), np.float32)  # a fresh array: the compiler knows v does not alias it
        qh = queries[which[s], h] * scale
        for i in range(a, b):
            r = base + (picked_rows[h, i] if picked else i)
            if picked and i + _AHEAD < b:
                for c in range(0, d, 16):  # one 64-byte line at a time
                    prefetch(k, base + picked_rows[h, i + _AHEAD], c)
            for j in range(g):
                dot = np.float32(0.0)
                for c in range(d):
                    dot += qh[j, c] * k[r, c]
                scores[j, i - a] = dot
        for j in range(g):
            best = scores[j].max()
            top[h, slot, j] = best
            total[h, slot, j] = exp_shifted(scores[j], best, bits)
        for i in range(a, b):
            r = base + (picked_rows[h, i] if picked else i)
            if picked and i + _AHEAD < b:
                for c in range(0, d, 16):
                    prefetch(v, base + picked_rows[h, i + _AHEAD], c)
            for j in range(g):
                p = scores[j, i - a]
                for c in range(d):
                    weighted[j, c] += p * v[r, c]
        acc[h, slot] += weighted


@compiled
def _merge(top, total, acc, out, lse):  # pragma: no cover - compiled
    heads, splits, g = top.shape
    for h in range(heads):
        for j in range(g):
            best = top[h, :, j].max()
            weight = np.float32(0.0)
            out[h, j, :] = 0.0
            for s in range(splits):
                if top[h, s, j] == -np.inf:  # an empty split
                    continue
                f = np.exp(top[h, s, j] - best)
                weight += f * total[h, s, j]
                out[h, j, :] += f * acc[h, s, j, :]
            out[h, j, :] /= weight
            lse[h, j] = best + math.log(weight)


def _as_rows(x: torch.Tensor) -> tuple[np.ndarray, int] | None:
    """x [1, Hkv, n, d] whose rows are contiguous within each head (any head stride that is a
    whole number of rows) as one 2-D array [rows, d] over the same memory, and the rows from one
    head's start to the next's; None for other layouts."""
    _, heads, n, d = x.shape
    if x.stride(3) != 1 or x.stride(2) != d or x.stride(1) % d or (heads > 1 and x.stride(1) < n * d):
        return None
    head_rows = x.stride(1) // d if heads > 1 else n
    flat = x.as_strided(((heads - 1) * head_rows + n, d), (d, 1))
    return flat.numpy(), head_rows


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Attention of q [1, H, 1, d] over k, v [1, Hkv, t, d] (rotated keys; H a multiple of Hkv):
    every key, or with `rows` [Hkv, n] (each in [0, t)) head h's keys rows[h] only.
    Returns (out [1, H, 1, d], lse [1, H, 1]), or None when a layout does not suit the kernel
    (the caller then uses torch)."""
    return attend_segments((q,), [(0, k, v, rows)], scale)


def attend_segments(queries: tuple[torch.Tensor, ...], segments: list[tuple], scale: float
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """One softmax of one query position over several key segments, in one call: each segment
    (i, k, v, rows) is read by queries[i] [1, H, 1, d] (a query rotated as that segment's keys
    need), with k, v [1, Hkv, t, d] and rows as in `attend_one`. Returns (out, lse) as
    `attend_one`, or None when a layout does not suit the kernel."""
    heads, d = segments[0][1].shape[1], segments[0][1].shape[3]
    g = queries[0].shape[1] // heads
    keys, values, head_rows, which, picks, lengths = [], [], [], [], [], []
    for i, k, v, rows in segments:
        n = k.shape[2] if rows is None else rows.shape[1]
        if n == 0:
            continue
        k_rows, v_rows = _as_rows(k), _as_rows(v)
        if k_rows is None or v_rows is None or k_rows[1] != v_rows[1]:
            return None
        if rows is not None:  # compiled code does not check its indices
            assert rows.shape[0] == heads and int(rows.min()) >= 0 and int(rows.max()) < k.shape[2], \
                "rows out of range"
        keys.append(k_rows[0])
        values.append(v_rows[0])
        head_rows.append(k_rows[1])
        which.append(i)
        picks.append(np.zeros((heads, 0), np.int64) if rows is None else rows.to(torch.int64).contiguous().numpy())
        lengths.append(n)
    if not lengths:
        return None
    items, slots, parallel = _plan(lengths, heads)
    top = np.full((heads, slots, g), -np.inf, np.float32)
    total = np.zeros((heads, slots, g), np.float32)
    acc = np.zeros((heads, slots, g, d), np.float32)
    stacked = np.stack([x.reshape(heads, g, d).numpy() for x in queries]) if len(queries) > 1 else \
        queries[0].reshape(1, heads, g, d).contiguous().numpy()
    in_parallel(_splits, len(items), stacked, np.array(which, np.int64), tuple(keys), tuple(values),
                np.array(head_rows, np.int64), tuple(picks), items, np.float32(scale), top, total, acc,
                parallel=parallel, sizes=items[:, 3] - items[:, 2])
    out = torch.empty(heads, g, d)
    lse = torch.empty(heads, g)
    _merge(top, total, acc, out.numpy(), lse.numpy())
    return out.view(1, heads * g, 1, d), lse.view(1, heads * g, 1)


def _plan(lengths: list[int], heads: int) -> tuple[np.ndarray, int, bool]:
    """Work items (segment, head, a, b, slot) cutting each head's keys into pieces of at most
    about `_ROWS_PER_SPLIT` rows (one piece per thread and two per thread at most, over a
    long context), the slots per head, and whether to share the items over threads."""
    n = sum(lengths)
    parallel = n * heads >= PARALLEL_MIN_ROWS
    pieces = max(1, min(-(-n // _ROWS_PER_SPLIT), 2 * threads() if parallel else 1))
    per = -(-n // pieces)
    spans = [(s, a, min(a + per, length)) for s, length in enumerate(lengths) for a in range(0, length, per)]
    items = np.array([(s, h, a, b, slot) for h in range(heads) for slot, (s, a, b) in enumerate(spans)],
                     np.int64)
    return items, len(spans), parallel


@compiled
def _logits(q, centroids, scale, logits):  # pragma: no cover - compiled
    """logits[j, c] = q[j] . centroids[c] * scale for q [g, d], centroids [k, d]."""
    g, d = q.shape
    for c in range(centroids.shape[0]):
        for j in range(g):
            dot = np.float32(0.0)
            for e in range(d):
                dot += q[j, e] * centroids[c, e]
            logits[j, c] = dot * scale


@compiled
def _log_norms(logits, log_counts, norms, weighted, bits):  # pragma: no cover - compiled
    """norms[j] = log sum_c N_c exp(logits[j, c]) (log_counts = log N_c), as a log-sum-exp."""
    for j in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            weighted[c] = logits[j, c] + log_counts[c]
        top = weighted.max()
        norms[j] = np.float32(top + math.log(exp_shifted(weighted, top, bits)))


@compiled
def _log_estimates(q, centroids, log_counts, scale, logits, norms, weighted, bits, best):  # pragma: no cover
    """best[c] <- log of one key's estimated probability in cluster c (`ClusterIndex.estimate`),
    max over the query heads q [g, d]; norms[j] <- query head j's log normaliser."""
    _logits(q, centroids, scale, logits)
    _log_norms(logits, log_counts, norms, weighted, bits)
    best[:] = -np.inf
    for j in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            best[c] = max(best[c], logits[j, c] - norms[j])


@compiled
def _scratch(g, k):  # pragma: no cover - compiled
    """`_log_estimates`' work arrays for g query heads and k clusters: logits, norms, weighted,
    bits, best."""
    return (np.empty((g, k), np.float32), np.empty(g, np.float32), np.empty(k, np.float32),
            np.empty(k, np.int32), np.empty(k, np.float32))


@compiled
def _select(q, centroids, log_counts, counts, starts, members, budget, scale, rows):  # pragma: no cover
    heads, g = q.shape[0], q.shape[1]
    logits, norms, weighted, bits, best = _scratch(g, centroids.shape[1])
    for h in range(heads):
        _log_estimates(q[h], centroids[h], log_counts[h], scale, logits, norms, weighted, bits, best)
        probability = np.exp(best)  # one key's estimated probability, max over the query heads
        _take_best(probability.view(np.int32), counts[h], starts[h], members[h], budget, rows[h])


@compiled
def _select_two(q, centroids, counts, starts, members, parent, coarse, coarse_log_counts, coarse_counts,
                budget, slack_keys, scale, rows, scored):  # pragma: no cover - compiled
    """`_select` through a coarse level: per head, the coarse clusters ranked until `slack_keys`
    keys (the one crossing it included), then only the fine clusters inside them scored, against
    the coarse level's normaliser; the others rank after every scored one."""
    heads, g, d = q.shape
    k, kc = centroids.shape[1], coarse.shape[1]
    logits, norms, weighted, bits, best = _scratch(g, kc)
    fine = np.empty(k, np.float32)
    taken = np.empty(kc, np.bool_)
    for h in range(heads):
        _log_estimates(q[h], coarse[h], coarse_log_counts[h], scale, logits, norms, weighted, bits, best)
        held = 0
        for c in np.argsort(-np.exp(best), kind="mergesort"):  # stable: ties go to the lower cluster
            taken[c] = held < slack_keys
            held += coarse_counts[h, c]
        scored[h] = kc
        qh, own, up = q[h], centroids[h], parent[h]
        for c in range(k):
            fine[c] = -np.inf
            if not taken[up[c]]:
                continue
            scored[h] += 1
            for j in range(g):
                dot = np.float32(0.0)
                for e in range(d):
                    dot += qh[j, e] * own[c, e]
                fine[c] = max(fine[c], dot * scale - norms[j])
        probability = np.exp(fine)
        ranks = probability.view(np.int32)
        for c in range(k):  # scored ones above every cluster not scored (then in cluster order)
            ranks[c] = ranks[c] + 1 if taken[up[c]] else 0
        _take_best(ranks, counts[h], starts[h], members[h], budget, rows[h])


@compiled
def _take_best(bits, counts, starts, members, budget, rows):  # pragma: no cover
    """rows <- the members of the best-ranked clusters until `budget` (ties: lower cluster first;
    the last cluster taken in part), cluster by cluster in cluster order. `bits` [k] ranks the
    clusters, higher first: int32s, e.g. the bit patterns of their estimated probabilities
    (non-negative float32s order as their bits do); a negative one (a NaN's) ranks as 0.

    No sort: a binary search over the ranks finds the cut, the highest rank r* whose clusters at
    or above it hold at least `budget` keys. Every cluster above r* is taken whole, those at r*
    in cluster order until the budget: exactly `budget` rows when the clusters hold more keys."""
    k = bits.shape[0]
    low, high = 0, 0x7FFFFFFF  # f(low) >= budget (every cluster, m > budget keys); f(max + 1) = 0
    while low < high:  # f(cut) = keys in clusters ranked at or above `cut`, non-increasing in `cut`
        mid = low + (high - low + 1) // 2
        held = 0
        for c in range(k):
            held += counts[c] if bits[c] >= mid else 0
        if held >= budget:
            low = mid
        else:
            high = mid - 1
    left = budget  # keys still to take at the cut, once every cluster above it is counted
    for c in range(k):
        if bits[c] > low:
            left -= counts[c]
    filled = 0
    for c in range(k):
        rank = max(bits[c], 0)
        if rank > low:
            take = counts[c]
        elif rank == low:
            take = min(counts[c], left)
            left -= take
        else:
            continue
        take = max(0, min(take, budget - filled))  # never past `rows` (compiled code does not check bounds)
        first = starts[c]
        for r in range(take):
            rows[filled + r] = members[first + r]
        filled += take


def select_rows(q: torch.Tensor, index, scale: float, budget: int, slack: float = 4.0) -> tuple[torch.Tensor, int]:
    """Rows [Hkv, budget] each KV head attends for queries q [Hkv, g, d] (budget < the rows stored)
    from a `ClusterIndex` on the CPU, one level or two (`slack`: the coarse clusters searched cover
    this many budgets), and the centroids scored, summed over heads."""
    rows = np.empty((q.shape[0], budget), np.int64)
    q = q.float().contiguous().numpy()
    fine = (index.centroids.float().contiguous().numpy(), index.counts.contiguous().numpy(),
            index.starts.contiguous().numpy(), index.members.contiguous().numpy())
    if index.parent is None:
        _select(q, fine[0], index.log_counts.contiguous().numpy(), *fine[1:], budget, np.float32(scale), rows)
        return torch.from_numpy(rows), fine[0].shape[0] * fine[0].shape[1]
    scored = np.zeros(q.shape[0], np.int64)
    _select_two(q, *fine, index.parent.contiguous().numpy(), index.coarse.float().contiguous().numpy(),
                index.coarse_log_counts.contiguous().numpy(), index.coarse_counts.contiguous().numpy(),
                budget, float(slack * budget), np.float32(scale), rows, scored)
    return torch.from_numpy(rows), int(scored.sum())
