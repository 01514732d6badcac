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

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.echo_server import EchoRecallService, canned_response
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from tests.integration.synthetic_index import publish_synthetic


async def echo_main(port: int, k: int) -> None:
    from grpc_health.v1 import health, health_pb2_grpc

    response = canned_response(
        [f"i{i}" for i in range(k)], k, "20260101T000000Z-synth0", "20260101T000000Z-0123ab"
    )
    server = grpc.aio.server()
    recall_pb2_grpc.add_RecallServiceServicer_to_server(EchoRecallService(response), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


async def load(target: str, users: list[str], k: int, in_flight: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recall_pb2_grpc.RecallServiceStub(channel)

        async def worker(w: int, until: float, record: bool) -> None:
            nonlocal failures
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
    ms = np.array(latencies) * 1e3
    return {
        "qps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "failures": failures,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--items", type=int, default=1682)
    ap.add_argument("--users", type=int, default=943)
    ap.add_argument("--variant", action="append", default=[], help="NAME=ENV=VAL,ENV=VAL")
    ap.add_argument(
        "--py-spy", type=Path, help="record each real server with py-spy into DIR/NAME.txt"
    )
    ap.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        asyncio.run(echo_main(args.echo_server, args.k))
        return
    variants = args.variant or ["batched=", "unbatched=RECALL_BATCHING=off"]
    with tempfile.TemporaryDirectory(prefix="recall-load-") as tmp:
        local = LocalRedis(Path(tmp) / "redis", free_port(), persist=False)
        local.start()
        try:
            synth = publish_synthetic(Path(tmp), local.url, users=args.users, items=args.items)
            users = synth.user_ids
            print(
                f"{synth.index.factory} nprobe={synth.index.nprobe} items={args.items} "
                f"k={args.k} in_flight={args.in_flight} seconds={args.seconds}"
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
                runs.append((name, [sys.executable, "-m", "recall_cli.main", "serve"], extra))
            runs.append(runs[0])  # echo again: the machine drifts
            results = []
            for name, cmd, extra in runs:
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
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    client = RecallClient(f"127.0.0.1:{port}")
                    if not client.wait_serving(60):
                        raise SystemExit(f"{name}: server did not start")
                    client.close()
                    spy = None
                    if args.py_spy and name != "echo":
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        spy = subprocess.Popen(
                            [
                                str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "--format",
                                "raw",
                                "--nonblocking",
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
                        load(f"127.0.0.1:{port}", users, args.k, args.in_flight, args.seconds)
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
            echo_qps = (results[0][1]["qps"] + results[-1][1]["qps"]) / 2
            echo_p99 = (results[0][1]["p99"] + results[-1][1]["p99"]) / 2
            print(f"{'':<12} × echo QPS  × echo p99   (echo: mean of first and last run)")
            for name, result in results[1:-1]:
                qps_ratio, p99_ratio = result["qps"] / echo_qps, result["p99"] / echo_p99
                print(f"{name:<12} {qps_ratio:>9.2f}  {p99_ratio:>10.2f}")
        finally:
            local.stop()


if __name__ == "__main__":
    main()
