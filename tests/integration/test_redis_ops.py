"""The project's own Redis and only it (`recall redis start|stop` against real servers), its
durability (AOF, fsync every second, through `kill -9`), and self-repairing user vectors
(serving.vector_repair) after Redis lost them, with the lock that lets one server repair.

The model and index are synthetic (tests/integration/synthetic_index.py, no training)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from artifacts.store import ArtifactStore
from keyspace.user_vectors import encode_vector, meta_key, repair_lock_key, user_vector_key
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.user_vectors import load_user_vectors
from serving.vector_repair import (
    RepairLock,
    RepairResult,
    VectorHealth,
    VectorRepairer,
)
from tests.conftest import REPO_VAR
from tests.integration.harness import ServerThread, run_cli
from tests.integration.synthetic_index import MODEL_VERSION, SyntheticIndex, publish_synthetic

pytestmark = pytest.mark.integration

REPAIR_INTERVAL_S = 15.0  # the server's default (RECALL_VECTOR_REPAIR_INTERVAL_S)


def redis_dir(name: str) -> Path:
    return REPO_VAR / "test-redis" / f"{name}-{os.getpid()}-{free_port()}"


@pytest.fixture(scope="module")
def repair_redis() -> Iterator[LocalRedis]:
    """A Redis of this module's own, without persistence (so `kill -9` loses everything: the
    worst case of a crash before the newest writes reached the disk)."""
    local = LocalRedis(redis_dir("repair"), free_port(), persist=False)
    local.start()
    try:
        yield local
    finally:
        local.stop()
        shutil.rmtree(local.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def published(repair_redis: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> SyntheticIndex:
    """Model + index in the store (943 users, 32-d), published once for the module."""
    return publish_synthetic(tmp_path_factory.mktemp("repair"), repair_redis.url)


@pytest.fixture()
def synth(published: SyntheticIndex, repair_redis: LocalRedis) -> SyntheticIndex:
    """A fresh publish for each test: Redis (re)started, emptied, the user vectors loaded."""
    repair_redis.start()
    client = redis.Redis.from_url(repair_redis.url)
    try:
        client.flushall()
        load_user_vectors(published.model, client)
    finally:
        client.close()
    return published


@pytest.fixture()
def own_redis(synth: SyntheticIndex, repair_redis: LocalRedis) -> LocalRedis:
    return repair_redis


def kill_9(local: LocalRedis) -> None:
    client = redis.Redis.from_url(local.url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local.ping():
        assert time.monotonic() < deadline, "redis survived SIGKILL"
        time.sleep(0.02)


def shutdown_nosave(port: int) -> None:
    """Stop whatever Redis answers on ``port`` (what a person would do with redis-cli)."""
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass
    finally:
        client.close()


def vector_keys_present(url: str, users: list[str]) -> int:
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for user_id in users:
            pipe.exists(user_vector_key(MODEL_VERSION, user_id))
        return sum(pipe.execute())
    finally:
        client.close()


def repairer(synth: SyntheticIndex, url: str) -> VectorRepairer:
    return VectorRepairer.from_url(ArtifactStore(synth.artifact_root), url)


# ------------------------------------------------------------------ ownership (CLI)
def recall_redis(args: list[str], home: Path, port: int) -> tuple[int, str]:
    os.environ["RECALL_REDIS_PORT"] = str(port)
    try:
        done = run_cli(["redis", *args], home, timeout=60)
    finally:
        del os.environ["RECALL_REDIS_PORT"]
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return done.returncode, " ".join(output.split())


def test_a_foreign_redis_on_the_port_is_refused_and_left_running(tmp_path: Path) -> None:
    port = free_port()
    foreign = LocalRedis(redis_dir("foreign"), port, persist=False)
    foreign.start()
    try:
        code, out = recall_redis(["start"], tmp_path, port)
        assert code == 1
        assert f"port {port}" in out
        assert f"dir {foreign.directory.resolve()}" in out and "redis 7" in out
        assert "not this project's Redis" in out
        code, out = recall_redis(["stop"], tmp_path, port)
        assert code == 1 and "refusing to stop" in out and f"port {port}" in out
        assert foreign.ping()
        # A Redis whose data directory was deleted (another checkout's, removed) too.
        shutil.rmtree(foreign.directory)
        code, out = recall_redis(["start"], tmp_path, port)
        assert code == 1 and "its data directory was deleted" in out
        code, out = recall_redis(["stop"], tmp_path, port)
        assert code == 1 and "refusing to stop" in out and foreign.ping()
    finally:
        shutdown_nosave(port)
        shutil.rmtree(foreign.directory, ignore_errors=True)


def test_stop_when_nothing_runs_says_so(tmp_path: Path) -> None:
    port = free_port()
    code, out = recall_redis(["stop"], tmp_path, port)
    assert code == 0 and out == f"redis is not running (nothing answers on 127.0.0.1:{port})"


def test_own_redis_is_reused_and_a_failed_shutdown_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    local = LocalRedis(tmp_path / "redis", port)
    try:
        code, out = recall_redis(["start"], tmp_path, port)
        assert code == 0 and out.startswith("redis started")
        code, out = recall_redis(["start"], tmp_path, port)
        assert code == 0 and out.startswith("redis already running")
        # The snapshot cannot be written (dump.rdb is a directory): SHUTDOWN SAVE fails.
        (local.directory / "dump.rdb").mkdir()
        code, out = recall_redis(["stop"], tmp_path, port)
        assert code == 1 and f"Redis on port {port} did not shut down" in out
        assert "--no-save" in out and local.ping()
        code, out = recall_redis(["stop", "--no-save"], tmp_path, port)
        assert code == 0 and out == f"redis stopped (port {port})"
        assert not local.ping()
    finally:
        if local.ping():
            local.stop(save=False)


# ------------------------------------------------------------------ durability
def test_aof_everysec_keeps_vectors_through_kill_9(tmp_path: Path) -> None:
    local = LocalRedis(redis_dir("aof"), free_port(), persist=True)
    local.start()
    try:
        client = redis.Redis.from_url(local.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        index = publish_synthetic(tmp_path, local.url, users=500)
        client.close()
        time.sleep(1.5)  # everysec: what is older than a second is on disk
        kill_9(local)
        local.start()
        assert vector_keys_present(local.url, index.user_ids) == 500
        client = redis.Redis.from_url(local.url)
        assert client.get(meta_key(MODEL_VERSION)) is not None
        client.close()
    finally:
        local.stop(save=False)
        shutil.rmtree(local.directory, ignore_errors=True)


def test_a_data_directory_with_only_an_rdb_keeps_its_data_when_aof_comes_on() -> None:
    """Redis 7 started with AOF on but no AOF yet would ignore dump.rdb and start empty."""
    directory = redis_dir("rdb")
    local = LocalRedis(directory, free_port(), persist=True)
    try:
        local.start()
        client = redis.Redis.from_url(local.url)
        client.set("k", "v")
        client.config_set("appendonly", "no")
        client.close()
        local.stop()  # SHUTDOWN SAVE: dump.rdb
        shutil.rmtree(directory / "appendonlydir")
        assert (directory / "dump.rdb").exists()
        local.start()
        client = redis.Redis.from_url(local.url)
        assert client.get("k") == b"v"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        assert (directory / "appendonlydir").is_dir()
    finally:
        local.stop(save=False)
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ self-repair
def test_after_kill_9_the_repair_reloads_every_user_within_60_s(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    users = synth.user_ids
    checks: list[float] = []

    def serving_model() -> str:
        checks.append(time.monotonic())
        return MODEL_VERSION

    repair = repairer(synth, own_redis.url)
    stop = threading.Event()

    async def run_until_stopped() -> None:
        task = asyncio.create_task(repair.run(serving_model, REPAIR_INTERVAL_S))
        await asyncio.to_thread(stop.wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    thread = threading.Thread(target=asyncio.run, args=(run_until_stopped(),))
    thread.start()
    try:
        while not checks:
            time.sleep(0.01)
        time.sleep(0.5)  # the first check found everything; the loop now sleeps 15 s
        kill_9(own_redis)
        crashed = time.monotonic()
        own_redis.start()
        assert vector_keys_present(own_redis.url, users) == 0
        # The refresher wrote a fresher vector for u0 after the restart: the repair keeps it.
        fresher = encode_vector(np.full(synth.model.embedding_dim, 0.25, dtype=np.float32))
        client = redis.Redis.from_url(own_redis.url)
        client.set(user_vector_key(MODEL_VERSION, "u0"), fresher)
        while vector_keys_present(own_redis.url, users) < len(users) or not client.exists(
            meta_key(MODEL_VERSION)
        ):
            assert time.monotonic() - crashed < 60, "vectors not repaired within 60 s"
            time.sleep(0.1)
        repaired_after = time.monotonic() - crashed
        print(f"\nevery user's vector back {repaired_after:.1f} s after kill -9")
        assert client.get(user_vector_key(MODEL_VERSION, "u0")) == fresher
        vectors = synth.model.user_vectors()
        stored = client.mget([user_vector_key(MODEL_VERSION, u) for u in users[1:]])
        assert stored == [encode_vector(v) for v in vectors[1:]]
        assert client.get(repair_lock_key(MODEL_VERSION)) is None  # released
        client.close()
    finally:
        stop.set()
        thread.join(30)
        repair.close()


def test_two_repairers_at_once_exactly_one_loads(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    client.flushall()
    repairers = [repairer(synth, own_redis.url) for _ in range(2)]
    for r in repairers:  # read the model's user list before the race
        assert r.check(MODEL_VERSION) is VectorHealth.META_MISSING
    barrier = threading.Barrier(2)
    outcomes = []

    def repair(r: VectorRepairer) -> None:
        barrier.wait()
        outcomes.append(r.repair_once(MODEL_VERSION))

    threads = [threading.Thread(target=repair, args=(r,)) for r in repairers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    results = sorted(o.result.value for o in outcomes)
    assert results.count(RepairResult.REPAIRED.value) == 1, outcomes
    assert set(results) <= {"repaired", "busy", "healthy"}
    assert sum(o.written for o in outcomes) == len(synth.user_ids)
    assert vector_keys_present(own_redis.url, synth.user_ids) == len(synth.user_ids)
    # Idempotent: the next round finds nothing to do and writes nothing.
    again = [r.repair_once(MODEL_VERSION) for r in repairers]
    assert [o.result for o in again] == [RepairResult.HEALTHY] * 2
    for r in repairers:
        r.close()
    client.close()


def test_lost_keys_under_a_complete_meta_key_are_found_and_written(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    lost = synth.user_ids[::2]
    client.delete(*[user_vector_key(MODEL_VERSION, u) for u in lost])
    repair = repairer(synth, own_redis.url)
    outcome = repair.repair_once(MODEL_VERSION)
    assert outcome.result is RepairResult.REPAIRED
    assert outcome.health is VectorHealth.VECTORS_MISSING
    assert outcome.written == len(lost)
    # A meta key recording fewer users than the model has: repaired too, nothing to write.
    client.set(meta_key(MODEL_VERSION), b'{"dim": 32, "dtype": "float32", "count": 5}')
    outcome = repair.repair_once(MODEL_VERSION)
    assert (outcome.result, outcome.health, outcome.written) == (
        RepairResult.REPAIRED,
        VectorHealth.COUNT_SHORT,
        0,
    )
    repair.close()
    client.close()


def test_a_repair_waits_for_another_servers_lock(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    client.delete(meta_key(MODEL_VERSION))
    other = RepairLock(client, repair_lock_key(MODEL_VERSION), ttl_s=30)
    assert other.acquire()
    repair = repairer(synth, own_redis.url)
    assert repair.repair_once(MODEL_VERSION).result is RepairResult.BUSY
    assert client.get(meta_key(MODEL_VERSION)) is None
    # Only the owner's token releases the lock.
    intruder = RepairLock(client, repair_lock_key(MODEL_VERSION), ttl_s=30)
    assert not intruder.acquire() and not intruder.release() and not intruder.renew()
    assert other.renew() and other.release()
    assert repair.repair_once(MODEL_VERSION).result is RepairResult.REPAIRED
    repair.close()
    client.close()


def test_the_cli_loader_and_the_repair_write_the_same_bytes(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    users = synth.user_ids[:50]
    loaded = client.mget([user_vector_key(MODEL_VERSION, u) for u in users])
    client.flushall()
    repair = repairer(synth, own_redis.url)
    assert repair.repair_once(MODEL_VERSION).result is RepairResult.REPAIRED
    assert client.mget([user_vector_key(MODEL_VERSION, u) for u in users]) == loaded
    load_user_vectors(synth.model, client)  # and the bulk load over a repair changes nothing
    assert client.mget([user_vector_key(MODEL_VERSION, u) for u in users]) == loaded
    repair.close()
    client.close()


def test_a_recall_server_serves_every_user_from_vectors_again_after_kill_9(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    """Through a real server (its repair task, default 15 s interval): after `kill -9` every
    known user is answered from their vector again within 60 s, with no failed call."""
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "metrics_port": 0,
        "redis_url": own_redis.url,
        "artifact_root": str(synth.artifact_root),
        "watch_interval_s": 0,
    }
    config = ServerSettings(**values)
    assert config.vector_repair_interval_s == REPAIR_INTERVAL_S
    users = synth.user_ids
    with ServerThread(config) as server:
        client = RecallClient(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}")
        try:

            def sources() -> list[int]:
                requests = [recall_pb2.RecallRequest(user_id=u, k=10) for u in users]
                return [r.source for r in client.batch_recall(requests).responses]

            assert set(sources()) == {recall_pb2.SOURCE_USER_VECTOR}
            time.sleep(0.5)  # the repair task's first check is done: it sleeps 15 s now
            kill_9(own_redis)
            crashed = time.monotonic()
            own_redis.start()
            assert not client.status().user_vectors_loaded
            while set(sources()) != {recall_pb2.SOURCE_USER_VECTOR}:
                assert time.monotonic() - crashed < 60, "users not served from vectors in 60 s"
                time.sleep(0.5)
            back = time.monotonic() - crashed
            print(f"\nall {len(users)} users served from vectors {back:.1f} s after kill -9")
            status = client.status()
            assert status.user_vectors_loaded and status.user_vector_count == len(users)
        finally:
            client.close()
