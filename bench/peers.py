"""Classic-index peers on the serving benchmark's vectors: recall@10/@100 against exact
search, latency of one query per call (p50/p99) and of one batched call, build time and
memory, for Faiss IVF-PQ (the served configuration), hnswlib, ScaNN, Annoy, Faiss IndexLSH
and a scikit-learn KD-tree. Indexes are in bench/peer_indexes.py, the table in
bench/peer_report.py.

Same vectors and same queries for every peer: the item vectors of the synthetic model that
`recall bench serve` builds (``var/bench/synthetic-…``; seeded clustered unit vectors) and
``--queries`` of its user vectors (seed 1). Searches run on ``--threads`` threads (default
1); builds use every core. A peer whose library is missing prints "skipped: <why>".

    .venv/bin/python -m bench.peers [--items 100000] [--users 10000] [--peers all]
    .venv/bin/python -m bench.peers --items 1000000 --users 100000 \\
        --peers ivfpq,hnsw,scann,annoy,lsh
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from bench.peer_indexes import (
    AnnoyPeer,
    ExactPeer,
    HnswPeer,
    KdTreePeer,
    LshPeer,
    PeerIndex,
    ScannPeer,
    ServedIvfPqPeer,
)
from bench.peer_report import (
    PEER_NAMES,
    BuildCost,
    PeerRow,
    format_table,
    parse_peers,
    percentiles_ms,
)
from bench.serve import Dataset, rss_mib, synthetic_dataset
from serving.index.artifact import INDEX_KIND
from serving.index.build import exact_top_k, recall_against

# A KD-tree in 65 dimensions visits most leaves per query; above this size it only burns
# the benchmark's time (the issue asks for it at 100k).
KDTREE_MAX_ITEMS = 200_000
# Annoy forests per catalogue size: more trees = more recall per search_k, more memory.
ANNOY_LARGE_FROM = 200_000  # items
ANNOY_TREES_SMALL = (25, 100)
# At 1M × 64, 50 trees measured 960 MiB and 127 s to build; 100 would be twice that.
ANNOY_TREES_LARGE = (25, 50)
LSH_BITS = (64, 256, 1024)
LSH_RERANK_BITS = (256, 1024)


def _trim() -> None:
    """Free what the last peer left behind and give it back to the OS, so the next build's
    RSS growth is not hidden by reused heap (glibc keeps freed memory otherwise)."""
    gc.collect()
    # Not glibc: nothing to trim, and RSS deltas may then be low for later peers.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peer_indexes(
    names: Sequence[str], data: Dataset, n: int, dim: int, home: Path, workdir: Path
) -> list[PeerIndex | str]:
    """Index objects for the chosen peer names at catalogue size ``n``, in table order; a
    string instead of an index is a "skipped: …" line (KD-tree above KDTREE_MAX_ITEMS).
    The HNSW graph is cached under ``home`` across runs; Annoy files go to ``workdir``."""
    out: list[PeerIndex | str] = []
    for name in names:
        if name == "exact":
            out.append(ExactPeer())
        elif name == "ivfpq":
            index_dir = data.store.local_dir(INDEX_KIND, data.index.index_version)
            out.append(ServedIvfPqPeer(index_dir, data.build_s))
        elif name == "hnsw":
            out.append(HnswPeer(home / f"hnsw-{data.name}-{n}x{dim}-M16-efc100.bin"))
        elif name == "scann":
            out.append(ScannPeer())
        elif name == "annoy":
            trees = ANNOY_TREES_LARGE if n > ANNOY_LARGE_FROM else ANNOY_TREES_SMALL
            out.extend(AnnoyPeer(t, workdir) for t in trees)
        elif name == "lsh":
            out.extend(LshPeer(b, rerank=False) for b in LSH_BITS)
            out.extend(LshPeer(b, rerank=True) for b in LSH_RERANK_BITS)
        elif name == "kdtree":
            if n > KDTREE_MAX_ITEMS:
                out.append(f"sklearn KDTree: skipped: measured only at ≤ {KDTREE_MAX_ITEMS} items")
            else:
                out.append(KdTreePeer(40))
    return out


def measure(
    peer: PeerIndex,
    items: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    single: int,
    threads: int,
) -> list[PeerRow]:
    """Build ``peer`` (all cores), then per setting: recall of the answers to every query,
    per-call wall latency of the first ``single`` queries one at a time, and (libraries that
    batch) the process CPU time of one call with all queries, per query (summed over
    threads when ``threads`` > 1). Searches on ``threads`` threads."""
    cores = os.cpu_count() or 1
    peer.require()
    _trim()
    before = rss_mib(os.getpid())
    faiss.omp_set_num_threads(cores)
    started = time.perf_counter()
    peer.build(items, cores)
    measured = time.perf_counter() - started
    recorded = peer.recorded_build_s()
    size = peer.size_bytes()
    cost = BuildCost(
        seconds=measured if recorded is None else recorded,
        threads=cores,
        rss_mib=rss_mib(os.getpid()) - before,
        size_mib=None if size is None else size / 2**20,
        note=peer.note(),
    )
    faiss.omp_set_num_threads(threads)
    peer.set_search_threads(threads)
    rows: list[PeerRow] = []
    for setting in peer.settings(k):
        peer.search(queries[:5], k, setting)  # warm caches and lazily built tables
        batched_us: float | None = None
        # CPU time, not wall: on a shared machine a long batched call is preempted many
        # times, which would charge other processes' work to this peer.
        cpu0 = time.process_time()
        found = peer.search(queries, k, setting)
        if peer.batches:
            batched_us = (time.process_time() - cpu0) / len(queries) * 1e6
        calls = []
        for row in queries[:single]:
            t0 = time.perf_counter()
            peer.search(row[None, :], k, setting)
            calls.append(time.perf_counter() - t0)
        p50, p99 = percentiles_ms(calls)
        rows.append(
            PeerRow(
                peer=peer.name,
                setting=setting.label,
                recall_10=recall_against(truth, found, 10),
                recall_100=recall_against(truth, found, k),
                single_p50_ms=p50,
                single_p99_ms=p99,
                batched_us=batched_us,
                build=cost if not rows else None,
            )
        )
    return rows


def compare(
    data: Dataset,
    home: Path,
    names: Sequence[str],
    *,
    queries: int = 500,
    single: int = 200,
    k: int = 100,
    threads: int = 1,
) -> list[PeerRow]:
    """Every chosen peer on ``data``'s item vectors and the same ``queries`` user vectors;
    prints each peer's rows as it finishes (a long 1M run keeps what it measured) and the
    whole table at the end."""
    items = np.ascontiguousarray(data.model.item_vectors(), dtype=np.float32)
    users = data.model.user_vectors()
    pick = np.random.default_rng(1).choice(len(users), queries)
    q = np.ascontiguousarray(users[pick], dtype=np.float32)
    n, dim = items.shape
    k = min(k, n)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    truth = exact_top_k(items, q, k)
    print(
        f"\n## peers: {data.name} {n} × {dim}, {queries} queries (recall; single-query latency "
        f"over the first {single}), k={k}, search threads={threads}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    rows: list[PeerRow] = []
    workdir = Path(tempfile.mkdtemp(prefix="peers-", dir=home))
    try:
        pending = peer_indexes(names, data, n, dim, home, workdir)
        while pending:
            # Popped, so each built index is freed before the next build (at 1M they
            # would otherwise add up to several GB).
            peer = pending.pop(0)
            if isinstance(peer, str):
                print(peer, flush=True)
                continue
            try:
                got = measure(peer, items, q, truth, k, single, threads)
            except ImportError as exc:
                print(f"{peer.name}: skipped: {exc}", flush=True)
                continue
            finally:
                del peer
            rows.extend(got)
            for line in format_table(got).splitlines()[2:]:
                print(line, flush=True)
    finally:
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(format_table(rows))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size")
    ap.add_argument("--users", type=int, default=10_000, help="synthetic users (query pool)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=500, help="queries for recall")
    ap.add_argument("--single", type=int, default=200, help="queries timed one per call")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="search threads")
    ap.add_argument(
        "--peers", default="all", help=f"all, or comma-separated of: {', '.join(PEER_NAMES)}"
    )
    ap.add_argument("--home", type=Path, default=None, help="default: $RECALL_HOME/bench")
    args = ap.parse_args(argv)
    try:
        names = parse_peers(args.peers)
    except ValueError as exc:
        ap.error(str(exc))
    for flag in ("items", "users", "dim", "queries", "single", "k", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be ≥ 1")
    if args.single > args.queries:
        ap.error("--single must be ≤ --queries")
    from recall_cli import paths

    home = args.home or paths.home() / "bench"
    home.mkdir(parents=True, exist_ok=True)
    data = synthetic_dataset(home, args.items, args.users, args.dim)
    compare(
        data,
        home,
        names,
        queries=args.queries,
        single=args.single,
        k=args.k,
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
