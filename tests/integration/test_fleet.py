"""Shipping to a fleet (serving.fleet, `recall release`, the DAG's ship task): three real
`recall serve` processes on free loopback ports, one private real Redis, one artifact store,
and a client keeping Recall calls in flight against all three throughout."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from artifacts.store import ArtifactStore
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.fleet import FleetSettings, ShipFailed, fleet_status, ship, ship_published
from tests.integration.harness import RECALL, ServerThread, copy_index_as, run_cli
from tests.integration.synthetic_index import publish_synthetic

pytestmark = pytest.mark.integration

WATCH_S = 0.5  # the servers' LATEST/PIN poll interval
INDEXES = "indexes"


@dataclass
class Fleet:
    home: Path
    store: ArtifactStore
    root: Path
    base: str  # the synthetic index every server starts on
    admin: list[str]  # RecallAdmin addresses (RECALL_FLEET)
    recall: list[str]  # RecallService addresses (for the load)
    users: list[str]
    redis: LocalRedis

    @property
    def spec(self) -> str:
        return ",".join(self.admin)

    def versions(self) -> list[str]:
        return [s.index_version for s in fleet_status(self.admin)]

    def new_index(self, version: str, *, corrupt: bool = False) -> str:
        """Publish (without moving LATEST) a copy of the base index as ``version``."""
        copy_index_as(self.root / INDEXES / self.base, version, corrupt=corrupt)
        return version

    def reset(self) -> None:
        """No pin, LATEST = base, every server on base: each test starts from here."""
        self.store.unpin(INDEXES)
        self.store.set_latest(INDEXES, self.base)
        ship(self.store, self.base, self.admin, self.admin[:1], promote=False, settings=quick())


def quick(**extra: object) -> FleetSettings:
    values: dict[str, object] = {"fleet_canary_watch_s": 1.0, "fleet_rpc_timeout_s": 5.0}
    values.update(extra)
    return FleetSettings(**values)  # type: ignore[arg-type]


def wait_serving(address: str, timeout_s: float = 90) -> bool:
    client = RecallClient(address)
    try:
        return client.wait_serving(timeout_s)
    finally:
        client.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    home = tmp_path_factory.mktemp("fleet")
    # A private Redis: the pipeline run below prunes vectors of models it does not know,
    # which must not touch the session Redis other modules' tests rely on.
    redis = LocalRedis(home / "redis", free_port(), persist=False)
    redis.start()
    servers: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        synthetic = publish_synthetic(home, redis.url)
        store = ArtifactStore(synthetic.artifact_root)
        base = synthetic.index.index_version
        admin, recall = [], []
        for n in range(3):
            port, admin_port = free_port(), free_port()
            env = {
                **os.environ,
                "RECALL_HOME": str(home / f"server{n}"),
                "RECALL_PORT": str(port),
                "RECALL_ADMIN_PORT": str(admin_port),
                "RECALL_METRICS_PORT": "0",
                "RECALL_REDIS_URL": redis.url,
                "RECALL_ARTIFACT_ROOT": str(synthetic.artifact_root),
                "RECALL_WATCH_INTERVAL_S": str(WATCH_S),
                "RECALL_VECTOR_REPAIR_INTERVAL_S": "0",
            }
            log = (home / f"server{n}.log").open("wb")
            logs.append(log)
            servers.append(subprocess.Popen([*RECALL, "serve"], env=env, stdout=log, stderr=log))
            admin.append(f"127.0.0.1:{admin_port}")
            recall.append(f"127.0.0.1:{port}")
        for address in recall:
            assert wait_serving(address), f"server {address} never became SERVING"
        yield Fleet(
            home,
            store,
            synthetic.artifact_root,
            base,
            admin,
            recall,
            synthetic.user_ids[:50],
            redis,
        )
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        for log in logs:
            log.close()
        redis.stop()
        shutil.rmtree(home / "redis", ignore_errors=True)


@dataclass
class Load:
    """Recall calls kept in flight against every server (two client threads) until
    stopped; counts answers by outcome and by the index version that answered."""

    targets: list[str]
    users: list[str]
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, offset: int) -> None:
        channels = [grpc.insecure_channel(t) for t in self.targets]
        stubs = [recall_pb2_grpc.RecallServiceStub(c) for c in channels]
        n = offset
        try:
            while not self._stop.is_set():
                n += 1
                request = recall_pb2.RecallRequest(user_id=self.users[n % len(self.users)], k=10)
                try:
                    answer = stubs[n % len(stubs)].Recall(request, timeout=5)
                except grpc.RpcError as exc:
                    with self._lock:
                        self.failed[exc.code().name] += 1
                    continue
                with self._lock:
                    self.ok += 1
                    self.versions[answer.index_version] += 1
        finally:
            for channel in channels:
                channel.close()

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def holds(condition: Callable[[], bool], seconds: float) -> bool:
    """``condition`` stays true for ``seconds`` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.1)
    return True


def release(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["release", *args, "--artifact-root", str(fleet.root), "--fleet", fleet.spec],
        fleet.home,
        timeout=300,
    )


def test_ship_with_a_canary_under_load_is_verified_with_zero_failed_calls(fleet: Fleet) -> None:
    fleet.reset()
    version = fleet.new_index("20260102T000000Z-shipA")
    assert fleet.store.latest(INDEXES) == fleet.base  # published, not promoted
    with Load(fleet.recall, fleet.users) as load:
        report = ship(fleet.store, version, fleet.admin, fleet.admin[:1], settings=quick())
        time.sleep(0.5)
    # Reported with -s (the figure the README's release section quotes).
    print(f"ship to 3 servers: {report.seconds:.2f} s; {load.ok} Recall calls OK under load")
    assert load.failed == Counter(), f"failed calls during the ship: {load.failed}"
    assert load.ok > 50
    assert set(load.versions) == {fleet.base, version}  # the switch happened under load
    assert report.steps[0] == f"canary {fleet.admin[0]} verified"
    assert report.steps[1] == f"indexes/LATEST → {version}"
    assert report.previous == dict.fromkeys(fleet.admin, fleet.base)
    assert fleet.versions() == [version] * 3
    assert fleet.store.latest(INDEXES) == version
    assert fleet.store.previous(INDEXES) == fleet.base

    shown = release(fleet, "status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"converged on {version}" in shown.stdout
    assert f"indexes/LATEST    {version}" in shown.stdout


def test_a_corrupt_version_fails_at_the_canary_and_changes_nothing(fleet: Fleet) -> None:
    fleet.reset()
    broken = fleet.new_index("20260103T000000Z-corrupt", corrupt=True)
    expected = f"failed at canary on {fleet.admin[0]}"
    with Load(fleet.recall, fleet.users) as load, pytest.raises(ShipFailed, match=expected) as info:
        ship(fleet.store, broken, fleet.admin, fleet.admin[:1], settings=quick())
    assert "FAILED_PRECONDITION" in str(info.value)
    assert load.failed == Counter() and load.versions.keys() == {fleet.base}
    assert fleet.versions() == [fleet.base] * 3
    assert fleet.store.latest(INDEXES) == fleet.base


def test_a_failed_canary_probe_reverts_the_canary_and_leaves_latest(fleet: Fleet) -> None:
    fleet.reset()
    version = fleet.new_index("20260104T000000Z-probe")
    # A user the model does not know gets SOURCE_FALLBACK: the probe must refuse it.
    probe = {"settings": quick(), "users": ["no-such-user"]}
    with (
        Load(fleet.recall, fleet.users) as load,
        pytest.raises(ShipFailed, match="SOURCE_FALLBACK") as info,
    ):
        ship(fleet.store, version, fleet.admin, fleet.admin[1:2], **probe)  # type: ignore[arg-type]
    assert f"{fleet.admin[1]} reverted to {fleet.base}" in str(info.value)
    assert load.failed == Counter()
    assert fleet.versions() == [fleet.base] * 3
    assert fleet.store.latest(INDEXES) == fleet.base


def test_the_cli_refuses_bad_input_with_a_message_not_a_traceback(fleet: Fleet) -> None:
    fleet.reset()
    unknown = release(fleet, "promote", "20260199T000000Z-nope")
    assert unknown.returncode == 1
    assert "no index 20260199T000000Z-nope" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    no_reason = release(fleet, "pin")
    assert no_reason.returncode == 1 and "--reason" in no_reason.stderr


def test_rollback_holds_across_watcher_polls_and_a_pipeline_run_until_unpin(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet.reset()
    bad = fleet.new_index("20260105T000000Z-bad")
    ship(fleet.store, bad, fleet.admin, fleet.admin[:1], settings=quick())
    assert fleet.versions() == [bad] * 3
    with Load(fleet.recall, fleet.users) as load:
        rolled = release(fleet, "rollback", "--reason", "bad recall in the new index")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert fleet.versions() == [fleet.base] * 3
        held = fleet.store.pinned(INDEXES)
        assert held is not None and held.version == fleet.base
        assert fleet.store.latest(INDEXES) == bad  # LATEST is not what is served now
        # Without the pin, every watcher would swap back to LATEST within WATCH_S.
        assert holds(lambda: fleet.versions() == [fleet.base] * 3, 4 * WATCH_S)

        # A new pipeline run (rebuild DAG, fleet configured) publishes but does not ship.
        data = fleet.home / "data"
        made = run_cli(["data", "synth", str(data), "--users", "50", "--items", "80"], fleet.home)
        assert made.returncode == 0, made.stderr
        monkeypatch.setenv("RECALL_FLEET", fleet.spec)
        before = set(fleet.store.versions(INDEXES))
        ran = run_cli(
            [
                "pipeline",
                "run",
                "--dag-id",
                "recall_rebuild_index",
                "--data",
                str(data),
                "--artifact-root",
                str(fleet.root),
                "--redis-url",
                fleet.redis.url,
                "--min-recall",
                "0.01",  # differs from the base index's gate: the rebuild has work to do
            ],
            fleet.home,
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        (built,) = set(fleet.store.versions(INDEXES)) - before
        assert "not shipping" in ran.stdout
        assert fleet.store.latest(INDEXES) == bad  # with a fleet, only a ship promotes
        assert holds(lambda: fleet.versions() == [fleet.base] * 3, 4 * WATCH_S)
        # The ship task's function itself, on the new index: skipped, with the reason.
        outcome = ship_published(fleet.store.uri(INDEXES, built), FleetSettings(fleet=fleet.spec))
        assert f"pinned to {fleet.base}" in outcome and "bad recall" in outcome

        shown = release(fleet, "status")
        assert "bad recall in the new index" in shown.stdout
        assert built in shown.stdout  # listed as published, not promoted

        released = release(fleet, "unpin")
        assert released.returncode == 0, released.stdout + released.stderr
        assert fleet.store.pinned(INDEXES) is None
        assert fleet.versions() == [bad] * 3  # unpin ships LATEST
    assert load.failed == Counter(), f"failed calls: {load.failed}"
    assert {fleet.base, bad} <= set(load.versions)


def test_a_server_started_under_a_pin_serves_the_pinned_version(fleet: Fleet) -> None:
    fleet.reset()
    newer = fleet.new_index("20260106T000000Z-newer")
    fleet.store.set_latest(INDEXES, newer)
    fleet.store.pin(INDEXES, fleet.base, reason="hold for the test")
    try:
        values: dict[str, object] = {
            "port": 0,
            "admin_port": 0,
            "metrics_port": 0,
            "redis_url": fleet.redis.url,
            "artifact_root": str(fleet.root),
            "watch_interval_s": WATCH_S,
            "vector_repair_interval_s": 0,
        }
        settings = ServerSettings(**values)  # type: ignore[arg-type]
        with ServerThread(settings) as server:
            status = fleet_status([f"127.0.0.1:{server.admin_port}"])[0]
            assert status.index_version == fleet.base  # not LATEST
            fleet.store.unpin(INDEXES)  # the watcher follows the move to LATEST
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and server.holder.current().index_version != newer:
                time.sleep(0.1)
            assert server.holder.current().index_version == newer
    finally:
        fleet.store.unpin(INDEXES)


def test_the_shipper_sends_the_admin_token_the_server_asks_for(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.reset()
    token = tmp_path / "admin.token"
    token.write_text("fleet-token-1\n")
    values: dict[str, object] = {
        "port": 0,
        "admin_port": 0,
        "metrics_port": 0,
        "redis_url": fleet.redis.url,
        "artifact_root": str(fleet.root),
        "watch_interval_s": 0,
        "vector_repair_interval_s": 0,
        "admin_token_file": str(token),
    }
    with ServerThread(ServerSettings(**values)) as server:  # type: ignore[arg-type]
        member = [f"127.0.0.1:{server.admin_port}"]
        (refused,) = fleet_status(member)
        assert refused.error.startswith("UNAUTHENTICATED")
        with_token = FleetSettings(admin_token_file=str(token))
        (answered,) = fleet_status(member, security=with_token.client_security())
        assert answered.index_version == fleet.base and not answered.error
        version = fleet.new_index("20260107T000000Z-token")
        ship(fleet.store, version, member, member, promote=False, settings=with_token)
        assert server.holder.current().index_version == version
