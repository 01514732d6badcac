"""`recall serve --workers 2` (serving/workers.py) as a real process tree: two workers answer
Recall on one port, LoadIndex on the host's admin port reaches both, a foreign server on
the port is refused, a crashed worker stops the host, and stop leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.workers import socket_path, workers_dir
from tests.integration.harness import RECALL, copy_index_as
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

WORKERS = 2


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> SyntheticIndex:
    return publish_synthetic(tmp_path_factory.mktemp("workers"), redis_server.url)


def free_port_pair() -> int:
    """A port p with p and p + 1 both free (worker i serves /metrics on base + i)."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Host:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    metrics_port: int
    log: Path

    def workers(self) -> list[int]:
        """Pids of the supervisor's live children (its workers)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def private_admin(self, index: int) -> str:
        return f"unix:{socket_path(workers_dir(self.proc.pid), index)}"


def _start(synth: SyntheticIndex, redis: LocalRedis, tmp: Path, port: int) -> Host:
    admin_port, metrics_port = free_port(), free_port_pair()
    env = {
        **os.environ,
        "RECALL_PORT": str(port),
        "RECALL_ADMIN_PORT": str(admin_port),
        "RECALL_METRICS_PORT": str(metrics_port),
        "RECALL_REDIS_URL": redis.url,
        "RECALL_ARTIFACT_ROOT": str(synth.artifact_root),
        "RECALL_HOME": str(tmp),
        "RECALL_WATCH_INTERVAL_S": "0",
        "RECALL_VECTOR_REPAIR_INTERVAL_S": "0",
    }
    log = tmp / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*RECALL, "serve", "--workers", str(WORKERS)], env=env, stdout=out, stderr=out
        )
    return Host(proc, port, admin_port, metrics_port, log)


def _stop(host: Host) -> None:
    """SIGTERM the supervisor; if anything is left (a failed test), kill it all."""
    workers = host.workers()
    if host.proc.poll() is None:
        host.proc.send_signal(signal.SIGTERM)
        try:
            host.proc.wait(30)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            host.proc.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def host(synth: SyntheticIndex, redis_server: LocalRedis, tmp_path: Path) -> Iterator[Host]:
    started = _start(synth, redis_server, tmp_path, free_port())
    try:
        yield started
    finally:
        _stop(started)


def _wait_ready(host: Host, timeout: float = 90) -> None:
    """Until every worker serves (each private admin socket reports an index)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert host.proc.poll() is None, host.log.read_text()
        if all(_status(host.private_admin(i), wait=False) for i in range(WORKERS)):
            return
        time.sleep(0.3)
    raise AssertionError("workers did not start:\n" + host.log.read_text())


def _status(target: str, *, wait: bool = True) -> recall_pb2.GetStatusResponse | None:
    with grpc.insecure_channel(target) as channel:
        try:
            return recall_pb2_grpc.RecallAdminStub(channel).GetStatus(
                recall_pb2.GetStatusRequest(), timeout=5, wait_for_ready=wait
            )
        except grpc.RpcError:
            return None


def _served_calls(metrics_port: int) -> float:
    """recall_responses_total summed over sources, from one worker's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("recall_responses_total{")
    )


def test_two_workers_share_the_port_and_the_admin_reaches_both(
    host: Host, synth: SyntheticIndex
) -> None:
    _wait_ready(host)
    assert len(host.workers()) == WORKERS
    # Each channel (own subchannel pool) is a new connection; the kernel spreads
    # connections over the workers.
    users = synth.user_ids
    for n in range(24):
        with grpc.insecure_channel(
            f"127.0.0.1:{host.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            response = recall_pb2_grpc.RecallServiceStub(channel).Recall(
                recall_pb2.RecallRequest(user_id=users[n % len(users)], k=10), timeout=10
            )
        assert len(response.candidates) == 10
        assert response.index_version == synth.index.index_version
    served = [_served_calls(host.metrics_port + i) for i in range(WORKERS)]
    assert sum(served) >= 24 and all(s > 0 for s in served), served

    new = "20991231T000000Z-0a0b0c"
    index_dir = synth.artifact_root / "indexes" / synth.index.index_version
    copy_index_as(index_dir, new)
    with grpc.insecure_channel(f"127.0.0.1:{host.admin_port}") as channel:
        admin = recall_pb2_grpc.RecallAdminStub(channel)
        loaded = admin.LoadIndex(recall_pb2.LoadIndexRequest(version=new), timeout=60)
        assert loaded.index_version == new
        assert loaded.previous_index_version == synth.index.index_version
        host_status = admin.GetStatus(recall_pb2.GetStatusRequest(), timeout=10)
    assert host_status.index_version == new and host_status.recall_port == host.port
    for i in range(WORKERS):  # every worker, asked alone, serves the new version
        own = _status(host.private_admin(i))
        assert own is not None and own.index_version == new, i

    # A version that does not exist fails on the host admin and changes no worker.
    admin_target = f"127.0.0.1:{host.admin_port}"
    with grpc.insecure_channel(admin_target) as channel, pytest.raises(grpc.RpcError) as failed:
        recall_pb2_grpc.RecallAdminStub(channel).LoadIndex(
            recall_pb2.LoadIndexRequest(version="20000101T000000Z-ffffff"), timeout=30
        )
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert all(_status(host.private_admin(i)).index_version == new for i in range(WORKERS))  # type: ignore[union-attr]

    workers = host.workers()
    host.proc.send_signal(signal.SIGTERM)
    assert host.proc.wait(30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} left behind"
    assert not workers_dir(host.proc.pid).exists()


def test_a_foreign_server_on_the_port_is_refused(
    synth: SyntheticIndex, redis_server: LocalRedis, tmp_path: Path
) -> None:
    # The foreign listener even allows SO_REUSEPORT: a gRPC server with default options
    # does, and the workers alone would have joined it silently.
    with socket.socket() as foreign:
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        refused = _start(synth, redis_server, tmp_path, port)
        try:
            assert refused.proc.wait(60) == 1
            log = refused.log.read_text()
            assert f"cannot listen on 127.0.0.1:{port}" in log and "another server" in log
            assert "Traceback" not in log
            assert refused.workers() == []
        finally:
            _stop(refused)


def test_a_crashed_worker_stops_the_host_with_status_1(host: Host) -> None:
    _wait_ready(host)
    workers = sorted(host.workers())
    os.kill(workers[-1], signal.SIGKILL)
    assert host.proc.wait(40) == 1
    assert "exited" in host.log.read_text()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} left behind"
