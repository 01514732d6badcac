"""Redis Cluster, for real: three masters started from Debian's redis-server on free loopback
ports (no replicas), made a cluster with ``redis-cli --cluster create``.

The same user vectors go into the cluster and into a single Redis, a recall server runs on
each, and their Recall/BatchRecall answers must be identical for many users. On the
cluster: the bulk load (rate printed beside the single Redis's), self-repair (lock
scripts, SET NX pipelines), pruning (SCAN over every node, UNLINK split by slot), and,
with the pipeline's trained model, history seeding, RecordInteractions, the refresher and
the hourly refresh. Every node is stopped in the fixture's ``finally``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from artifacts.store import ArtifactStore
from keyspace.connection import SyncRedis, make_client
from keyspace.events import EVENTS_STREAM, TOUCHED_USERS
from keyspace.histories import history_key
from keyspace.user_vectors import meta_key, user_vector_key
from recall_cli.local_redis import LocalRedis, free_port, redis_server_binary
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.tasks import load_vectors
from serving.user_vectors import delete_user_vectors, load_user_vectors, loaded_model_versions
from serving.vector_repair import RepairResult, VectorRepairer
from tests.conftest import REPO_VAR
from tests.integration.harness import Pipeline, ServerThread, local_settings, settings_for
from tests.integration.synthetic_index import MODEL_VERSION, SyntheticIndex, publish_synthetic
from training.histories import seed_histories
from training.refresher import RefresherSettings, make_refresher, refresh_touched_users

pytestmark = pytest.mark.integration

MASTERS = 3
USERS = 20_000
"""Users of the synthetic model: enough for a load rate, and for keys on every node."""
COMPARED_USERS = 400


@dataclass
class RedisClusterNodes:
    """``MASTERS`` redis-server processes in cluster mode (client port and cluster-bus port
    both chosen free; Redis 7's ``--cluster-port``), joined by ``redis-cli --cluster
    create``. ``stop`` ends every process it started, whatever state they are in."""

    directory: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = redis_server_binary()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli (Debian's redis-tools) is required to form the cluster"
        for _ in range(MASTERS):
            port, bus = free_port(), free_port()
            log = (self.directory / f"redis-{port}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port", str(port),
                        "--cluster-port", str(bus),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
                        "--dir", str(self.directory),
                        "--save", "",
                        "--appendonly", "no",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            log.close()
            self.ports.append(port)
        self._wait(lambda node: bool(node.ping()), timeout_s, "answer PING")
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        self._wait(
            lambda node: b"cluster_state:ok" in node.execute_command("CLUSTER", "INFO"),
            timeout_s,
            "report cluster_state:ok",
        )

    def _wait(self, ready: Callable[[redis.Redis], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        for port, process in zip(self.ports, self.processes, strict=True):
            node = redis.Redis(port=port, socket_timeout=1)
            try:
                while True:
                    assert process.poll() is None, f"redis-server on port {port} exited"
                    try:
                        if ready(node):
                            break
                    except redis.RedisError:
                        pass
                    assert time.monotonic() < deadline, f"node {port} did not {what}"
                    time.sleep(0.1)
            finally:
                node.close()

    def node_key_counts(self) -> list[int]:
        counts = []
        for port in self.ports:
            node = redis.Redis(port=port, socket_timeout=5)
            try:
                counts.append(int(node.dbsize()))
            finally:
                node.close()
        return counts

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def single() -> Iterator[LocalRedis]:
    """A private single Redis (the session one is shared with tests that change vectors)."""
    port = free_port()
    directory = REPO_VAR / "test-redis" / f"single-{port}"
    server = LocalRedis(directory, port, persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Loaded:
    synth: SyntheticIndex
    rates: dict[str, float]


def timed_load(synth: SyntheticIndex, url: str) -> float:
    """Vectors per second of ``load_user_vectors`` through the project's client factory."""
    client = make_client(url, socket_timeout=10)
    try:
        started = time.perf_counter()
        count = load_user_vectors(synth.model, client)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    assert count == USERS
    return count / seconds


@pytest.fixture(scope="module")
def loaded(
    cluster: RedisClusterNodes, single: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Loaded:
    synth = publish_synthetic(tmp_path_factory.mktemp("synth"), single.url, users=USERS)
    rates = {"single": timed_load(synth, single.url), "cluster": timed_load(synth, cluster.url)}
    print(
        f"\nbulk load of {USERS} × {synth.model.embedding_dim}-d vectors, pipelines of 2,000: "
        f"single Redis {rates['single']:,.0f} vectors/s, "
        f"{MASTERS}-master cluster {rates['cluster']:,.0f} vectors/s"
    )
    return Loaded(synth, rates)


def server_settings(synth: SyntheticIndex, redis_url: str, **extra: Any) -> ServerSettings:
    # The repair test drives self-repair by hand.
    return local_settings(
        synth.artifact_root, redis_url, **{"vector_repair_interval_s": 3600, **extra}
    )


@pytest.fixture(scope="module")
def clients(
    loaded: Loaded, cluster: RedisClusterNodes, single: LocalRedis
) -> Iterator[tuple[RecallClient, RecallClient]]:
    """(client of the single-Redis server, client of the cluster server)."""
    with (
        ServerThread(server_settings(loaded.synth, single.url)) as on_single,
        ServerThread(server_settings(loaded.synth, cluster.url)) as on_cluster,
    ):
        a = RecallClient(f"127.0.0.1:{on_single.port}", retries=0, timeout_s=10)
        b = RecallClient(f"127.0.0.1:{on_cluster.port}", retries=0, timeout_s=10)
        try:
            yield a, b
        finally:
            a.close()
            b.close()


def answer(reply: recall_pb2.RecallResponse) -> tuple[Any, ...]:
    return (
        reply.source,
        reply.model_version,
        [(c.item_id, round(c.score, 6)) for c in reply.candidates],
    )


def test_bulk_load_spreads_vectors_over_every_node(
    loaded: Loaded, cluster: RedisClusterNodes
) -> None:
    counts = cluster.node_key_counts()
    assert sum(counts) == USERS + 1  # the vectors and the meta key, nothing lost
    assert all(c > USERS / MASTERS / 2 for c in counts), counts  # every master holds a share
    assert all(rate > 0 for rate in loaded.rates.values())


def test_recall_answers_match_a_single_redis_for_many_users(
    loaded: Loaded, clients: tuple[RecallClient, RecallClient]
) -> None:
    on_single, on_cluster = clients
    users = loaded.synth.user_ids[:: USERS // COMPARED_USERS][:COMPARED_USERS]
    users += ["nobody-1", "nobody-2"]  # unknown: the fallback, on both
    for user in users:
        expected = answer(on_single.recall(user, 20))
        assert answer(on_cluster.recall(user, 20)) == expected, user
        known = not user.startswith("nobody")
        assert expected[0] == (
            recall_pb2.SOURCE_USER_VECTOR if known else recall_pb2.SOURCE_FALLBACK
        )


def test_batch_recall_answers_match_a_single_redis(
    loaded: Loaded, clients: tuple[RecallClient, RecallClient]
) -> None:
    on_single, on_cluster = clients
    users = [*loaded.synth.user_ids[1::97][:256], "nobody-3"]
    for start in range(0, len(users), 64):
        requests = [
            recall_pb2.RecallRequest(user_id=u, k=10, exclude_item_ids=["i0", "i1"])
            for u in users[start : start + 64]
        ]
        expected = [answer(r) for r in on_single.batch_recall(requests).responses]
        got = [answer(r) for r in on_cluster.batch_recall(requests).responses]
        assert got == expected
        assert len(got) == len(requests)
        assert sum(a[0] == recall_pb2.SOURCE_USER_VECTOR for a in got) >= len(requests) - 1


def test_self_repair_on_the_cluster_rewrites_only_missing_vectors(
    loaded: Loaded, cluster: RedisClusterNodes, clients: tuple[RecallClient, RecallClient]
) -> None:
    synth = loaded.synth
    lost = synth.user_ids[3::40]  # spread over every node
    client = make_client(cluster.url, socket_timeout=10)
    repairer = VectorRepairer.from_url(ArtifactStore(synth.artifact_root), cluster.url)
    try:
        assert client.unlink(*[user_vector_key(MODEL_VERSION, u) for u in lost]) == len(lost)
        client.delete(meta_key(MODEL_VERSION))
        outcome = repairer.repair_once(MODEL_VERSION)
        assert outcome.result is RepairResult.REPAIRED, outcome.detail
        assert outcome.written == len(lost)
        assert repairer.repair_once(MODEL_VERSION).result is RepairResult.HEALTHY
        assert client.get(b"recall:uvrepair:" + MODEL_VERSION.encode()) is None  # released
    finally:
        repairer.close()
        client.close()
    on_single, on_cluster = clients
    for user in lost[:50]:
        assert answer(on_cluster.recall(user, 10)) == answer(on_single.recall(user, 10))


def test_pruning_on_the_cluster_scans_every_node(
    loaded: Loaded, cluster: RedisClusterNodes
) -> None:
    client = make_client(cluster.url, socket_timeout=10)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(900):
            pipe.set(user_vector_key("old-model", f"u{i}"), b"\0" * 8)
        pipe.set(meta_key("old-model"), b"{}")
        pipe.execute()
        assert loaded_model_versions(client) == sorted(["old-model", MODEL_VERSION])
        assert delete_user_vectors(client, "old-model", batch_size=100) == 900
        assert loaded_model_versions(client) == [MODEL_VERSION]
        assert sum(cluster.node_key_counts()) == USERS + 1
    finally:
        client.close()


def _history(client: SyncRedis, user: str) -> list[str]:
    raw: list[bytes] = client.lrange(history_key(user), 0, -1)  # type: ignore[assignment]
    return [r.decode() for r in raw]


def test_histories_interactions_and_refresher_on_the_cluster(
    pipeline: Pipeline, cluster: RedisClusterNodes
) -> None:
    """The trained model of the session's pipeline run, its vectors and histories put in the
    cluster by the pipeline's own task functions; then a recall server and a refresher on
    the cluster: recorded interactions land in the history lists, the stream and the
    touched set, and the refresher's new vector changes the user's answer."""
    model_uri = str(pipeline.model_dir)
    users = [str(u) for u in json.loads((pipeline.model_dir / "user_ids.json").read_text())]
    assert load_vectors(model_uri, cluster.url) == len(users)
    assert seed_histories(pipeline.data, cluster.url) == len(users)
    client = make_client(cluster.url, socket_timeout=10)
    seeded = make_client(pipeline.redis.url, socket_timeout=10)
    try:
        for user in users[20:30]:  # the same lists as the pipeline's seeding of one Redis
            assert _history(client, user) == _history(seeded, user) != []
    finally:
        seeded.close()

    settings = RefresherSettings(
        redis_url=cluster.url, artifact_root=str(pipeline.artifact_root), refresh_block_ms=100
    )
    worker = make_refresher(settings)
    worker.model.encoder()  # load the user tower before the clock starts
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with ServerThread(settings_for(pipeline, redis_url=cluster.url)) as server:
            rc = RecallClient(f"127.0.0.1:{server.port}", retries=0, timeout_s=10)
            try:
                user = users[13]
                before = [c.item_id for c in rc.recall(user, 10).candidates]
                seen = set(_history(client, user))
                deep = [c.item_id for c in rc.recall(user, 300).candidates]
                new_items = [i for i in reversed(deep) if i not in seen][:3]
                other = f"cluster-new-{time.time_ns()}"
                reply = rc.record_interactions(
                    [(user, i, 0) for i in new_items] + [(other, new_items[0], 0)]
                )
                assert (reply.accepted, reply.unknown_items) == (4, 0)
                assert _history(client, user)[:3] == new_items[::-1]
                assert _history(client, other) == [new_items[0]]
                assert client.zscore(TOUCHED_USERS, user) is not None
                assert int(client.xlen(EVENTS_STREAM)) >= 2

                deadline = time.monotonic() + 10
                while [c.item_id for c in rc.recall(user, 10).candidates] == before:
                    assert time.monotonic() < deadline, "the refresher did not update the vector"
                    time.sleep(0.05)
                while rc.recall(other, 5).source != recall_pb2.SOURCE_USER_VECTOR:
                    assert time.monotonic() < deadline, "the new user got no vector"
                    time.sleep(0.05)
                fresh = rc.recall(user, 50, exclude_seen=True)
                assert fresh.source == recall_pb2.SOURCE_USER_VECTOR
                assert not {c.item_id for c in fresh.candidates} & (set(new_items) | seen)
            finally:
                rc.close()
    finally:
        stop.set()
        thread.join(10)
        worker.client.close()
    try:
        # The hourly DAG's task on the cluster: both touched users are re-encoded.
        assert refresh_touched_users(str(pipeline.artifact_root), cluster.url) >= 2
    finally:
        client.close()
