"""`recall bench serve`: a real `recall serve` process under closed-loop load, next to the
references measured in the same run, plus the index's accuracy/cost curves and the peers
(hnswlib, ScaNN, Annoy, Faiss IndexLSH, a KD-tree: bench/peers.py) on the same vectors.

Datasets:
- synthetic: seeded clustered unit vectors (default 1M items × 64-d, 100k users), built with
  the pipeline's code into ``var/bench/synthetic-…/`` and reused by later runs;
- demo: the published index under ``$RECALL_HOME/artifacts`` (``make demo``), when present.

For each dataset: user vectors go into a throwaway Redis (``LocalRedis`` on a free port);
then, at 1, 8, 32 and 64 calls in flight (one asyncio client, ``--seconds`` each):
- server: `recall serve` as its own process (``RECALL_BATCHING`` passed through);
- echo ceiling: ``bench.echo_server``, same proto, canned response of the same size;
- floor: in-process, Redis MGET of as many users as are in flight + one batched Faiss search
  with the served nprobe and re-rank; its rate is users per second of that loop.

    .venv/bin/recall bench serve [--seconds 15] [--items 1000000] [--users 100000]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import faiss
import grpc
import numpy as np
import redis

from artifacts.checksums import MANIFEST_NAME
from artifacts.errors import ArtifactNotFound
from artifacts.store import ArtifactStore
from bench.echo_server import canned_response
from bench.peer_report import PEER_NAMES
from bench.recall_server import write_vector_model
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from serving.index.artifact import INDEX_KIND, IndexManifest, publish_index, write_index_dir
from serving.index.build import exact_top_k, recall_against
from serving.index.loaded import LoadedIndex, load_index_dir
from serving.index.params import choose_params
from serving.model_artifact import ModelArtifact, open_model_artifact
from serving.user_vectors import load_user_vectors, user_vector_key

IN_FLIGHT = (1, 8, 32, 64)
MODEL_VERSION = "20260101T000000Z-bench0"


@dataclass(frozen=True)
class Load:
    """Closed-loop result: completed calls per second and per-call latency percentiles."""

    qps: float
    p50_ms: float
    p99_ms: float
    calls: int


@dataclass(frozen=True)
class Dataset:
    name: str
    store: ArtifactStore
    model: ModelArtifact
    index: IndexManifest
    build_s: float | None  # wall time of build + gate + publish, None when not measured here


def _percentiles(latencies: Sequence[float], seconds: float) -> Load:
    ms = np.asarray(latencies) * 1e3
    return Load(
        len(ms) / seconds, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms)
    )


async def closed_loop(
    target: str, users: Sequence[str], k: int, in_flight: int, seconds: float
) -> Load:
    """``in_flight`` workers each send Recall, await it, send the next, for ``seconds``
    (after a 1 s warm-up that is not counted)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recall_pb2_grpc.RecallServiceStub(channel)
        latencies: list[float] = []
        counting = False
        stop_at = 0.0

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                request = recall_pb2.RecallRequest(user_id=users[i % len(users)], k=k)
                started = time.perf_counter()
                await stub.Recall(request, timeout=30)
                if counting:
                    latencies.append(time.perf_counter() - started)
                i += in_flight

        stop_at = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        counting = True
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(worker(w * 7919) for w in range(in_flight)))
        return _percentiles(latencies, time.perf_counter() - started)


def floor(
    loaded: LoadedIndex,
    client: redis.Redis,
    users: Sequence[str],
    batch: int,
    seconds: float,
    k: int,
    threads: int,
) -> Load:
    """In-process: MGET ``batch`` user vectors + one batched search (served nprobe, re-rank)
    on ``threads`` Faiss threads, in a loop for ``seconds``; rate in users per second."""
    faiss.omp_set_num_threads(threads)
    keys = [user_vector_key(loaded.model_version, u) for u in users]
    latencies: list[float] = []
    served = 0
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        chunk = [keys[(i + j) % len(keys)] for j in range(batch)]
        i += batch
        t0 = time.perf_counter()
        raw = client.mget(chunk)
        matrix = np.stack([np.frombuffer(cast(bytes, r), dtype="<f4") for r in raw if r])
        loaded.search(matrix, k, loaded.manifest.nprobe)
        latencies.append(time.perf_counter() - t0)
        served += len(matrix)
    elapsed = time.perf_counter() - started
    load = _percentiles(latencies, elapsed)
    return Load(served / elapsed, load.p50_ms, load.p99_ms, served)


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` with output into ``log``; terminate (then kill) it on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_port(target: str, timeout_s: float) -> None:
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    finally:
        channel.close()


# ------------------------------------------------------------------ datasets


def synthetic_dataset(
    home: Path, items: int, users: int, dim: int, fast_scan: bool = False
) -> Dataset:
    """Model + index of seeded vectors under ``home`` (reused when its index matches the
    current parameters; ``fast_scan``: 4-bit fast-scan PQ codes)."""
    root = home / f"synthetic-{items}x{dim}-u{users}"
    store = ArtifactStore(root / "artifacts")
    if not store.exists("models", MODEL_VERSION):
        with tempfile.TemporaryDirectory(prefix="recall-bench-") as tmp:
            staging = Path(tmp) / MODEL_VERSION
            write_vector_model(staging, users, items, dim)
            store.publish("models", MODEL_VERSION, staging)
    model = open_model_artifact(store.local_dir("models", MODEL_VERSION))
    params = choose_params(items, dim, fast_scan=fast_scan)
    build_s: float | None = None
    try:
        index = _manifest(store, store.latest(INDEX_KIND))
        # As the nightly rebuild decides (serving.tasks.rebuild_reason): the served factor is
        # the tuner's choice, not the heuristic's, so it is no sign of a stale index.
        stale = (index.factory, index.refine) != (params.factory, params.refine)
    except ArtifactNotFound:
        stale = True
    if stale:
        print(f"building {params.factory} for {items} × {dim} (2 cores: about a minute)…")
        started = time.perf_counter()
        # Gated as in production.
        _, index = publish_index(model, store, params=params, allow_gpu=True)
        build_s = time.perf_counter() - started
        (root / "build.json").write_text(json.dumps({"seconds": build_s}))
    elif (root / "build.json").exists():
        build_s = json.loads((root / "build.json").read_text())["seconds"]
    return Dataset("synthetic", store, model, index, build_s)


def demo_dataset(artifact_root: str) -> Dataset | None:
    """The published demo index and its model, or None when nothing is published."""
    try:
        store = ArtifactStore(artifact_root)
        index = _manifest(store, store.latest(INDEX_KIND))
        model = open_model_artifact(store.local_dir("models", index.model_version))
    except (ArtifactNotFound, OSError):
        return None
    return Dataset("demo", store, model, index, None)


def _manifest(store: ArtifactStore, version: str) -> IndexManifest:
    path = store.local_dir(INDEX_KIND, version) / MANIFEST_NAME
    return IndexManifest.model_validate_json(path.read_text())


# ------------------------------------------------------------------ serving load


def run_load(
    data: Dataset,
    redis_url: str,
    home: Path,
    seconds: float,
    batching: Sequence[str],
    k: int,
    levels: Sequence[int],
) -> None:
    client = redis.Redis.from_url(redis_url)
    load_user_vectors(data.model, client)
    user_ids = data.model.user_ids()
    rng = np.random.default_rng(0)
    users = [user_ids[i] for i in rng.integers(0, len(user_ids), size=20_000)]
    loaded = load_index_dir(data.store.local_dir(INDEX_KIND, data.index.index_version))
    k = min(k, loaded.item_count)
    m = data.index
    print(
        f"\n## {data.name}: {m.item_count} items × {m.dim}-d, {len(user_ids)} users, "
        f"{m.factory} nprobe={m.nprobe} refine_factor={m.refine_factor}, k={k}, "
        f"{seconds:g} s per row"
    )
    canned = canned_response(loaded.item_ids, k, m.model_version, m.index_version)
    canned_path = home / f"canned-{data.name}.bin"
    canned_path.write_bytes(canned.SerializeToString())
    results: dict[tuple[str, int], Load] = {}
    echo_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    echo_args = [sys.executable, "-m", "bench.echo_server"]
    echo_args += ["--port", str(echo_port), "--response", str(canned_path)]
    with process(echo_args, env, home / "echo.log"):
        _wait_port(f"127.0.0.1:{echo_port}", 30)
        for c in levels:
            results[("echo", c)] = asyncio.run(
                closed_loop(f"127.0.0.1:{echo_port}", users, k, c, seconds)
            )
    cores = os.cpu_count() or 1
    floors = {f"floor, {t} Faiss thread{'s' if t > 1 else ''}": t for t in sorted({1, cores})}
    for c in levels:
        for name, threads in floors.items():
            results[(name, c)] = floor(loaded, client, users, c, min(seconds, 5.0), k, threads)
    rss = {}
    for mode in batching:
        port, admin = free_port(), free_port()
        server_env = {
            **env,
            "RECALL_PORT": str(port),
            "RECALL_ADMIN_PORT": str(admin),
            "RECALL_METRICS_PORT": "0",
            "RECALL_REDIS_URL": redis_url,
            "RECALL_ARTIFACT_ROOT": str(data.store.root),
            "RECALL_INDEX_VERSION": m.index_version,
            "RECALL_WATCH_INTERVAL_S": "0",
            "RECALL_HOME": str(home / "server-home"),
            "RECALL_BATCHING": "1" if mode == "on" else "0",
        }
        log = home / f"server-{data.name}-batching-{mode}.log"
        with process([sys.executable, "-m", "recall_cli.main", "serve"], server_env, log) as proc:
            probe = RecallClient(f"127.0.0.1:{port}", timeout_s=10)
            if not probe.wait_serving(300):
                probe.close()
                raise RuntimeError(f"recall serve did not start; its log: {log}")
            probe.close()
            rss[mode] = rss_mib(proc.pid)
            for c in levels:
                results[(f"server batching={mode}", c)] = asyncio.run(
                    closed_loop(f"127.0.0.1:{port}", users, k, c, seconds)
                )
    client.close()
    print("× floor: against the faster floor row at the same batch size (= calls in flight)")
    print(
        f"{'path':<28} {'in flight':>9} {'QPS':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'× echo QPS':>10} {'× echo p99':>10} {'× floor QPS':>11}"
    )
    for (path, c), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        echo = results[("echo", c)]
        fl = max((results[(name, c)] for name in floors), key=lambda r: r.qps)
        print(
            f"{path:<28} {c:>9} {r.qps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.qps / echo.qps:>9.2f}x {r.p99_ms / echo.p99_ms:>9.2f}x {r.qps / fl.qps:>10.2f}x"
        )
    for mode, mib in rss.items():
        print(
            f"server RSS (batching={mode}, index loaded): {mib:.0f} MiB; index.faiss "
            f"{_index_bytes(data) / m.item_count:.0f} B/item"
        )


def _index_bytes(data: Dataset) -> int:
    return next(int(f["size"]) for f in data.index.files if f["path"] == "index.faiss")


# ------------------------------------------------------------------ accuracy and cost


def accuracy_curve(data: Dataset, queries: int = 500, k: int = 100) -> None:
    """recall@k vs exact and single-query latency over nprobe × refine factor (1 thread)."""
    loaded = load_index_dir(data.store.local_dir(INDEX_KIND, data.index.index_version))
    vectors = data.model.item_vectors()
    users = data.model.user_vectors()
    q = np.ascontiguousarray(users[np.random.default_rng(1).choice(len(users), queries)])
    faiss.omp_set_num_threads(2)
    truth = exact_top_k(vectors, q, k)
    faiss.omp_set_num_threads(1)
    base = data.index.nprobe
    nprobes = sorted({max(1, base // 4), max(1, base // 2), base, min(data.index.nlist, 2 * base)})
    print(f"\n## accuracy: {data.name}, recall@{k} vs exact over {queries} users, 1 thread")
    print(f"{'nprobe':>6} {'refine':>6} {'recall@10':>9} {'recall@100':>10} {'ms/query':>9}")
    for nprobe in nprobes:
        for factor in (1, 2, 4, 8):
            found10 = loaded.search(q, 10, nprobe, k_factor=factor)[1]
            started = time.perf_counter()
            for row in q[:200]:
                loaded.search(row[None, :], k, nprobe, k_factor=factor)
            per_query = (time.perf_counter() - started) / 200
            found = loaded.search(q, k, nprobe, k_factor=factor)[1]
            mark = " ← served" if (nprobe, factor) == (base, data.index.refine_factor) else ""
            print(
                f"{nprobe:>6} {factor:>6} {recall_against(truth, found10, 10):>9.3f} "
                f"{recall_against(truth, found, k):>10.3f} {per_query * 1e3:>9.3f}{mark}"
            )


def build_cost(sizes: Sequence[int], dim: int, home: Path, fast_scan: bool = False) -> None:
    """Build (gate included) wall time and memory per item at each catalog size."""
    print(f"\n## build cost: {dim}-d, all cores ({os.cpu_count()}), gate included")
    print(
        f"{'items':>9} {'factory':<32} {'nprobe':>6} {'build s':>8} {'train':>6} {'add':>6} "
        f"{'refine':>6} {'B/item':>7} {'r@10':>6} {'r@100':>6}"
    )
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="recall-bench-cost-", dir=home) as tmp:
            model_dir = Path(tmp) / MODEL_VERSION
            write_vector_model(model_dir, min(n, 10_000), n, dim)
            model = open_model_artifact(model_dir)
            out = Path(tmp) / "index"
            out.mkdir()
            started = time.perf_counter()
            m = write_index_dir(model, out, "cost", fast_scan=fast_scan)
            wall = time.perf_counter() - started
            size = (out / "index.faiss").stat().st_size
            r = {q.k: q.recall for q in m.quality_by_k}
            print(
                f"{n:>9} {m.factory:<32} {m.nprobe:>6} {wall:>8.1f} {m.train_seconds:>6.1f} "
                f"{m.add_seconds:>6.1f} {m.refine_seconds:>6.1f} {size / n:>7.0f} "
                f"{r.get(10, 0):>6.3f} {r.get(100, 0):>6.3f}"
            )


# ------------------------------------------------------------------ entry point


def run(
    *,
    seconds: float,
    items: int,
    users: int,
    dim: int,
    k: int,
    batching: str,
    levels: Sequence[int],
    demo_root: str | None,
    home: Path,
    cost_sizes: Sequence[int],
    hnsw: bool,
    peers: Sequence[str] = PEER_NAMES,
    fast_scan: bool = False,
) -> None:
    """The whole benchmark; ``peers`` (bench/peer_report.PEER_NAMES) are compared on the
    synthetic dataset's vectors at the end, hnswlib only when ``hnsw``; ``fast_scan``: the
    synthetic index (and the build-cost ones) with 4-bit fast-scan PQ codes."""
    from serving.config import ServerSettings

    home.mkdir(parents=True, exist_ok=True)
    modes = ["off", "on"] if batching == "both" else [batching]
    print(
        f"recall bench serve: {os.cpu_count()} CPUs, faiss {faiss.__version__}, "
        f"client + server + Redis on this machine"
    )
    if "batching" not in ServerSettings.model_fields:
        print(
            "note: this server has no micro-batching yet; RECALL_BATCHING is passed through "
            "and ignored, so the batching=on and =off rows measure the same server"
        )
    synthetic = synthetic_dataset(home, items, users, dim, fast_scan)
    datasets = [synthetic]
    demo = demo_dataset(demo_root) if demo_root else None
    if demo is not None:
        datasets.append(demo)
    else:
        print("demo index: none published (run `make demo`); synthetic only")
    local = LocalRedis(home / "redis", free_port(), persist=False)
    if not local.start():
        raise RuntimeError("redis-server did not start (is it installed? `make redis-install`)")
    try:
        for data in datasets:
            run_load(data, local.url, home, seconds, modes, k, levels)
    finally:
        local.stop()
    for data in datasets:
        accuracy_curve(data)
    if cost_sizes:
        build_cost(cost_sizes, dim, home, fast_scan)
    if synthetic.build_s is not None:
        print(f"(serving dataset build, gate and publish: {synthetic.build_s:.1f} s)")
    from bench.peers import compare

    chosen = [p for p in peers if hnsw or p != "hnsw"]
    if chosen:
        compare(synthetic, home, chosen)
