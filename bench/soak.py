"""`recall bench soak`: a real `recall serve` process under mixed load for ``--seconds``
(default 600), with index swaps and Redis faults, sampled every ``--sample-s``.

What it starts (all on free loopback ports, all stopped at the end, also on Ctrl-C/SIGTERM
or failure; its files under ``RECALL_HOME/bench/soak-<pid>/``, removed afterwards):
- a Redis of its own (``LocalRedis``, AOF with fsync every second, as in production);
- two index versions of one seeded synthetic model (``bench.recall_server.write_vector_model``,
  built and published with the pipeline's code), user vectors loaded into that Redis;
- ``recall serve`` as its own process (the watcher off; vector repair at its default).

What it does, concurrently:
- ``--recall-workers`` closed-loop ``Recall`` callers (90 % known users, 10 % unknown; k 10
  or 100), ``--batch-workers`` ``BatchRecall`` callers (16 users a call) and one
  ``RecordInteractions`` caller (3 interactions of a known user a call);
- ``LoadIndex`` alternating between the two versions every ``--swap-s``;
- at 40 % of the run Redis is stopped (SHUTDOWN) and started again ``--outage-s`` later; at
  65 % it is killed with SIGKILL and started again ``--outage-s`` later.

Every ``--sample-s`` a row: the server's RSS (/proc/PID/status VmRSS) and open file
descriptors (/proc/PID/fd), calls OK / degraded / failed by status code, write failures,
latency, swaps. The verdict is **flat** when all of these hold:
- RSS over the last half grew less than ``--max-rss-growth`` (median of the last three
  samples against the median of the three around half-time: single samples jump with each
  swap, since two indexes are briefly held while one replaces the other);
- open fds at the end ≤ fds at half-time + ``--fd-slack``;
- 0 failed Recall/BatchRecall calls and 0 failed swaps;
- degraded answers (SOURCE_FALLBACK_DEGRADED) and failed writes only inside a Redis outage
  (from the fault until ``GRACE_S`` after Redis answers again): writes are stored or fail
  (UNAVAILABLE after RECALL_REDIS_RETRY_S), they never degrade;
- no known user answered from the popular items (SOURCE_FALLBACK) outside an outage and the
  60 s the vector repair may take after one.

    .venv/bin/recall bench soak [--seconds 600] [--sample-s 10] [--swap-s 30]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import redis

from artifacts.store import ArtifactStore, new_version
from bench.recall_server import write_vector_model
from bench.serve import process, rss_mib
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from serving.index.artifact import publish_index
from serving.model_artifact import ModelArtifact, open_model_artifact
from serving.user_vectors import load_user_vectors

MODEL_VERSION = "20260101T000000Z-soak0"
GRACE_S = 2.0
"""After Redis answers again: the breaker's next probe (RECALL_BREAKER_RESET_S, 0.25 s) plus
a call's Redis timeout (0.5 s) plus a reconnect, with margin; issue 7 asks ≤ 1 s."""
REPAIR_S = 60.0
"""How long after an outage a known user may still get the popular items (issue 7: no user
vector lost for longer than 60 s; the server's vector repair reloads them)."""
CALL_TIMEOUT_S = 10.0
BATCH_USERS = 16
DEGRADED = recall_pb2.SOURCE_FALLBACK_DEGRADED


@dataclass(frozen=True)
class SoakConfig:
    """One soak run; times in seconds."""

    seconds: float = 600.0
    sample_s: float = 10.0
    swap_s: float = 30.0
    outage_s: float = 5.0
    users: int = 5_000
    items: int = 20_000
    dim: int = 32
    recall_workers: int = 6
    batch_workers: int = 1
    max_rss_growth: float = 0.05  # fraction
    fd_slack: int = 5


@dataclass
class Sample:
    """One row: counters are for the interval that ends at ``t`` (seconds since start)."""

    t: float
    rss_mib: float
    fds: int
    ok: int
    degraded: int
    failed: dict[str, int]
    writes_ok: int
    writes_failed: int
    p50_ms: float
    p99_ms: float
    swaps: int
    redis_up: bool


@dataclass
class Tally:
    """Live counters the workers add to; ``take`` empties the per-interval part."""

    ok: int = 0
    degraded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    writes_ok: int = 0
    writes_failed: int = 0
    swaps: int = 0
    latencies: list[float] = field(default_factory=list)
    # Whole-run evidence, (seconds since start, what) pairs, for the verdict.
    degraded_at: list[float] = field(default_factory=list)
    failed_at: list[tuple[float, str]] = field(default_factory=list)
    write_failed_at: list[tuple[float, str]] = field(default_factory=list)
    known_fallback_at: list[float] = field(default_factory=list)
    swap_failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outage:
    what: str
    down_at: float  # seconds since start
    up_at: float


@dataclass
class SoakReport:
    config: SoakConfig
    samples: list[Sample]
    outages: list[Outage]
    tally: Tally
    reasons: list[str]  # why the run is not flat; empty = flat
    rss_growth: float
    fd_growth: int
    server_pid: int = 0  # what the run started, for checks that it is all gone
    redis_port: int = 0

    @property
    def flat(self) -> bool:
        return not self.reasons


# ------------------------------------------------------------------ load
class Soak:
    def __init__(
        self,
        config: SoakConfig,
        target: str,
        admin_target: str,
        users: list[str],
        items: list[str],
        versions: tuple[str, str],
    ) -> None:
        self.config = config
        self.target = target
        self.admin_target = admin_target
        self.users = users
        self.items = items
        self.versions = versions
        self.tally = Tally()
        self.started = time.monotonic()
        self.stop_at = self.started + config.seconds
        self.redis_up = True

    def now(self) -> float:
        return time.monotonic() - self.started

    def _failed(self, method: str, exc: grpc.aio.AioRpcError) -> None:
        name = f"{method}:{exc.code().name}"
        self.tally.failed[name] += 1
        self.tally.failed_at.append((self.now(), f"{name}: {exc.details()}"))

    def _answered(self, response: recall_pb2.RecallResponse, known: bool) -> bool:
        """Count one answer; True when it is degraded."""
        if response.source == DEGRADED:
            self.tally.degraded_at.append(self.now())
            return True
        if known and response.source == recall_pb2.SOURCE_FALLBACK:
            self.tally.known_fallback_at.append(self.now())
        return False

    async def recall_worker(self, stub: recall_pb2_grpc.RecallServiceStub, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.stop_at:
            known = rng.random() < 0.9
            user = rng.choice(self.users) if known else f"soak-stranger-{rng.randrange(10**6)}"
            request = recall_pb2.RecallRequest(user_id=user, k=rng.choice((10, 100)))
            started = time.perf_counter()
            try:
                response = await stub.Recall(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self._failed("Recall", exc)
                continue
            self.tally.latencies.append(time.perf_counter() - started)
            if self._answered(response, known):
                self.tally.degraded += 1
            else:
                self.tally.ok += 1

    async def batch_worker(self, stub: recall_pb2_grpc.RecallServiceStub, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.stop_at:
            users = [rng.choice(self.users) for _ in range(BATCH_USERS)]
            batch = recall_pb2.BatchRecallRequest(
                requests=[recall_pb2.RecallRequest(user_id=u, k=10) for u in users]
            )
            try:
                reply = await stub.BatchRecall(batch, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self._failed("BatchRecall", exc)
                continue
            degraded = [self._answered(r, known=True) for r in reply.responses]
            if any(degraded):
                self.tally.degraded += 1
            else:
                self.tally.ok += 1

    async def write_worker(self, stub: recall_pb2_grpc.RecallServiceStub, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.stop_at:
            user = rng.choice(self.users)
            request = recall_pb2.RecordInteractionsRequest(
                interactions=[
                    recall_pb2.Interaction(user_id=user, item_id=rng.choice(self.items))
                    for _ in range(3)
                ]
            )
            try:
                await stub.RecordInteractions(request, timeout=CALL_TIMEOUT_S)
                self.tally.writes_ok += 1
            except grpc.aio.AioRpcError as exc:
                self.tally.writes_failed += 1
                self.tally.write_failed_at.append((self.now(), exc.code().name))
            await asyncio.sleep(0.02)  # a trickle of events, not a write benchmark

    async def swapper(self, admin: recall_pb2_grpc.RecallAdminStub) -> None:
        turn = 0
        while True:
            await asyncio.sleep(min(self.config.swap_s, max(0.0, self.stop_at - time.monotonic())))
            if time.monotonic() >= self.stop_at:
                return
            version = self.versions[turn % 2]
            turn += 1
            try:
                await admin.LoadIndex(recall_pb2.LoadIndexRequest(version=version), timeout=300)
                self.tally.swaps += 1
            except grpc.aio.AioRpcError as exc:
                self.tally.swap_failures.append(f"{version}: {exc.code().name}: {exc.details()}")

    async def run_load(self, sampler: asyncio.Task[None], faults: asyncio.Task[None]) -> None:
        async with (
            grpc.aio.insecure_channel(self.target) as channel,
            grpc.aio.insecure_channel(self.admin_target) as admin_channel,
        ):
            stub = recall_pb2_grpc.RecallServiceStub(channel)
            admin = recall_pb2_grpc.RecallAdminStub(admin_channel)
            workers = [self.recall_worker(stub, i) for i in range(self.config.recall_workers)]
            workers += [self.batch_worker(stub, 100 + i) for i in range(self.config.batch_workers)]
            await asyncio.gather(
                *workers, self.write_worker(stub, 999), self.swapper(admin), sampler, faults
            )


# ------------------------------------------------------------------ faults and samples
def _kill_9(local: LocalRedis) -> None:
    client = redis.Redis.from_url(local.url, socket_timeout=5)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    os.kill(pid, signal.SIGKILL)
    while local.ping():
        time.sleep(0.02)


def _stop(local: LocalRedis) -> None:
    local.stop()


async def inject_faults(soak: Soak, local: LocalRedis, outages: list[Outage]) -> None:
    """Redis stopped at 40 % of the run and killed -9 at 65 %, each back ``outage_s`` later."""
    for fraction, what, fault in ((0.40, "stop", _stop), (0.65, "kill -9", _kill_9)):
        at = soak.started + fraction * soak.config.seconds
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        down_at = soak.now()
        await asyncio.to_thread(fault, local)
        soak.redis_up = False
        await asyncio.sleep(soak.config.outage_s)
        await asyncio.to_thread(local.start)
        soak.redis_up = True
        outages.append(Outage(what, down_at, soak.now()))
        print(f"  {soak.now():6.1f} s  Redis {what}: down {down_at:.1f} s → up {soak.now():.1f} s")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def sample_loop(soak: Soak, pid: int, samples: list[Sample]) -> None:
    tally = soak.tally
    print(_header())
    while time.monotonic() < soak.stop_at:
        await asyncio.sleep(min(soak.config.sample_s, max(0.0, soak.stop_at - time.monotonic())))
        ms = np.asarray(tally.latencies) * 1e3
        sample = Sample(
            t=soak.now(),
            rss_mib=rss_mib(pid),
            fds=_fds(pid),
            ok=tally.ok,
            degraded=tally.degraded,
            failed=dict(tally.failed),
            writes_ok=tally.writes_ok,
            writes_failed=tally.writes_failed,
            p50_ms=float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            p99_ms=float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            swaps=tally.swaps,
            redis_up=soak.redis_up,
        )
        tally.ok = tally.degraded = tally.writes_ok = tally.writes_failed = tally.swaps = 0
        tally.failed.clear()
        tally.latencies.clear()
        samples.append(sample)
        print(_row(sample), flush=True)


def _header() -> str:
    return (
        f"{'t s':>6} {'RSS MiB':>8} {'fds':>4} {'calls ok':>8} {'degraded':>8} {'failed':>6} "
        f"{'writes':>6} {'w fail':>6} {'p50 ms':>7} {'p99 ms':>7} {'swaps':>5} redis"
    )


def _row(s: Sample) -> str:
    return (
        f"{s.t:>6.0f} {s.rss_mib:>8.1f} {s.fds:>4} {s.ok:>8} {s.degraded:>8} "
        f"{sum(s.failed.values()):>6} {s.writes_ok:>6} {s.writes_failed:>6} {s.p50_ms:>7.2f} "
        f"{s.p99_ms:>7.2f} {s.swaps:>5} {'up' if s.redis_up else 'DOWN'}"
    )


# ------------------------------------------------------------------ verdict
def _inside(t: float, outages: list[Outage], after_s: float) -> bool:
    return any(o.down_at <= t <= o.up_at + after_s for o in outages)


def judge(
    config: SoakConfig, samples: list[Sample], outages: list[Outage], tally: Tally
) -> SoakReport:
    """The verdict (see the module docstring); pure, so it is unit-testable."""
    reasons: list[str] = []
    rss_growth, fd_growth = float("nan"), 0
    if len(samples) >= 6:
        half = min(range(len(samples)), key=lambda i: abs(samples[i].t - config.seconds / 2))
        around = samples[max(0, half - 1) : half + 2]
        at_half = statistics.median(s.rss_mib for s in around)
        at_end = statistics.median(s.rss_mib for s in samples[-3:])
        rss_growth = (at_end - at_half) / at_half
        fd_growth = samples[-1].fds - samples[half].fds
        if rss_growth >= config.max_rss_growth:
            reasons.append(
                f"RSS grew {rss_growth:.1%} over the last half "
                f"(limit {config.max_rss_growth:.0%}): {at_half:.1f} → {at_end:.1f} MiB"
            )
        if fd_growth > config.fd_slack:
            reasons.append(f"open fds grew by {fd_growth} over the last half")
    else:
        reasons.append(f"only {len(samples)} samples: too short to judge growth")
    if tally.failed_at:
        first = tally.failed_at[0]
        reasons.append(
            f"{len(tally.failed_at)} failed calls, the first at {first[0]:.1f} s: {first[1]}"
        )
    if tally.swap_failures:
        reasons.append(f"{len(tally.swap_failures)} failed swaps: {tally.swap_failures[0]}")
    stray = [t for t in tally.degraded_at if not _inside(t, outages, GRACE_S)]
    if stray:
        reasons.append(
            f"{len(stray)} degraded answers outside an outage, first at {stray[0]:.1f} s"
        )
    stray_writes = [w for w in tally.write_failed_at if not _inside(w[0], outages, GRACE_S)]
    if stray_writes:
        reasons.append(
            f"{len(stray_writes)} failed writes outside an outage, first at "
            f"{stray_writes[0][0]:.1f} s ({stray_writes[0][1]})"
        )
    lost = [t for t in tally.known_fallback_at if not _inside(t, outages, REPAIR_S)]
    if lost:
        reasons.append(
            f"{len(lost)} known users answered from the popular items, first at {lost[0]:.1f} s"
        )
    if len(outages) < 2 and config.seconds >= 10:
        reasons.append(f"only {len(outages)} of 2 Redis faults happened")
    return SoakReport(config, samples, outages, tally, reasons, rss_growth, fd_growth)


def summary(report: SoakReport) -> str:
    t = report.tally
    total = sum(s.ok + s.degraded for s in report.samples)
    writes = sum(s.writes_ok for s in report.samples)
    swaps = sum(s.swaps for s in report.samples)
    first, last = report.samples[0], report.samples[-1]
    lines = [
        f"calls answered: {total} ({sum(s.degraded for s in report.samples)} degraded, "
        f"all of them inside an outage: {not any('degraded' in r for r in report.reasons)}); "
        f"failed calls: {len(t.failed_at)}; writes stored: {writes}, refused during "
        f"outages: {len(t.write_failed_at)}; swaps: {swaps} ({len(t.swap_failures)} failed); "
        f"known users on the fallback: {len(t.known_fallback_at)}",
        f"RSS {first.rss_mib:.1f} MiB at {first.t:.0f} s → {last.rss_mib:.1f} MiB at "
        f"{last.t:.0f} s; last-half growth {report.rss_growth:+.1%}; fds {first.fds} → "
        f"{last.fds} (last-half growth {report.fd_growth:+d})",
    ]
    for o in report.outages:
        lines.append(f"Redis {o.what}: down {o.down_at:.1f} s → up {o.up_at:.1f} s")
    verdict = "flat" if report.flat else "NOT flat: " + "; ".join(report.reasons)
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


# ------------------------------------------------------------------ setup and entry point
def _model(workdir: Path, config: SoakConfig) -> tuple[ArtifactStore, ModelArtifact]:
    staging = workdir / "staging" / MODEL_VERSION
    write_vector_model(staging, config.users, config.items, config.dim)
    store = ArtifactStore(workdir / "artifacts")
    store.publish("models", MODEL_VERSION, staging)
    return store, open_model_artifact(store.local_dir("models", MODEL_VERSION))


@contextlib.contextmanager
def _own_redis(directory: Path) -> Iterator[LocalRedis]:
    """A persistent (AOF everysec) Redis on a free port, stopped however the run ends."""
    local = LocalRedis(directory, free_port(), persist=True)
    local.start()
    try:
        yield local
    finally:
        try:
            local.stop(save=False)
        except Exception as exc:  # a stop that fails must not hide the run's own error
            print(f"warning: stopping the soak's Redis: {exc}", file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, so `kill PID` cleans up like
    Ctrl-C; the previous handler comes back after (only the main thread may set one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(config: SoakConfig, home: Path) -> SoakReport:
    """One soak run (see the module docstring); everything it starts is stopped on return."""
    home.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"soak-{os.getpid()}-", dir=home))
    try:
        print(
            f"recall bench soak: {config.seconds:.0f} s, {config.users} users × "
            f"{config.items} items × {config.dim}-d, {config.recall_workers} Recall + "
            f"{config.batch_workers} BatchRecall ({BATCH_USERS} users) + 1 RecordInteractions "
            f"callers, swap every {config.swap_s:g} s, Redis outages of {config.outage_s:g} s "
            f"at 40 % (stop) and 65 % (kill -9); {os.cpu_count()} CPUs shared with the client"
        )
        store, model = _model(workdir, config)
        first, second = (
            publish_index(model, store, index_version=new_version(), min_recall=0.0)[1]
            for _ in range(2)
        )
        versions = (first.index_version, second.index_version)
        with _sigterm_as_interrupt(), _own_redis(workdir / "redis") as local:
            client = redis.Redis.from_url(local.url)
            try:
                load_user_vectors(model, client)
            finally:
                client.close()
            return _serve_and_soak(config, workdir, store, model, local, versions)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _serve_and_soak(
    config: SoakConfig,
    workdir: Path,
    store: ArtifactStore,
    model: ModelArtifact,
    local: LocalRedis,
    versions: tuple[str, str],
) -> SoakReport:
    port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "RECALL_PORT": str(port),
        "RECALL_ADMIN_PORT": str(admin_port),
        "RECALL_METRICS_PORT": "0",
        "RECALL_REDIS_URL": local.url,
        "RECALL_ARTIFACT_ROOT": str(store.root),
        "RECALL_WATCH_INTERVAL_S": "0",
        "RECALL_HOME": str(workdir / "server-home"),
    }
    log = workdir / "server.log"
    with process([sys.executable, "-m", "recall_cli.main", "serve"], env, log) as proc:
        probe = RecallClient(f"127.0.0.1:{port}", timeout_s=10)
        try:
            if not probe.wait_serving(300):
                raise RuntimeError(f"recall serve did not start:\n{_tail(log)}")
        finally:
            probe.close()
        soak = Soak(
            config,
            f"127.0.0.1:{port}",
            f"127.0.0.1:{admin_port}",
            model.user_ids(),
            model.item_ids(),
            versions,
        )
        samples: list[Sample] = []
        outages: list[Outage] = []

        async def main() -> None:
            soak.started = time.monotonic()
            soak.stop_at = soak.started + config.seconds
            sampler = asyncio.ensure_future(sample_loop(soak, proc.pid, samples))
            faults = asyncio.ensure_future(inject_faults(soak, local, outages))
            await soak.run_load(sampler, faults)

        asyncio.run(main())
        if proc.poll() is not None:
            raise RuntimeError(f"recall serve exited ({proc.returncode}):\n{_tail(log)}")
    report = judge(config, samples, outages, soak.tally)
    report.server_pid, report.redis_port = proc.pid, local.port
    print(summary(report))
    return report


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
