"""The walking skeleton end to end: synthetic data → Airflow DAG (dag.test, SQLite) →
model + index artifacts + user vectors in a real Redis → a real gRPC server on OS-chosen
ports → checks over the wire."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from recall_cli.local_redis import LocalRedis
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.server import RecallServer
from serving.user_vectors import user_vector_key
from tests.integration.harness import (
    Pipeline,
    ServerThread,
    copy_index_as,
    manifest,
    run_cli,
    settings_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(pipeline: Pipeline) -> Iterator[RecallServer]:
    with ServerThread(settings_for(pipeline)) as running:
        yield running


@pytest.fixture()
def client(server: RecallServer) -> Iterator[RecallClient]:
    c = RecallClient(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}", retries=0)
    try:
        yield c
    finally:
        c.close()


def known_user(p: Pipeline) -> str:
    return str(json.loads((p.model_dir / "user_ids.json").read_text())[7])


def test_pipeline_published_consistent_artifacts(pipeline: Pipeline) -> None:
    index = manifest(pipeline.index_dir)
    model = manifest(pipeline.model_dir)
    assert index["model_version"] == model["model_version"]
    assert index["factory"].startswith("IVF") and ",PQ" in index["factory"]
    assert index["quality"]["recall"] >= 0.5
    assert index["build_device"] == "cpu"
    listed = {f["path"] for f in index["files"]}
    assert listed == {"index.faiss", "item_ids.json", "popular_items.json"}
    assert not any(
        p.name.startswith(".staging") for p in (pipeline.artifact_root / "indexes").iterdir()
    )


def test_user_vectors_are_in_redis_under_the_documented_key(pipeline: Pipeline) -> None:
    model_version = manifest(pipeline.model_dir)["model_version"]
    user_ids = json.loads((pipeline.model_dir / "user_ids.json").read_text())
    vectors = np.load(pipeline.model_dir / "user_vectors.npy")
    raw = redis.Redis.from_url(pipeline.redis.url).get(user_vector_key(model_version, user_ids[7]))
    assert raw is not None
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), vectors[7])


def test_known_user_gets_k_distinct_ranked_candidates(
    pipeline: Pipeline, client: RecallClient
) -> None:
    reply = client.recall(known_user(pipeline), 10)
    catalog = set(json.loads((pipeline.index_dir / "item_ids.json").read_text()))
    ids = [c.item_id for c in reply.candidates]
    scores = [c.score for c in reply.candidates]
    assert reply.source == recall_pb2.SOURCE_USER_VECTOR
    assert len(ids) == 10 and len(set(ids)) == 10
    assert set(ids) <= catalog
    assert scores == sorted(scores, reverse=True)
    assert reply.model_version == manifest(pipeline.model_dir)["model_version"]
    assert reply.index_version == manifest(pipeline.index_dir)["index_version"]


def test_excluded_items_never_come_back_and_k_still_does(
    pipeline: Pipeline, client: RecallClient
) -> None:
    user = known_user(pipeline)
    top = [c.item_id for c in client.recall(user, 10).candidates]
    reply = client.recall(user, 10, exclude=[*top[:5], "not-an-item"])
    ids = [c.item_id for c in reply.candidates]
    assert len(ids) == 10
    assert not set(ids) & set(top[:5])
    assert ids[:5] == top[5:]  # the rest of the ranking moves up


def test_unknown_user_gets_popular_fallback(pipeline: Pipeline, client: RecallClient) -> None:
    reply = client.recall("user-that-does-not-exist", 5)
    popular = [
        p["item_id"] for p in json.loads((pipeline.index_dir / "popular_items.json").read_text())
    ]
    assert reply.source == recall_pb2.SOURCE_FALLBACK
    assert [c.item_id for c in reply.candidates] == popular[:5]


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_out_of_range_k_is_invalid_argument(client: RecallClient, k: int) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.recall("1", k)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "k must be between 1 and 1000" in info.value.details()


def test_batch_recall_matches_single_calls_in_order(
    pipeline: Pipeline, client: RecallClient
) -> None:
    users = [known_user(pipeline), "nobody", known_user(pipeline)]
    requests = [recall_pb2.RecallRequest(user_id=u, k=4) for u in users]
    batch = client.batch_recall(requests)
    assert len(batch.responses) == 3
    for user, reply in zip(users, batch.responses, strict=True):
        single = client.recall(user, 4)
        assert [c.item_id for c in reply.candidates] == [c.item_id for c in single.candidates]
        assert reply.source == single.source
    with pytest.raises(grpc.RpcError) as info:
        client.batch_recall(
            [recall_pb2.RecallRequest(user_id="a", k=3), recall_pb2.RecallRequest(user_id="b")]
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1]" in info.value.details()


def test_health_and_status(pipeline: Pipeline, client: RecallClient) -> None:
    assert client.is_serving()
    status = client.status()
    assert status.index_version == manifest(pipeline.index_dir)["index_version"]
    assert status.item_count == manifest(pipeline.index_dir)["item_count"]
    assert status.redis_healthy
    assert status.user_vectors_loaded
    assert status.user_vector_count == len(
        json.loads((pipeline.model_dir / "user_ids.json").read_text())
    )


def test_tampered_index_is_refused_and_old_one_keeps_serving(
    pipeline: Pipeline, client: RecallClient
) -> None:
    serving_version = client.status().index_version
    bad = copy_index_as(pipeline.index_dir, "99990101T000000Z-bad000", corrupt=True)
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.load_index(bad.name)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "index.faiss: sha256" in info.value.details()
        assert client.status().index_version == serving_version
        assert len(client.recall(known_user(pipeline), 3).candidates) == 3
    finally:
        shutil.rmtree(bad)
    with pytest.raises(grpc.RpcError) as missing:
        client.load_index("20000101T000000Z-absent")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_load_index_swaps_to_a_new_version(pipeline: Pipeline, client: RecallClient) -> None:
    new = copy_index_as(pipeline.index_dir, "99990101T000000Z-copy00")
    try:
        reply = client.load_index(new.name)
        assert reply.index_version == new.name
        assert reply.previous_index_version == pipeline.index_dir.name
        assert client.recall(known_user(pipeline), 3).index_version == new.name
    finally:
        client.load_index(pipeline.index_dir.name)
        shutil.rmtree(new)


def test_server_without_index_is_not_serving(tmp_path: Path, redis_server: LocalRedis) -> None:
    settings = ServerSettings(
        port=0,
        admin_port=0,
        metrics_port=0,
        redis_url=redis_server.url,
        artifact_root=str(tmp_path),
        watch_interval_s=0,
    )
    with ServerThread(settings) as running:
        c = RecallClient(f"127.0.0.1:{running.port}", retries=0)
        try:
            assert not c.is_serving()
            with pytest.raises(grpc.RpcError) as info:
                c.recall("1", 5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            c.close()


def test_bad_data_fails_the_pipeline_and_keeps_last_good_index(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "interactions.csv").write_text("user_id,item_id\n1,2\n")
    latest_before = (pipeline.artifact_root / "indexes" / "LATEST").read_text()
    ran = run_cli(
        [
            "pipeline",
            "run",
            "--data",
            str(bad),
            "--artifact-root",
            str(pipeline.artifact_root),
            "--redis-url",
            pipeline.redis.url,
            "--epochs",
            "1",
        ],
        pipeline.home,
    )
    assert ran.returncode == 1
    assert "missing required column(s) ['timestamp']" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert (pipeline.artifact_root / "indexes" / "LATEST").read_text() == latest_before
