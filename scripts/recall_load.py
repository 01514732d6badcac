"""Closed-loop Recall load against a do-nothing echo server and real `recall serve`
processes with different settings, with the same client in the same run.

A synthetic ML-100K-sized index (943 users, 1,682 items, 32-d; no training) is published,
its user vectors loaded into a throwaway redis-server; then each server (its own process)
gets ``--in-flight`` concurrent Recall calls (k = ``--k``) from one asyncio client for
``--seconds``, after a one-second warm-up. The echo server answers every call with one
canned response of the same size. Variants are RECALL_* settings:

    .venv/bin/python scripts/recall_load.py --seconds 10 \\
        --variant batched= --variant unbatched=RECALL_BATCHING=off \\
        --variant asyncio=RECALL_EVENT_LOOP=asyncio

``ECHO=yield|redis-async|redis-sync`` in a variant runs the echo with one step of a real
handler's work per call (``ECHO_WORK``), to price that step against the bare echo.
``CWD=DIR`` in a variant runs that server from another checkout of the repository (its
code, this run's client, index and Redis), e.g. the commit before a change:
``git archive HEAD~1 | tar -x -C /tmp/base`` then ``--variant before=CWD=/tmp/base``.

``--floor`` adds issue 6's in-process batched floor (a Redis MGET of ``--in-flight`` users
plus one Faiss search over them with the served nprobe and refine factor, back to back,
1 and 2 Faiss threads). Server CPU counts the server's whole process tree (with
RECALL_WORKERS=N: the supervisor and its N workers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

# Appended, not prepended: a PYTHONPATH naming another checkout (a CWD= variant's path
# cost run) comes first, so that run measures that checkout's code.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.echo_server import EchoRecallService, canned_response
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

ECHO_WORK = ("none", "yield", "redis-async", "redis-sync")
"""What an echo variant (``ECHO=…``) does before it answers: nothing (the ceiling), one
``await asyncio.sleep(0)`` (the cost of a handler that suspends), one Redis GET with
redis-py's asyncio client, or one blocking redis-py GET on the event loop."""


class _WorkingEcho(EchoRecallService):
    """The echo plus one piece of ``ECHO_WORK`` per Recall: what one step of a real
    handler costs on top of gRPC, measured the way the servers are."""

    def __init__(self, response: recall_pb2.RecallResponse, work: str, redis_url: str) -> None:
        import redis
        import redis.asyncio as aioredis

        super().__init__(response)
        self.work = work
        self.sync = redis.Redis.from_url(redis_url) if work == "redis-sync" else None
        self.aio = aioredis.Redis.from_url(redis_url) if work == "redis-async" else None

    async def Recall(
        self, request: recall_pb2.RecallRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.RecallResponse:
        if self.aio is not None:
            await self.aio.get(b"recall-load:echo")
        elif self.sync is not None:
            self.sync.get(b"recall-load:echo")
        elif self.work == "yield":
            await asyncio.sleep(0)
        return self.response


async def echo_main(port: int, k: int, work: str = "none") -> None:
    from grpc_health.v1 import health, health_pb2_grpc

    response = canned_response(
        [f"i{i}" for i in range(k)], k, "20260101T000000Z-synth0", "20260101T000000Z-0123ab"
    )
    server = grpc.aio.server()
    servicer = (
        EchoRecallService(response)
        if work == "none"
        else _WorkingEcho(response, work, os.environ["RECALL_REDIS_URL"])
    )
    recall_pb2_grpc.add_RecallServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


async def load(
    target: str, users: list[str], k: int, in_flight: int, seconds: float, channels: int = 1
) -> dict:
    """``in_flight`` closed loops over ``channels`` connections (loop w uses channel
    w % channels; each channel its own subchannel pool, so its own TCP connection: the
    kernel spreads connections, not calls, over RECALL_WORKERS processes)."""
    latencies: list[float] = []
    failures = 0
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        stubs = [recall_pb2_grpc.RecallServiceStub(c) for c in opened]

        async def worker(w: int, until: float, record: bool) -> None:
            nonlocal failures
            stub = stubs[w % len(stubs)]
            i = w
            while time.perf_counter() < until:
                request = recall_pb2.RecallRequest(user_id=users[i % len(users)], k=k)
                i += in_flight
                started = time.perf_counter()
                try:
                    await stub.Recall(request, timeout=10)
                except grpc.RpcError:
                    failures += 1
                    continue
                if record:
                    latencies.append(time.perf_counter() - started)

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(w, warm, False) for w in range(in_flight)))
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(worker(w, until, True) for w in range(in_flight)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in opened:
            await channel.close()
    ms = np.array(latencies) * 1e3
    return {
        "qps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "failures": failures,
    }


class _NoDeadline:
    """The one ServicerContext method ``RecallServicer.Recall`` reads on a call that
    succeeds: a call without a deadline."""

    def time_remaining(self) -> float | None:
        return None


async def path_cost_main(users: list[str], k: int, in_flight: int, seconds: float) -> None:
    """The server's own request path without gRPC: a ``RecallServer`` configured from the
    RECALL_* environment (its real engine, batcher, Redis client and index), whose
    ``Recall`` handler is called by ``in_flight`` coroutines in this process for
    ``seconds``. Prints one line: calls, process CPU µs per call, wall µs per call. The
    difference to a full run's server CPU per call is gRPC's share (and the echo's)."""
    from serving.config import ServerSettings
    from serving.server import RecallServer, RecallServicer

    settings = ServerSettings(port=0, admin_port=0, metrics_port=0)
    server = RecallServer(settings)
    await server.start()
    try:
        servicer = RecallServicer(
            server.engine, server.recorder, settings.max_batch, batcher=server.batcher
        )
        context: Any = _NoDeadline()
        calls = 0

        async def loop(w: int, until: float) -> None:
            nonlocal calls
            i = w
            while time.perf_counter() < until:
                request = recall_pb2.RecallRequest(user_id=users[i % len(users)], k=k)
                i += in_flight
                await servicer.Recall(request, context)
                calls += 1

        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(loop(w, warm) for w in range(in_flight)))
        calls = 0
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(loop(w, wall + seconds) for w in range(in_flight)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"{calls} {cpu / calls * 1e6:.1f} {wall / calls * 1e6:.1f}", flush=True)
    finally:
        await server.stop(0)


def path_cost(
    env: dict[str, str], workdir: str | None, users: list[str], args: argparse.Namespace
) -> dict:
    """``path_cost_main`` in a child process (own settings, optionally another checkout)."""
    if workdir:
        env = {**env, "PYTHONPATH": workdir}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--path-cost-users",
            ",".join(users),
            "--k",
            str(args.k),
            "--in-flight",
            str(args.in_flight),
            "--seconds",
            str(args.seconds),
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=args.seconds * 3 + 120,
    )
    if out.returncode != 0:
        raise SystemExit(f"path cost run failed:\n{out.stderr[-2000:]}")
    calls, cpu_us, wall_us = out.stdout.split()[-3:]
    return {"calls": int(calls), "cpu_us": float(cpu_us), "wall_us": float(wall_us)}


def wait_workers(supervisor: int, count: int, timeout: float) -> None:
    """Until each of the supervisor's ``count`` workers serves an index (asked on its
    private admin socket): health answers from whichever worker a connection lands on."""
    from serving.workers import socket_path, workers_dir

    deadline = time.monotonic() + timeout
    for i in range(count):
        target = f"unix:{socket_path(workers_dir(supervisor), i)}"
        while True:
            with grpc.insecure_channel(target) as channel:
                try:
                    status = recall_pb2_grpc.RecallAdminStub(channel).GetStatus(
                        recall_pb2.GetStatusRequest(), timeout=2
                    )
                    if status.index_version:
                        break
                except grpc.RpcError:
                    pass
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {i} of pid {supervisor} did not load an index")
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process ``pid`` and its live children (the
    workers of a RECALL_WORKERS=N supervisor), from Linux /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def floor(synth: SyntheticIndex, redis_url: str, batch: int, seconds: float) -> dict:
    """Back-to-back rounds of one MGET of ``batch`` users + one batched search (the served
    nprobe and refine factor, k = the manifest's gate k=100 depth), in this process."""
    import faiss
    import redis

    from keyspace.user_vectors import user_vector_key
    from serving.index.loaded import load_index_dir

    loaded = load_index_dir(synth.artifact_root / "indexes" / synth.index.index_version)
    client = redis.Redis.from_url(redis_url)
    users, dim = synth.user_ids, synth.index.dim
    results = {}
    for threads in (1, 2):
        faiss.omp_set_num_threads(threads)
        rounds, i = 0, 0
        latencies = []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            keys = [
                user_vector_key(synth.model.model_version, users[(i + j) % len(users)])
                for j in range(batch)
            ]
            i += batch
            started = time.perf_counter()
            raw = client.mget(keys)
            queries = np.frombuffer(
                b"".join(r for r in raw if isinstance(r, bytes)), dtype="<f4"
            ).reshape(batch, dim)
            loaded.search(queries, 100, synth.index.nprobe)
            latencies.append(time.perf_counter() - started)
            rounds += 1
        ms = np.array(latencies) * 1e3
        results[threads] = {
            "qps": rounds * batch / sum(latencies),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "failures": 0,
            "cpu_ms": 0.0,
        }
    client.close()
    return results


def main() -> None:
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the finally blocks stop the
    # servers and the throwaway Redis instead of leaving them on their ports.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--items", type=int, default=1682)
    ap.add_argument("--users", type=int, default=943)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument(
        "--channels", type=int, default=1, help="client connections (RECALL_WORKERS needs > 1)"
    )
    ap.add_argument("--floor", action="store_true", help="also measure the in-process floor")
    ap.add_argument(
        "--fast-scan",
        action="store_true",
        help="build the index with 4-bit fast-scan PQ codes (RECALL_INDEX_FAST_SCAN)",
    )
    ap.add_argument("--variant", action="append", default=[], help="NAME=ENV=VAL,ENV=VAL")
    ap.add_argument(
        "--py-spy", type=Path, help="record each real server with py-spy into DIR/NAME.txt"
    )
    ap.add_argument(
        "--py-spy-native",
        action="store_true",
        help="with --py-spy: also sample native (C/C++) frames (gRPC core, Faiss)",
    )
    ap.add_argument(
        "--path-cost",
        action="store_true",
        help="also measure each variant's request path in-process, without gRPC "
        "(CPU µs per call of the handler, batcher, Redis read, search and encoding)",
    )
    ap.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--echo-work", choices=ECHO_WORK, default="none", help=argparse.SUPPRESS)
    ap.add_argument("--path-cost-users", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        asyncio.run(echo_main(args.echo_server, args.k, args.echo_work))
        return
    if args.path_cost_users:
        asyncio.run(
            path_cost_main(args.path_cost_users.split(","), args.k, args.in_flight, args.seconds)
        )
        return
    variants = args.variant or ["batched=", "unbatched=RECALL_BATCHING=off"]
    with tempfile.TemporaryDirectory(prefix="recall-load-") as tmp:
        local = LocalRedis(Path(tmp) / "redis", free_port(), persist=False)
        local.start()
        try:
            built = time.perf_counter()
            synth = publish_synthetic(
                Path(tmp),
                local.url,
                users=args.users,
                items=args.items,
                dim=args.dim,
                fast_scan=args.fast_scan,
            )
            users = synth.user_ids
            print(
                f"{synth.index.factory} nprobe={synth.index.nprobe} "
                f"refine_factor={synth.index.refine_factor} items={args.items} dim={args.dim} "
                f"k={args.k} in_flight={args.in_flight} channels={args.channels} "
                f"seconds={args.seconds} "
                f"(build + gate {synth.index.train_seconds + synth.index.add_seconds:.0f} s "
                f"of {time.perf_counter() - built:.0f} s publish + vector load; gate "
                + ", ".join(f"r@{q.k}={q.recall:.3f}" for q in synth.index.quality_by_k)
                + ")",
                flush=True,
            )
            runs: list[tuple[str, list[str], dict[str, str]]] = [
                (
                    "echo",
                    [sys.executable, __file__, "--echo-server", "PORT", "--k", str(args.k)],
                    {},
                )
            ]
            for spec in variants:
                name, _, envs = spec.partition("=")
                extra = dict(e.split("=", 1) for e in envs.split(",") if e)
                work = extra.pop("ECHO", None)
                if work is not None:  # an echo that does one step of real work (ECHO_WORK)
                    if work not in ECHO_WORK:
                        raise SystemExit(f"--variant {spec}: ECHO must be one of {ECHO_WORK}")
                    echo_cmd = [*runs[0][1], "--echo-work", work]
                    runs.append((name, echo_cmd, extra))
                    continue
                runs.append((name, [sys.executable, "-m", "recall_cli.main", "serve"], extra))
            runs.append(runs[0])  # echo again: the machine drifts
            results = []
            for name, cmd, extra in runs:
                extra = dict(extra)
                # CWD=DIR: run that variant's `recall serve` from another checkout (e.g. an
                # older commit from `git archive`), to compare code versions in one run.
                workdir = extra.pop("CWD", None)
                port = free_port()
                env = {
                    **os.environ,
                    "RECALL_PORT": str(port),
                    "RECALL_ADMIN_PORT": str(free_port()),
                    "RECALL_METRICS_PORT": "0",
                    "RECALL_REDIS_URL": local.url,
                    "RECALL_ARTIFACT_ROOT": str(synth.artifact_root),
                    "RECALL_HOME": tmp,
                    "RECALL_WATCH_INTERVAL_S": "0",
                    **extra,
                }
                proc = subprocess.Popen(
                    [c.replace("PORT", str(port)) for c in cmd],
                    env=env,
                    cwd=workdir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    client = RecallClient(f"127.0.0.1:{port}")
                    if not client.wait_serving(60):
                        raise SystemExit(f"{name}: server did not start")
                    client.close()
                    if int(extra.get("RECALL_WORKERS", "1")) > 1:
                        wait_workers(proc.pid, int(extra["RECALL_WORKERS"]), 60)
                    spy = None
                    if args.py_spy and "--echo-server" not in cmd:
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        spy = subprocess.Popen(
                            [
                                str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "--format",
                                "raw",
                                *(["--native"] if args.py_spy_native else ["--nonblocking"]),
                                "-d",
                                str(int(args.seconds + 1)),
                                "-o",
                                str(args.py_spy / f"{name}.txt"),
                                "-p",
                                str(proc.pid),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    cpu_before = cpu_seconds(proc.pid)
                    result = asyncio.run(
                        load(
                            f"127.0.0.1:{port}",
                            users,
                            args.k,
                            args.in_flight,
                            args.seconds,
                            args.channels,
                        )
                    )
                    calls = result["qps"] * (args.seconds + 1)  # + the warm-up second
                    result["cpu_ms"] = (cpu_seconds(proc.pid) - cpu_before) * 1e3 / calls
                    if spy is not None:
                        spy.wait(30)
                finally:
                    proc.terminate()
                    proc.wait(20)
                results.append((name, result))
                print(
                    f"{name:<12} {result['qps']:>8.0f} QPS  p50 {result['p50']:6.2f} ms  "
                    f"p99 {result['p99']:6.2f} ms  server CPU {result['cpu_ms']:.3f} ms/call  "
                    f"failures {result['failures']}",
                    flush=True,
                )
                if args.path_cost and "--echo-server" not in cmd:
                    cost = path_cost(env, workdir, users, args)
                    result["path_cpu_us"] = cost["cpu_us"]
                    print(
                        f"{'':<12} in-process path (no gRPC): {cost['calls']} calls, "
                        f"{cost['cpu_us']:.0f} µs CPU/call, {cost['wall_us']:.0f} µs wall/call",
                        flush=True,
                    )
            if args.floor:
                for threads, result in floor(
                    synth, local.url, args.in_flight, args.seconds
                ).items():
                    results.insert(-1, (f"floor{threads}t", result))
                    print(
                        f"{f'floor{threads}t':<12} {result['qps']:>8.0f} QPS  "
                        f"p50 {result['p50']:6.2f} ms  p99 {result['p99']:6.2f} ms "
                        f"(batches of {args.in_flight}, in-process)",
                        flush=True,
                    )
            echo_qps = (results[0][1]["qps"] + results[-1][1]["qps"]) / 2
            echo_p99 = (results[0][1]["p99"] + results[-1][1]["p99"]) / 2
            print(f"{'':<12} × echo QPS  × echo p99   (echo: mean of first and last run)")
            for name, result in results[1:-1]:
                qps_ratio, p99_ratio = result["qps"] / echo_qps, result["p99"] / echo_p99
                floors = [r["qps"] for n, r in results if n.startswith("floor")]
                versus_floor = f"  {result['qps'] / max(floors):.2f} × best floor" if floors else ""
                print(f"{name:<12} {qps_ratio:>9.2f}  {p99_ratio:>10.2f}{versus_floor}")
        finally:
            local.stop()


if __name__ == "__main__":
    main()
