"""Duplicate items end to end: `recall train` on data with a planted duplicate, the model
artifact's canonical map, an index of canonical ids, and a real recall server with a real
Redis: a duplicate pair is never served together, and excluding either copy (explicitly or
through the seen list) excludes both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
import redis

from artifacts.store import ArtifactStore
from keyspace.histories import history_key
from recall_cli.local_redis import LocalRedis
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.config import ServerSettings
from serving.index.artifact import publish_index
from serving.model_artifact import open_model_artifact
from serving.server import RecallServer
from serving.user_vectors import load_user_vectors
from tests.integration.harness import ServerThread, latest, run_cli
from training.data.schema import write_dataset
from training.data.synthetic import generate

pytestmark = pytest.mark.integration

CANONICAL, COPY = "i7", "i120"  # i120 is a second id of i7's film


@dataclass
class Served:
    model_dir: Path
    server: RecallServer
    stub: recall_pb2_grpc.RecallServiceStub
    users: list[str]
    redis_url: str


def planted_data(directory: Path) -> None:
    """Synthetic data (120 items) plus i120: i7's title spelled another way, same year,
    given a third of i7's interactions (so i7, with more, is the canonical id)."""
    data = generate(n_users=200, n_items=120, interactions_per_user=15, seed=3)
    items, interactions = data.items.copy(), data.interactions.copy()
    original = items.set_index("item_id").loc[CANONICAL]
    copy = {
        "item_id": COPY,
        "title": f"{str(original['title']).upper()} ({int(original['year'])})",
        "year": int(original["year"]),
        "genres": list(original["genres"]),
    }
    items = pd.concat([items, pd.DataFrame([copy])], ignore_index=True)
    # i7 popular enough to be in the fallback list and many users' candidates.
    extra = interactions.drop_duplicates("user_id").head(120).copy()
    extra["item_id"] = CANONICAL
    extra["timestamp"] += 1
    interactions = pd.concat([interactions, extra], ignore_index=True)
    interactions = interactions.drop_duplicates(["user_id", "item_id"], keep="first")
    of_i7 = interactions.index[interactions["item_id"] == CANONICAL][::3]
    interactions.loc[of_i7, "item_id"] = COPY
    write_dataset(directory, interactions, items, data.users)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_server: LocalRedis) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("duplicates")
    data, root = home / "data", home / "artifacts"
    planted_data(data)
    args = ["--data", str(data), "--artifact-root", str(root), "--epochs", "2", "--no-model-gate"]
    trained = run_cli(["train", *args], home)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    model_dir = latest(root, "models")
    model = open_model_artifact(model_dir)
    publish_index(model, ArtifactStore(root), min_recall=0.0, allow_gpu=False)
    client = redis.Redis.from_url(redis_server.url)
    try:
        load_user_vectors(model, client)
    finally:
        client.close()
    values: dict[str, Any] = {
        "port": 0,
        "admin_port": 0,
        "metrics_port": 0,
        "redis_url": redis_server.url,
        "artifact_root": str(root),
        "watch_interval_s": 0,
    }
    with ServerThread(ServerSettings(**values)) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            stub = recall_pb2_grpc.RecallServiceStub(channel)
            yield Served(model_dir, server, stub, model.user_ids(), redis_server.url)
        finally:
            channel.close()


def recall(served: Served, user: str, k: int = 40, **extra: Any) -> recall_pb2.RecallResponse:
    request = recall_pb2.RecallRequest(user_id=user, k=k, **extra)
    return served.stub.Recall(request, timeout=10)


def ids(response: recall_pb2.RecallResponse) -> list[str]:
    return [c.item_id for c in response.candidates]


def test_the_model_artifact_holds_canonical_ids_and_the_checksummed_map(served: Served) -> None:
    model_dir = served.model_dir
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert "duplicates.json" in {f["path"] for f in manifest["files"]}
    assert manifest["duplicate_groups"] == 1
    groups = json.loads((model_dir / "duplicates.json").read_text())["groups"]
    assert [(g["canonical_id"], g["item_ids"]) for g in groups] == [(CANONICAL, [CANONICAL, COPY])]
    assert groups[0]["reason"].startswith("title jaccard 1.00, year ")
    item_ids = json.loads((model_dir / "item_ids.json").read_text())
    assert CANONICAL in item_ids and COPY not in item_ids  # trained and indexed once
    listed = run_cli(
        ["items", "duplicates", "--artifact-root", str(model_dir.parent.parent)],
        model_dir.parent.parent.parent,
    )
    assert listed.returncode == 0, listed.stderr
    assert CANONICAL in listed.stdout and COPY in listed.stdout and "jaccard" in listed.stdout


def test_a_duplicate_pair_is_never_served_together_and_k_is_filled(served: Served) -> None:
    with_canonical = 0
    for user in [*served.users[:60], "someone-new"]:
        response = recall(served, user, k=40)
        got = ids(response)
        assert len(got) == 40 and len(set(got)) == 40
        assert COPY not in got  # answers carry canonical ids only
        with_canonical += CANONICAL in got
    assert with_canonical > 0  # the film itself is still recommended


def test_excluding_either_copy_excludes_both(served: Served) -> None:
    users = [u for u in served.users[:80] if CANONICAL in ids(recall(served, u))]
    assert users, "i7 is in nobody's top 40"
    for user in users[:5]:
        for excluded in (COPY, CANONICAL):
            got = ids(recall(served, user, exclude_item_ids=[excluded]))
            assert CANONICAL not in got and COPY not in got
            assert len(got) == 40
    # The popular-items fallback of an unknown user too.
    assert CANONICAL in ids(recall(served, "someone-new"))
    fallback = recall(served, "someone-new", exclude_item_ids=[COPY])
    assert fallback.source == recall_pb2.SOURCE_FALLBACK
    assert CANONICAL not in ids(fallback) and len(ids(fallback)) == 40


def test_a_seen_copy_excludes_the_canonical_item(served: Served) -> None:
    user = next(u for u in served.users[:80] if CANONICAL in ids(recall(served, u)))
    client = redis.Redis.from_url(served.redis_url)
    key = history_key(user)
    saved = client.lrange(key, 0, -1)
    try:
        client.delete(key)
        client.rpush(key, COPY)  # the user saw the other copy (e.g. an older client's id)
        got = ids(recall(served, user, exclude_seen=True))
        assert CANONICAL not in got and len(got) == 40
        assert CANONICAL in ids(recall(served, user))  # without the seen filter it is back
    finally:
        client.delete(key)
        if saved:
            client.rpush(key, *saved)
        client.close()


def test_an_interaction_with_a_copy_is_recorded_under_the_canonical_id(served: Served) -> None:
    user = served.users[0]
    client = redis.Redis.from_url(served.redis_url)
    key = history_key(user)
    saved = client.lrange(key, 0, -1)
    try:
        reply = served.stub.RecordInteractions(
            recall_pb2.RecordInteractionsRequest(
                interactions=[recall_pb2.Interaction(user_id=user, item_id=COPY)]
            ),
            timeout=10,
        )
        # The copy is known (as its canonical item), not refused as an unknown id.
        assert reply.accepted == 1 and reply.unknown_items == 0
        assert client.lindex(key, 0) == CANONICAL.encode()
    finally:
        client.delete(key)
        if saved:
            client.rpush(key, *saved)
        client.close()
