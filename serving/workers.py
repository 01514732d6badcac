"""Several recall server processes on one host (``RECALL_WORKERS=N``): the supervisor, the
worker entry point, and the admin fan-out between workers.

One Python process serves at most about one core (the GIL); ``N`` workers share the recall
port on purpose with ``SO_REUSEPORT`` (the kernel spreads *connections* over them).

- **Refusing a foreign server.** Before any worker starts, the supervisor binds the recall
  and admin ports itself *without* ``SO_REUSEPORT`` and releases them: a port held by any
  other process fails that bind, and the supervisor exits 1 with a message. Workers then
  bind the recall port with ``grpc.so_reuseport=1``.
- **One admin port per host.** Worker 0 serves the configured admin port. Every worker also
  serves RecallAdmin on a private Unix socket ``<dir>/worker-<i>.sock`` (``<dir>`` =
  ``$TMPDIR/recall-workers-<supervisor pid>``, mode 0700: only the server's user reaches
  it). Worker 0's ``LoadIndex`` loads, then tells every other worker to load *the same
  version* over those sockets; its ``GetStatus`` asks them too (see ``merge_status``). So
  ``recall load-index``, ``recall status`` and the fleet ship see one server per host.
  Every worker runs its own LATEST watcher (edge-triggered, so they converge alone);
  vector self-repair runs in worker 0 only (one writer is enough).
- **Metrics:** worker ``i`` serves /metrics on ``RECALL_METRICS_PORT + i`` (scrape each).
- **Lifecycle:** SIGTERM/SIGINT to the supervisor is forwarded to every worker, which
  drains gracefully (``RecallServer.stop``); a worker still alive ``grace_s + 10`` s later
  is killed. A worker that exits on its own (crash, failed bind) stops all the others and
  the supervisor exits 1: restarts are the process manager's job (systemd, Kubernetes),
  which then sees one failed unit instead of a host silently serving with fewer workers.

Covered by tests/integration/test_workers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pydantic import SecretStr

from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.config import ServerSettings
from serving.errors import BackendUnavailable, IndexLoadError

log = logging.getLogger(__name__)

# How long worker 0 waits for another worker's LoadIndex (a 1M-item index verifies and
# loads in ~5 s on a busy machine) and GetStatus.
PEER_LOAD_TIMEOUT_S = 120.0
PEER_STATUS_TIMEOUT_S = 5.0
# Extra time after grace_s before a worker that ignored SIGTERM is killed.
KILL_AFTER_GRACE_S = 10.0
# How often the supervisor checks its workers.
POLL_S = 0.2


@dataclass(frozen=True)
class WorkerRole:
    """What one worker process is: ``index`` of ``count``, its private admin address
    (``unix:/…/worker-<index>.sock``) and, for worker 0 only, the other workers' addresses
    (``peers``) that its admin calls fan out to."""

    index: int
    count: int
    private_admin: str
    peers: tuple[str, ...] = ()


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.sock"


def workers_dir(supervisor_pid: int) -> Path:
    """Where the supervisor ``supervisor_pid`` keeps its workers' private admin sockets."""
    return Path(tempfile.gettempdir()) / f"recall-workers-{supervisor_pid}"


class WorkerPeers:
    """Worker 0's clients of the other workers' private admin sockets."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = tuple(addresses)
        self._stubs: list[recall_pb2_grpc.RecallAdminStub] = []
        self._channels: list[grpc.aio.Channel] = []

    def _clients(self) -> list[recall_pb2_grpc.RecallAdminStub]:
        # grpc.aio channels bind to the running loop: made at first use, not in __init__.
        if not self._stubs:
            self._channels = [grpc.aio.insecure_channel(a) for a in self.addresses]
            self._stubs = [recall_pb2_grpc.RecallAdminStub(c) for c in self._channels]
        return self._stubs

    async def load_index(self, version: str) -> None:
        """Every other worker loads ``version`` (the one worker 0 just loaded, never
        "LATEST": it may move meanwhile). IndexLoadError naming each worker that failed."""
        request = recall_pb2.LoadIndexRequest(version=version)
        results = await asyncio.gather(
            *(
                stub.LoadIndex(request, timeout=PEER_LOAD_TIMEOUT_S, wait_for_ready=True)
                for stub in self._clients()
            ),
            return_exceptions=True,
        )
        failed = [
            f"worker {i}: {_describe(r)}"
            for i, r in enumerate(results, start=1)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise IndexLoadError(
                f"loaded {version} in worker 0, but not in every worker of this host "
                f"({'; '.join(failed)}); retry LoadIndex"
            )

    async def statuses(self) -> list[recall_pb2.GetStatusResponse]:
        """Each other worker's own GetStatus, in worker order. BackendUnavailable if one
        does not answer."""
        results = await asyncio.gather(
            *(
                stub.GetStatus(recall_pb2.GetStatusRequest(), timeout=PEER_STATUS_TIMEOUT_S)
                for stub in self._clients()
            ),
            return_exceptions=True,
        )
        for i, result in enumerate(results, start=1):
            if isinstance(result, BaseException):
                raise BackendUnavailable(
                    f"worker {i} of this host does not answer: {_describe(result)}",
                    reason="worker",
                )
        return [r for r in results if isinstance(r, recall_pb2.GetStatusResponse)]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


def merge_status(
    own: recall_pb2.GetStatusResponse, peers: Sequence[recall_pb2.GetStatusResponse]
) -> None:
    """Fold the other workers' statuses into worker 0's ``own`` (in place), so the host
    reads as one server: ``failed_calls`` is the sum; when a worker serves another index
    version (or none: ""), that worker's version, model and item count are reported, so a
    fleet check waiting for a version sees the host as not there yet; Redis is healthy
    only if every worker reaches it."""
    for peer in peers:
        own.failed_calls += peer.failed_calls
        if peer.index_version != own.index_version:
            own.index_version = peer.index_version
            own.model_version = peer.model_version
            own.item_count = peer.item_count
        if not peer.redis_healthy and own.redis_healthy:
            own.redis_healthy, own.redis_detail = False, peer.redis_detail


# --- the supervisor -----------------------------------------------------------------------


class PortTaken(RuntimeError):
    """The recall or admin port is held by another process."""


def claim_port(host: str, port: int) -> int:
    """Bind ``host:port`` without SO_REUSEPORT and release it: the port (a free one when
    ``port`` is 0). PortTaken if any process holds it, whatever its socket options."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers of our own last run;
        # it never lets two listeners share a port (that is SO_REUSEPORT, left off).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortTaken(
                f"cannot listen on {host}:{port}: {exc.strerror} (another server already "
                "runs there? stop it or choose another RECALL_PORT/RECALL_ADMIN_PORT)"
            ) from exc
        return int(probe.getsockname()[1])


def worker_settings(settings: ServerSettings, index: int, admin_port: int) -> dict[str, Any]:
    """The settings of worker ``index`` as JSON-ready values (secrets in clear: they go
    through a pipe, never the command line or the environment)."""
    values = settings.model_dump()
    for key, value in values.items():
        if isinstance(value, SecretStr):
            values[key] = value.get_secret_value()
    if index > 0:
        values["admin_port"] = 0  # its public admin port is unused: worker 0 is the host's
        values["vector_repair_interval_s"] = 0  # one repairer per host
    else:
        values["admin_port"] = admin_port
    if settings.metrics_port:
        values["metrics_port"] = settings.metrics_port + index
    return values


def supervise(settings: ServerSettings) -> int:
    """Run ``settings.workers`` worker processes until SIGTERM/SIGINT or until one exits;
    the exit status (0: stopped on request; 1: a port was taken or a worker died)."""
    count = settings.workers
    try:
        port = claim_port(settings.host, settings.port)
        admin_port = claim_port(settings.host, settings.admin_port)
    except PortTaken as exc:
        log.error("%s", exc)
        return 1
    directory = workers_dir(os.getpid())
    try:
        _fresh_private_dir(directory)
    except OSError as exc:
        log.error("cannot make the workers' socket directory %s: %s", directory, exc)
        return 1
    settings = settings.model_copy(update={"port": port})
    addresses = [f"unix:{socket_path(directory, i)}" for i in range(count)]
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        for i in range(count):
            role = WorkerRole(i, count, addresses[i], tuple(addresses[1:]) if i == 0 else ())
            spec = {
                "settings": worker_settings(settings, i, admin_port),
                "role": role.__dict__,
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "serving.workers", "--worker"], stdin=subprocess.PIPE
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
            procs.append(proc)
            log.info("worker %d/%d: pid %d, admin %s", i, count, proc.pid, addresses[i])
        log.info(
            "%d workers on %s:%d (SO_REUSEPORT), host admin on %s:%d",
            count,
            settings.host,
            port,
            settings.host,
            admin_port,
        )
        while not stop["signal"]:
            dead = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() is not None]
            if dead:
                i, code = dead[0]
                log.error("worker %d exited (status %s): stopping every worker", i, code)
                status = 1
                break
            time.sleep(POLL_S)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_all(procs, settings.grace_s + KILL_AFTER_GRACE_S)
        shutil.rmtree(directory, ignore_errors=True)
    return status


def _fresh_private_dir(directory: Path) -> None:
    """Create ``directory`` with mode 0700. A leftover of a dead supervisor that had this
    pid (same user, a real directory) is removed first; anything else there is an error
    (never reuse a directory another user could have prepared)."""
    if directory.exists() or directory.is_symlink():
        info = directory.lstat()
        if directory.is_symlink() or not directory.is_dir() or info.st_uid != os.getuid():
            raise FileExistsError(f"{directory} exists and is not a leftover of ours")
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700)


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM every live worker (graceful drain), SIGKILL those still alive after
    ``timeout_s``; returns when all have exited."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %d ignored SIGTERM for %.0f s: killing it", proc.pid, timeout_s)
            proc.kill()
            proc.wait()


def worker_main() -> None:
    """Entry of one worker (``python -m serving.workers --worker``): its spec as JSON on
    stdin (``supervise``), then the server until SIGTERM."""
    spec = json.loads(sys.stdin.read())
    role = WorkerRole(**{**spec["role"], "peers": tuple(spec["role"]["peers"])})
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker{role.index} %(name)s: %(message)s",
    )
    # Imported here: the server imports this module (WorkerPeers), not the other way round.
    from serving.server import serve

    serve(ServerSettings(**spec["settings"]), role)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A recall server worker (internal).")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args()
    worker_main()
