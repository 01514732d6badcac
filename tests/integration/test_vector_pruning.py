"""Deleting user vectors of models no recent index needs, against a real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from artifacts.store import ArtifactStore
from keyspace.catalogue_items import fresh_vectors_key
from recall_cli.local_redis import LocalRedis
from serving import tasks
from serving.index.artifact import publish_index
from serving.model_artifact import open_model_artifact
from serving.user_vectors import (
    delete_user_vectors,
    load_user_vectors,
    loaded_model_versions,
    meta_key,
)
from tests.unit.helpers import write_model_artifact

pytestmark = pytest.mark.integration
MODELS = ["20260101T000000Z-m00001", "20260102T000000Z-m00002", "20260103T000000Z-m00003"]


def count_vectors(client: redis.Redis, version: str) -> int:
    return sum(1 for _ in client.scan_iter(f"recall:uv:{version}:*".encode(), count=500))


@pytest.fixture()
def store_and_redis(tmp_path: Path, redis_server: LocalRedis) -> tuple[ArtifactStore, str]:
    url = redis_server.url.rsplit("/", 1)[0] + "/3"  # own database: other tests use db 0
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = ArtifactStore(tmp_path / "artifacts")
    for n, version in enumerate(MODELS):
        staging = tmp_path / "staging" / version
        write_model_artifact(staging, n_users=50, model_version=version, seed=n)
        store.publish("models", version, staging)
        model = open_model_artifact(store.local_dir("models", version))
        load_user_vectors(model, client)
        publish_index(
            model,
            store,
            index_version=f"2026010{n + 1}T010000Z-ix{n:04d}",
            min_recall=0.0,
            allow_gpu=False,
        )
    return store, url


def test_prune_keeps_models_of_newest_indexes_and_latest_model(
    store_and_redis: tuple[ArtifactStore, str],
) -> None:
    store, url = store_and_redis
    client = redis.Redis.from_url(url)
    assert loaded_model_versions(client) == MODELS
    assert all(count_vectors(client, v) == 50 for v in MODELS)
    for version in MODELS:  # fresh item vectors of each model (keyspace.catalogue_items)
        client.hset(fresh_vectors_key(version), "new-1", b"\x00" * 8)

    assert tasks.prune_vectors(str(store.root), url, keep_indexes=2) == [MODELS[0]]
    assert count_vectors(client, MODELS[0]) == 0
    assert not client.exists(fresh_vectors_key(MODELS[0]))
    assert all(client.exists(fresh_vectors_key(v)) for v in MODELS[1:])
    assert client.get(meta_key(MODELS[0])) is None
    assert [count_vectors(client, v) for v in MODELS[1:]] == [50, 50]

    # LATEST model points at an older version (a rollback): its vectors stay.
    store.set_latest("models", MODELS[1])
    assert tasks.prune_vectors(str(store.root), url, keep_indexes=1) == []
    store.set_latest("models", MODELS[2])
    assert tasks.prune_vectors(str(store.root), url, keep_indexes=1) == [MODELS[1]]
    assert loaded_model_versions(client) == [MODELS[2]]


def test_delete_refuses_patterns(store_and_redis: tuple[ArtifactStore, str]) -> None:
    _, url = store_and_redis
    client = redis.Redis.from_url(url)
    for bad in ("", "*", "a:b"):
        with pytest.raises(ValueError):
            delete_user_vectors(client, bad)
    assert loaded_model_versions(client) == MODELS
