"""Key clustering for Squeezed Attention: batched k-means and a cluster index with lookups.

`kmeans` is a batched PyTorch Lloyd k-means, one clustering per KV head. It was measured
against faiss-cpu and scikit-learn on this project's 2-core CPU (benchmarks/kmeans_backends.py,
docs/results/kmeans_backends.md). `ClusterIndex` keeps, per KV head, the centroids of a
layer's stored keys, each key's cluster, and optionally a coarse level over the clusters;
its lookup picks the keys a query is likely to attend to.
"""

from __future__ import annotations

import torch

from . import kernels
from .kernels.decode import select_rows


def kmeans(points: torch.Tensor, n_clusters: int, iterations: int = 10, seed: int = 0,
           spherical: bool = True, chunk: int = 8192,
           valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on `points` [G, m, d], independently for each of the G groups.

    Args:
        points: [G, m, d] float tensor.
        n_clusters: clusters per group (clamped to m).
        iterations: Lloyd iterations (stops early once no label changes).
        seed: initial centroids are `n_clusters` distinct points drawn with this seed.
        spherical: assign by cosine similarity (L2-normalised points and centroids), as
            Squeezed Attention clusters keys; otherwise by Euclidean distance.
        chunk: points scored at a time (bounds the [chunk, n_clusters] score matrix).
        valid: optional bool [G, m]; False marks padding, which never moves a centroid.
    Returns:
        (centroids [G, k, d], labels [G, m]); centroids are the means of the original
        (unnormalised) member points, zero for a cluster left empty.
    """
    groups, m, dim = points.shape
    k = max(1, min(n_clusters, m))
    points = points.float()
    space = torch.nn.functional.normalize(points, dim=-1) if spherical else points
    generator = torch.Generator().manual_seed(seed)
    if valid is None:
        start = torch.stack([torch.randperm(m, generator=generator)[:k] for _ in range(groups)])  # [G, k]
        weight = None
    else:  # draw among valid points first
        start = torch.rand(groups, m, generator=generator).masked_fill(~valid.cpu(), 2.0).argsort(1)[:, :k]
        weight = valid.float()
    centroids = space.gather(1, start.to(points.device)[..., None].expand(-1, -1, dim))
    labels = torch.full((groups, m), -1, dtype=torch.long, device=points.device)
    for _ in range(iterations):
        new_labels = assign(space, centroids, spherical, chunk)
        changed = new_labels != labels
        labels = new_labels
        centroids = _means(space, labels, k, centroids, weight)
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=-1)
        if not bool((changed if valid is None else changed & valid).any()):
            break
    return _means(points, labels, k, torch.zeros(groups, k, dim, device=points.device), weight), labels


def assign(space: torch.Tensor, centroids: torch.Tensor, spherical: bool = True,
           chunk: int = 8192) -> torch.Tensor:
    """Nearest centroid [G, m] for each point of `space` [G, m, d] among `centroids` [G, k, d]."""
    out = []
    half_norms = None if spherical else 0.5 * (centroids * centroids).sum(-1)[:, None, :]  # [G, 1, k]
    for a in range(0, space.shape[1], chunk):
        scores = torch.bmm(space[:, a:a + chunk], centroids.transpose(1, 2))  # [G, c, k]
        if half_norms is not None:
            scores = scores - half_norms  # argmax of x.c - |c|^2/2 is the nearest centroid
        out.append(scores.argmax(-1))
    return torch.cat(out, 1)


def _means(points, labels, k, previous, weight=None):
    groups, m, dim = points.shape
    weight = torch.ones(groups, m, device=points.device) if weight is None else weight
    sums = points.new_zeros(groups, k, dim).scatter_add_(
        1, labels[..., None].expand(-1, -1, dim), points * weight[..., None])
    counts = torch.zeros(groups, k, device=points.device).scatter_add_(1, labels, weight)
    means = sums / counts.clamp_min(1)[..., None]
    return torch.where(counts[..., None] > 0, means, previous)


def cluster_counts(labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Members per cluster [G, k] for labels [G, m]."""
    counts = torch.zeros(labels.shape[0], n_clusters, dtype=torch.long, device=labels.device)
    return counts.scatter_add_(1, labels, torch.ones_like(labels))


def tree_kmeans(points: torch.Tensor, cluster_size: int, coarse_size: int, iterations: int = 10,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two-level k-means, top down: coarse clusters first, then `coarse_size` fine clusters in each.

    Costs O(m * (k_coarse + coarse_size)) per iteration instead of O(m * k_fine) for a flat
    k-means with as many fine clusters; every coarse cluster of every head is split in one
    batched k-means (members padded to the largest coarse cluster).
    Returns (fine centroids [G, k, d], fine labels [G, m], coarse centroids [G, kc, d],
    parent [G, k]: the coarse cluster of each fine one).
    """
    groups, m, dim = points.shape
    n_coarse = max(1, round(m / (cluster_size * coarse_size)))
    coarse, coarse_labels = kmeans(points, n_coarse, iterations, seed)
    n_coarse = coarse.shape[1]
    group = (coarse_labels + torch.arange(groups, device=points.device)[:, None] * n_coarse).flatten()
    order = group.argsort(stable=True)
    sizes = torch.bincount(group, minlength=groups * n_coarse)
    slot = torch.arange(group.numel(), device=points.device) - (sizes.cumsum(0) - sizes)[group[order]]
    width = int(sizes.max())
    padded = points.new_zeros(groups * n_coarse, width, dim)
    padded[group[order], slot] = points.flatten(0, 1)[order].float()
    valid = torch.zeros(groups * n_coarse, width, dtype=torch.bool, device=points.device)
    valid[group[order], slot] = True
    fine, fine_labels = kmeans(padded, coarse_size, iterations, seed, valid=valid)
    per_coarse = fine.shape[1]
    labels = torch.empty(groups * m, dtype=torch.long, device=points.device)
    labels[order] = (group[order] % n_coarse) * per_coarse + fine_labels[group[order], slot]
    parent = torch.arange(n_coarse, device=points.device).repeat_interleave(per_coarse).expand(groups, -1)
    fine = fine.reshape(groups, n_coarse * per_coarse, dim)
    return fine, labels.view(groups, m), coarse, parent.contiguous()


class ClusterIndex:
    """Per KV head: centroids [Hkv, k, d], labels [Hkv, m], optional coarse level and thresholds.

    Keys are assumed in the frame the queries will score them in (rotated or not).
    """

    def __init__(self, centroids, labels, coarse=None, parent=None, threshold=None):
        self.centroids, self.labels, self.coarse, self.parent = centroids, labels, coarse, parent
        self.threshold = threshold  # [Hkv] estimated-probability thresholds, or None
        k = centroids.shape[1]
        self.counts = cluster_counts(labels, k) if k else labels.new_zeros(labels.shape[0], 0)
        self.log_counts = self.counts.float().log()  # -inf for an empty cluster: it is never estimated
        # Rank of each key inside its cluster (in memory order): a budget may take part of a cluster.
        # `members` lists each cluster's keys together (cluster by cluster, memory order inside),
        # cluster c's from `starts[c]`.
        order = labels.argsort(dim=1, stable=True)
        starts = self.counts.cumsum(1) - self.counts
        first_of_cluster = starts.gather(1, labels.gather(1, order))
        ranks = torch.arange(labels.shape[1], device=labels.device) - first_of_cluster
        self.rank = torch.empty_like(labels).scatter_(1, order, ranks)
        self.members, self.starts = order, starts
        if parent is not None:
            self.coarse_counts = torch.zeros(parent.shape[0], coarse.shape[1], dtype=torch.long,
                                             device=parent.device).scatter_add_(1, parent, self.counts)
            self.coarse_log_counts = self.coarse_counts.float().log()

    @classmethod
    def build(cls, points: torch.Tensor, cluster_size: int, levels: int = 1, coarse_size: int = 16,
              method: str = "tree", iterations: int = 10, seed: int = 0) -> ClusterIndex:
        """Cluster `points` [Hkv, m, d]: one fine cluster per `cluster_size` keys on average,
        and for `levels=2` one coarse cluster per `coarse_size` fine ones."""
        m = points.shape[1]
        if method == "tree":
            fine, labels, coarse, parent = tree_kmeans(points, cluster_size, coarse_size, iterations, seed)
            return cls(fine, labels, coarse, parent) if levels == 2 else cls(fine, labels)
        fine, labels = kmeans(points, max(1, m // cluster_size), iterations, seed)
        if levels == 1:
            return cls(fine, labels)
        coarse, parent = kmeans(fine, max(1, fine.shape[1] // coarse_size), iterations, seed)
        return cls(fine, labels, coarse, parent)

    def estimate(self, q: torch.Tensor, scale: float, head: int, clusters=None, log_norm=None):
        """Estimated attention probability of one key of each cluster: [n, k] (max over the
        query heads [g, n, d] of head `head`), and the log normaliser [g, n, 1] used."""
        centroids = self.centroids[head] if clusters is None else self.centroids[head, clusters]
        log_counts = self.log_counts[head] if clusters is None else self.log_counts[head, clusters]
        logits = (q.float() @ centroids.float().T) * scale  # [g, n, k]
        return _estimated(logits, log_counts, 0, log_norm)

    def select(self, q: torch.Tensor, scale: float, head: int, budget: int, slack: float = 4.0):
        """Keys of the stored segment that queries q [g, n, d] (head `head`'s group) attend.

        With a threshold: every cluster whose estimated probability reaches it. Otherwise the
        best clusters until `budget` keys (the last cluster taken in part): exactly
        min(budget, m) keys per query. With a coarse level, fine clusters are only scored
        inside the coarse clusters covering `slack * budget` keys (hierarchical lookup).
        Returns (rows [u] into the segment, mask [n, u] per query, centroids scored).
        """
        n, k = q.shape[1], self.centroids.shape[1]
        labels, rank = self.labels[head], self.rank[head]
        if self.parent is None:
            probability, _ = self.estimate(q, scale, head)
            allowed, scored = None, k
        else:
            coarse_logits = (q.float() @ self.coarse[head].float().T) * scale
            coarse_counts = self.coarse_counts[head]
            log_norm = torch.logsumexp(coarse_logits + self.coarse_log_counts[head], -1, keepdim=True)
            coarse_p = (coarse_logits - log_norm).exp().amax(0)
            taken = _keys_before(coarse_p, coarse_counts) < slack * budget  # [n, kc]
            allowed = taken[:, self.parent[head]]  # [n, k]
            candidates = allowed.any(0).nonzero().squeeze(1)
            probability = coarse_p.new_zeros(n, k)
            probability[:, candidates] = self.estimate(q, scale, head, candidates, log_norm)[0]
            scored = coarse_p.shape[1] + candidates.numel()
        if self.threshold is not None:
            chosen = probability >= self.threshold[head]
            keys = (chosen if allowed is None else chosen & allowed)[:, labels]
        else:
            before = _keys_before(probability, self.counts[head], allowed)
            keys = (before[:, labels] + rank[None]) < budget  # [n, m]
        rows = keys.any(0).nonzero().squeeze(1)
        return rows, keys[:, rows], scored

    def select_one(self, q: torch.Tensor, scale: float, budget: int, slack: float = 4.0) -> tuple[torch.Tensor, int]:
        """Decoding's lookup for every KV head at once: one query position, q [Hkv, g, 1, d] and a
        key budget (no threshold). The keys `select` chooses for each head, as rows
        [Hkv, min(budget, m)] cluster by cluster (in no defined order: attention does not care),
        and the centroids scored (summed over heads), found from the ranked clusters' members
        without a pass over all m keys. Compiled on the CPU (`kernels.decode.select_rows`, one level
        or two); elsewhere in torch (two levels: each head's `select`)."""
        heads, m = self.labels.shape
        if budget >= m:
            return torch.arange(m, device=self.labels.device).expand(heads, m), 0
        if q.device.type == "cpu" and kernels.enabled(self.centroids):  # q is converted to float32
            return select_rows(q[:, :, 0], self, scale, budget, slack)
        if self.parent is not None:  # each head's `select`: one query keeps exactly `budget` keys
            picks = [self.select(q[h], scale, h, budget, slack) for h in range(heads)]
            return torch.stack([rows for rows, _, _ in picks]), sum(scored for _, _, scored in picks)
        return self._select_one_torch(q, scale, budget), self.centroids.shape[0] * self.centroids.shape[1]

    def _select_one_torch(self, q: torch.Tensor, scale: float, budget: int) -> torch.Tensor:
        heads, m = self.labels.shape
        # `estimate` for every head in one batched product: [Hkv, g, k] -> [Hkv, k]
        logits = torch.bmm(q[:, :, 0].float(), self.centroids.float().transpose(1, 2)) * scale
        probability, _ = _estimated(logits, self.log_counts[:, None], 1)
        order = probability.argsort(dim=-1, descending=True, stable=True)
        ranked = self.counts.gather(1, order)
        take = (budget - (ranked.cumsum(1) - ranked)).clamp(min=0).minimum(ranked).flatten()
        first = (self.starts.gather(1, order) + torch.arange(heads, device=order.device)[:, None] * m).flatten()
        within = torch.arange(heads * budget, device=order.device) - (take.cumsum(0) - take).repeat_interleave(take)
        rows = self.members.flatten()[first.repeat_interleave(take) + within]
        return rows.view(heads, budget)

    def in_cluster_order(self) -> ClusterIndex:
        """The same index over keys laid out cluster by cluster (`members` order, per head): the
        memory of `KVSegment.reorder_per_head(self.members)`."""
        return ClusterIndex(self.centroids, self.labels.gather(1, self.members), self.coarse, self.parent,
                            self.threshold)

    def calibrate(self, queries: list[torch.Tensor], scale: float, budget: int) -> None:
        """Per head, the threshold that keeps `budget` keys per query on average over `queries`."""
        self.threshold = torch.stack([threshold_keeping(values, weights, budget)
                                      for values, weights in self.estimates(queries, scale)])

    def estimates(self, queries: list[torch.Tensor], scale: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per head (queries[h]: [g, w, d]): the estimated probabilities of its clusters for each
        of the w queries, flattened, and the keys each stands for divided by w (so that a
        threshold's kept weight is in keys per query)."""
        out = []
        for head, q in enumerate(queries):
            probability, _ = self.estimate(q, scale, head)  # [w, k]
            weights = self.counts[head].float().repeat(probability.shape[0]) / probability.shape[0]
            out.append((probability.flatten(), weights))
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {"centroids": self.centroids, "labels": self.labels}
        if self.parent is not None:
            state |= {"coarse": self.coarse, "parent": self.parent}
        if self.threshold is not None:
            state["threshold"] = self.threshold
        return state


def _estimated(logits: torch.Tensor, log_counts: torch.Tensor, heads_dim: int, log_norm=None):
    """Estimated attention probability of one key of each cluster from the centroid logits
    [..., k] and the clusters' log sizes: exp(logit_c) / sum_c' N_c' exp(logit_c'), max over the
    query heads (`heads_dim`), and the log normaliser used (computed unless given)."""
    if log_norm is None:
        log_norm = torch.logsumexp(logits + log_counts, dim=-1, keepdim=True)
    return (logits - log_norm).exp().amax(heads_dim), log_norm


def threshold_keeping(values: torch.Tensor, weights: torch.Tensor, keep: float) -> torch.Tensor:
    """The value at which the entries ranked from the highest value down first weigh `keep`."""
    values, order = values.sort(descending=True)
    at = torch.searchsorted(weights[order].cumsum(0), torch.tensor(float(keep))).clamp(max=len(values) - 1)
    return values[at]


def calibrate_globally(indexes: list[ClusterIndex], queries: list[list[torch.Tensor]], scale: float,
                       budget: int) -> None:
    """One threshold for every index and head (Squeezed Attention's global quantile): kept keys
    vary between layers and heads and average `budget` per query over all of them."""
    estimates = [e for index, qs in zip(indexes, queries, strict=True) for e in index.estimates(qs, scale)]
    values = torch.cat([v for v, _ in estimates])
    weights = torch.cat([w.to(values.device) for _, w in estimates])
    threshold = threshold_keeping(values, weights, budget * len(estimates))
    for index in indexes:
        index.threshold = threshold.expand(index.centroids.shape[0]).clone()


def _keys_before(probability: torch.Tensor, counts: torch.Tensor, allowed=None) -> torch.Tensor:
    """Per query and cluster, the keys in clusters ranked higher (by probability) [n, k];
    clusters not allowed rank after every allowed one."""
    if allowed is not None:
        probability = probability.masked_fill(~allowed, -1.0)
    order = probability.argsort(dim=-1, descending=True, stable=True)
    ranked = counts[order]
    before = ranked.cumsum(-1) - ranked
    before = torch.empty_like(before).scatter_(1, order, before)
    if allowed is not None:
        before = before.masked_fill(~allowed, torch.iinfo(before.dtype).max // 2)
    return before
