"""End-to-end Recall latency through a real `recall serve` process and a real Redis,
against the floor measured in the same run: one Redis GET plus one Faiss search in-process.

Setup (seeded, no training): a model artifact of random clustered unit vectors is written
in the documented layout, its IVF-PQ index is built and published, its user vectors are
loaded into a throwaway redis-server, and a server process is started on free ports.

    .venv/bin/python -m bench.recall_server [--items 50000] [--users 10000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import grpc
import numpy as np
import redis
from grpc_health.v1 import health_pb2

from artifacts.checksums import MANIFEST_NAME, list_files
from artifacts.store import ArtifactStore
from bench.index_search import clustered_unit_vectors
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from serving.index.artifact import INDEX_KIND, publish_index
from serving.index.loaded import load_index_dir
from serving.model_artifact import open_model_artifact
from serving.user_vectors import load_user_vectors, user_vector_key


def write_vector_model(out: Path, n_users: int, n_items: int, dim: int) -> None:
    """A model artifact (schema recall.model/v1) holding random vectors instead of towers."""
    out.mkdir(parents=True)
    np.save(out / "user_vectors.npy", clustered_unit_vectors(n_users, dim, 256, seed=1))
    np.save(out / "item_vectors.npy", clustered_unit_vectors(n_items, dim, 256, seed=0))
    (out / "user_ids.json").write_text(json.dumps([f"u{i}" for i in range(n_users)]))
    (out / "item_ids.json").write_text(json.dumps([f"i{i}" for i in range(n_items)]))
    popular = [{"item_id": f"i{i}", "count": 1000 - i} for i in range(1000)]
    (out / "popular_items.json").write_text(json.dumps(popular))
    manifest = {
        "schema_id": "recall.model/v1",
        "model_version": out.name,
        "embedding_dim": dim,
        "files": list_files(out),
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


async def recall_concurrently(
    target: str, users: list[str], k: int, in_flight: int
) -> tuple[list[float], float]:
    """Each request's latency with ``in_flight`` requests outstanding, and requests/s."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(in_flight)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recall_pb2_grpc.RecallServiceStub(channel)

        async def one(user: str) -> None:
            async with gate:
                started = time.perf_counter()
                await stub.Recall(recall_pb2.RecallRequest(user_id=user, k=k), timeout=10)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(u) for u in users[:100]))  # warm-up
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(u) for u in users))
        rate = len(users) / (time.perf_counter() - started)
    return latencies, rate


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ms = np.array(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--in-flight", type=int, default=16)
    args = ap.parse_args(argv)
    rng = random.Random(0)
    faiss.omp_set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="recall-bench-") as tmp:
        root = Path(tmp) / "artifacts"
        staging = Path(tmp) / "model" / "20260101T000000Z-bench0"
        write_vector_model(staging, args.users, args.items, args.dim)
        store = ArtifactStore(root)
        store.publish("models", staging.name, staging)
        model = open_model_artifact(store.local_dir("models", staging.name))
        _, index_manifest = publish_index(model, store, min_recall=0.0, allow_gpu=False)
        local = LocalRedis(Path(tmp) / "redis", free_port(), persist=False)
        local.start()
        server = None
        try:
            load_user_vectors(model, redis.Redis.from_url(local.url))
            port, admin = free_port(), free_port()
            env = {
                **os.environ,
                "RECALL_PORT": str(port),
                "RECALL_ADMIN_PORT": str(admin),
                "RECALL_METRICS_PORT": "0",
                "RECALL_REDIS_URL": local.url,
                "RECALL_ARTIFACT_ROOT": str(root),
                "RECALL_HOME": tmp,
            }
            server = subprocess.Popen(
                [sys.executable, "-m", "recall_cli.main", "serve"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            client = RecallClient(f"127.0.0.1:{port}", timeout_s=10)
            if not client.wait_serving(120):
                raise SystemExit("server did not start")
            users = [f"u{rng.randrange(args.users)}" for _ in range(args.requests)]

            # Reference floor, same machine, same run: Redis GET + Faiss search in-process.
            loaded = load_index_dir(store.local_dir(INDEX_KIND, index_manifest.index_version))
            direct = redis.Redis.from_url(local.url)
            floor = []
            for user in users:
                started = time.perf_counter()
                raw = direct.get(user_vector_key(model.model_version, user))
                assert isinstance(raw, bytes), f"no vector for {user}"
                vector = np.frombuffer(raw, dtype="<f4")[None, :]
                loaded.search(vector, args.k, index_manifest.nprobe)
                floor.append(time.perf_counter() - started)

            for user in users[:100]:  # warm-up
                client.recall(user, args.k)
            # Second reference: a gRPC call that does no work (health Check) on the same server.
            round_trip = []
            for _ in users:
                started = time.perf_counter()
                client.health_stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                round_trip.append(time.perf_counter() - started)
            unary = []
            for user in users:
                started = time.perf_counter()
                client.recall(user, args.k)
                unary.append(time.perf_counter() - started)

            batched = []
            for s in range(0, len(users), args.batch):
                requests = [
                    recall_pb2.RecallRequest(user_id=u, k=args.k) for u in users[s : s + args.batch]
                ]
                started = time.perf_counter()
                client.batch_recall(requests)
                batched.append((time.perf_counter() - started) / len(requests))
            client.close()
            concurrent, concurrent_rate = asyncio.run(
                recall_concurrently(f"127.0.0.1:{port}", users, args.k, args.in_flight)
            )
        finally:
            if server is not None:
                server.terminate()
                server.wait(20)
            local.stop()

    fmean = percentiles(floor)[2]
    print(
        f"items={args.items} users={args.users} dim={args.dim} k={args.k} "
        f"requests={args.requests} {index_manifest.factory} nprobe={index_manifest.nprobe} "
        f"faiss_threads=1"
    )
    print(f"{'path':<44} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'per s':>8} {'× floor':>8}")
    rows = [
        ("floor: Redis GET + Faiss search, in-process", floor, None),
        ("gRPC round trip, no work (health Check)", round_trip, None),
        ("Recall over gRPC (one request at a time)", unary, None),
        (f"Recall, {args.in_flight} in flight (latency; rate)", concurrent, concurrent_rate),
        (f"BatchRecall, {args.batch} users/call (per user)", batched, None),
    ]
    for label, samples, rate in rows:
        p50, p99, mean = percentiles(samples)
        per_second = rate if rate is not None else 1 / (mean / 1000)
        print(
            f"{label:<44} {p50:>8.3f} {p99:>8.3f} {mean:>8.3f} {per_second:>8.0f} "
            f"{mean / fmean:>7.2f}x"
        )


if __name__ == "__main__":
    main()
