"""``serving.tasks.check_user_vectors`` (recall_index's ``check_user_vectors`` task) against
a real Redis: a model whose vectors were never loaded, partly loaded or fully loaded, and a
Redis that does not answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from artifacts.store import ArtifactStore
from recall_cli.local_redis import LocalRedis, free_port
from serving import tasks
from serving.errors import BackendUnavailable
from serving.model_artifact import open_model_artifact
from serving.user_vectors import load_user_vectors, meta_key
from tests.integration.harness import latest, run_cli
from tests.unit.helpers import write_model_artifact

pytestmark = pytest.mark.integration
VERSION = "20260105T000000Z-chk001"
USERS = 40


@pytest.fixture()
def redis_db(redis_server: LocalRedis) -> Iterator[tuple[str, redis.Redis]]:
    """The session Redis, database 4 (other tests use 0 and 3), emptied before and after."""
    url = redis_server.url.rsplit("/", 1)[0] + "/4"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url, client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture()
def model_uri(tmp_path: Path) -> str:
    store = ArtifactStore(tmp_path / "artifacts")
    staging = tmp_path / "staging" / VERSION
    write_model_artifact(staging, n_users=USERS, model_version=VERSION)
    store.publish("models", VERSION, staging)
    return store.uri("models", VERSION)


def test_a_model_never_loaded_is_refused_naming_version_and_fix(
    model_uri: str, redis_db: tuple[str, redis.Redis]
) -> None:
    url, _ = redis_db
    with pytest.raises(tasks.UserVectorsNotLoaded) as refused:
        tasks.check_user_vectors(model_uri, url)
    message = str(refused.value)
    assert f"user vectors of model {VERSION} are not loaded" in message
    assert "meta key is absent" in message
    assert f"Trigger recall_vectors with model_uri={model_uri} first" in message
    assert f"recall vectors load --model-version {VERSION}" in message


def test_a_loaded_model_passes_and_a_short_load_is_refused(
    model_uri: str, redis_db: tuple[str, redis.Redis]
) -> None:
    url, client = redis_db
    load_user_vectors(open_model_artifact(Path(model_uri)), client)
    assert tasks.check_user_vectors(model_uri, url) == USERS
    # A meta key recording fewer users than the model has is no completed load (the
    # server's vector repair would reload this one too).
    record = json.loads(client.get(meta_key(VERSION)) or b"{}")
    client.set(meta_key(VERSION), json.dumps({**record, "count": USERS - 1}))
    with pytest.raises(tasks.UserVectorsNotLoaded, match=f"a load of {USERS - 1} users, but"):
        tasks.check_user_vectors(model_uri, url)


def test_an_unreachable_redis_is_a_retryable_backend_error(model_uri: str) -> None:
    # Nothing listens on a fresh free port: the connection is refused at once.
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(BackendUnavailable, match=f"user vectors of model {VERSION}"):
        tasks.check_user_vectors(model_uri, url)


def test_recall_index_build_refuses_until_the_vectors_are_loaded(
    model_uri: str, redis_db: tuple[str, redis.Redis], tmp_path: Path
) -> None:
    """The CLI's manual build checks as recall_index does; --no-redis builds without it."""
    url, _ = redis_db
    root = str(tmp_path / "artifacts")
    build = ["index", "build", "--artifact-root", root, "--redis-url", url, "--min-recall", "0"]
    refused = run_cli(build, tmp_path)
    assert refused.returncode == 1
    assert f"user vectors of model {VERSION} are not loaded" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "artifacts" / "indexes").exists()  # nothing published

    loaded = run_cli(["vectors", "load", "--artifact-root", root, "--redis-url", url], tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    built = run_cli(build, tmp_path)
    assert built.returncode == 0, built.stderr
    assert latest(tmp_path / "artifacts", "indexes").is_dir()

    # Without Redis at all: no check, no fold, still a gated, published index.
    offline = [*build[:-4], "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "--no-redis"]
    assert run_cli([*offline, "--min-recall", "0"], tmp_path).returncode == 0
    unreachable = run_cli([*offline[:-1], "--min-recall", "0"], tmp_path)
    assert unreachable.returncode == 1
    assert "--no-redis builds without the check" in unreachable.stderr
