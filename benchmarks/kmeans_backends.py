"""Which k-means is fastest here: our batched torch k-means, faiss-cpu, or scikit-learn.

Squeezed Attention clusters each layer's keys per KV head. This times one layer of
SmolLM2-135M shape (3 KV heads, head dim 64) with one cluster per 16 keys and 10 Lloyd
iterations from random initial points, and reports the clustering quality (mean cosine of
each point to its centroid) next to the time. `torch-tree` is the two-level k-means squeezed
uses by default (coarse clusters first, then fine clusters inside each).

    python benchmarks/kmeans_backends.py --lengths 4k,16k,32k
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from common import ResultFile, markdown_table

from longreach.clustering import kmeans, tree_kmeans
from longreach.units import parse_count


def _quality(points, centroids, labels):
    unit = torch.nn.functional.normalize(points, dim=-1)
    index = labels[..., None].expand(-1, -1, points.shape[-1])
    mine = torch.nn.functional.normalize(centroids, dim=-1).gather(1, index)
    return float((unit * mine).sum(-1).mean())


def run_torch(points, k, iters):
    return kmeans(points, k, iterations=iters, seed=0)


def run_torch_tree(points, k, iters):
    """Ours, top down: 16 fine clusters per coarse one (squeezed's default `kmeans=tree`)."""
    fine, labels, _, _ = tree_kmeans(points, points.shape[1] // k, 16, iters, seed=0)
    return fine, labels


def run_faiss(points, k, iters):
    import faiss
    labels = []
    for group in points:
        x = torch.nn.functional.normalize(group, dim=-1).numpy()
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=0, spherical=True,
                          max_points_per_centroid=x.shape[0])  # no subsampling, like the others
        km.train(x)
        label = torch.from_numpy(km.index.search(x, 1)[1][:, 0]).long()
        labels.append(label)
    labels = torch.stack(labels)
    return _means(points, labels, k), labels


def run_sklearn(points, k, iters):
    from sklearn.cluster import KMeans
    labels = []
    for group in points:
        x = torch.nn.functional.normalize(group, dim=-1).numpy()
        km = KMeans(k, init="random", n_init=1, max_iter=iters, algorithm="lloyd", random_state=0, tol=0.0)
        km.fit(x)
        labels.append(torch.from_numpy(km.labels_).long())
    labels = torch.stack(labels)
    return _means(points, labels, k), labels


def _means(points, labels, k):
    g, m, d = points.shape
    sums = points.new_zeros(g, k, d).scatter_add_(1, labels[..., None].expand(-1, -1, d), points)
    counts = torch.zeros(g, k).scatter_add_(1, labels, torch.ones(g, m))
    return sums / counts.clamp_min(1)[..., None]


BACKENDS = {"torch": run_torch, "torch-tree": run_torch_tree, "faiss": run_faiss, "sklearn": run_sklearn}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="4k,16k,32k")
    parser.add_argument("--keys-per-cluster", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", default="docs/results/kmeans_backends.json")
    args = parser.parse_args()
    results = ResultFile(args.out, {"keys_per_cluster": args.keys_per_cluster, "iterations": args.iterations})
    rows = []
    for length in (parse_count(x) for x in args.lengths.split(",")):
        g = torch.Generator().manual_seed(0)
        # Keys with a few dominant channels, as real pre-RoPE keys have.
        points = torch.randn(3, length, 64, generator=g) * torch.linspace(0.2, 3.0, 64)
        k = length // args.keys_per_cluster
        for name, fn in BACKENDS.items():
            key = f"{name}|{length}"
            if not results.done(key):
                fn(points[:, :512], 8, 2)  # warm-up / imports
                t0 = time.perf_counter()
                centroids, labels = fn(points, k, args.iterations)
                seconds = time.perf_counter() - t0
                results.put(key, {"backend": name, "length": length, "clusters": k, "seconds": seconds,
                                  "quality": _quality(points, centroids, labels)})
            cell = results.data["cells"][key]
            rows.append([name, length, cell["clusters"], f"{cell['seconds']:.2f}", f"{cell['quality']:.4f}"])
            print(rows[-1], flush=True)
    table = markdown_table(["backend", "keys per head", "clusters", "seconds (3 heads)", "mean cosine"], rows)
    Path(args.out).with_suffix(".md").write_text(
        "# k-means backends for Squeezed Attention\n\nCommand: `python benchmarks/kmeans_backends.py`\n\n"
        f"One layer of SmolLM2 shape (3 KV heads, d=64), {args.iterations} Lloyd iterations, "
        f"one cluster per {args.keys_per_cluster} keys, spherical (cosine) assignment, "
        f"{torch.get_num_threads()} threads.\n\n" + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
