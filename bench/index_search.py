"""IVF-PQ search with the served exact re-rank vs exact search (IndexFlatIP) on the same
vectors, same run, same threads.

Prints per-configuration latency and throughput and their ratio to the exact reference,
plus recall@k of the ANN results against exact ones, so the trade-off is visible in one
table. Vectors are seeded, clustered, unit norm (like trained item vectors).

    .venv/bin/python -m bench.index_search [--items 100000] [--dim 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from serving.index.build import build_ivfpq
from serving.index.params import choose_params
from serving.index.search import search_parameters


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, size=n)] + 0.5 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def timed_search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    batch: int,
    params: faiss.SearchParameters | None,
) -> tuple[float, np.ndarray]:
    """Seconds per query (median of 3 passes) and the ids found."""
    runs = []
    ids = np.empty((len(queries), k), dtype=np.int64)
    for _ in range(3):
        started = time.perf_counter()
        for s in range(0, len(queries), batch):
            _, found = index.search(queries[s : s + batch], k, params=params)
            ids[s : s + batch] = found
        runs.append((time.perf_counter() - started) / len(queries))
    return float(np.median(runs)), ids


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(
        np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)])
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    run(args.items, args.dim, args.queries, args.k, args.threads)


def run(n_items: int, dim: int, n_queries: int, k: int, threads: int) -> None:
    """Build the index for ``n_items`` synthetic vectors and print the comparison table."""
    args = argparse.Namespace(items=n_items, dim=dim, queries=n_queries, k=k, threads=threads)
    faiss.omp_set_num_threads(args.threads)

    items = clustered_unit_vectors(args.items, args.dim, 256, seed=0)
    queries = clustered_unit_vectors(args.queries, args.dim, 256, seed=1)
    params = choose_params(args.items, args.dim)
    started = time.perf_counter()
    built = build_ivfpq(items, params, allow_gpu=False)
    build_s = time.perf_counter() - started
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(items)

    print(
        f"items={args.items} dim={args.dim} queries={args.queries} k={args.k} "
        f"threads={args.threads} faiss={faiss.__version__}"
    )
    print(f"{params.factory}: built in {build_s:.2f} s on {built.device}")
    print(f"{'search':<28} {'batch':>5} {'µs/query':>10} {'QPS':>10} {'speed-up':>9} {'recall':>7}")
    for batch in (1, 256):
        ref_s, truth = timed_search(exact, queries, args.k, batch, None)
        print(
            f"{'exact IndexFlatIP':<28} {batch:>5} {ref_s * 1e6:>10.1f} {1 / ref_s:>10.0f} "
            f"{1.0:>8.2f}x {1.0:>7.3f}"
        )
        for nprobe in sorted({1, params.nprobe, params.nlist // 4 or 1, params.nlist}):
            search_params = search_parameters(built.index, nprobe)
            ann_s, found = timed_search(built.index, queries, args.k, batch, search_params)
            label = f"{params.factory} nprobe={nprobe}"
            print(
                f"{label:<28} {batch:>5} {ann_s * 1e6:>10.1f} {1 / ann_s:>10.0f} "
                f"{ref_s / ann_s:>8.2f}x {recall(truth, found):>7.3f}"
            )


if __name__ == "__main__":
    main()
