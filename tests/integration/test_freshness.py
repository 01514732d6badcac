"""Fresh user vectors end to end: a real Redis, a real recall server, a real refresher (a
thread running training.refresher with the pipeline's real user tower), and the model
and histories the synthetic pipeline published and seeded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis

from keyspace.histories import history_key
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from serving.server import RecallServer
from tests.integration.harness import Pipeline, ServerThread, refresher_thread, settings_for

pytestmark = pytest.mark.integration

FRESH_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def server(pipeline: Pipeline) -> Iterator[RecallServer]:
    with ServerThread(settings_for(pipeline, max_interactions=50)) as running:
        yield running


@pytest.fixture(scope="module")
def refresher(pipeline: Pipeline) -> Iterator[None]:
    with refresher_thread(pipeline):
        yield


@pytest.fixture()
def client(server: RecallServer) -> Iterator[RecallClient]:
    c = RecallClient(f"127.0.0.1:{server.port}", retries=0)
    try:
        yield c
    finally:
        c.close()


def user_ids(p: Pipeline) -> list[str]:
    return [str(u) for u in json.loads((p.model_dir / "user_ids.json").read_text())]


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


def history(p: Pipeline, user: str) -> list[str]:
    raw = redis.Redis.from_url(p.redis.url).lrange(history_key(user), 0, -1)
    return [r.decode() for r in raw]


def test_pipeline_seeded_histories_most_recent_first(pipeline: Pipeline) -> None:
    import pandas as pd

    frame = pd.read_parquet(pipeline.data / "interactions.parquet")
    user = user_ids(pipeline)[3]
    mine = frame[frame["user_id"].astype(str) == user].sort_values("timestamp", kind="stable")
    assert history(pipeline, user) == [str(i) for i in reversed(mine["item_id"].tolist())]


def test_three_interactions_change_a_known_users_answer_within_5_s(
    pipeline: Pipeline, client: RecallClient, refresher: None
) -> None:
    user = user_ids(pipeline)[11]
    before = [c.item_id for c in client.recall(user, 10).candidates]
    seen_before = set(history(pipeline, user))
    # Three items from far down this user's ranking, which they have not seen.
    deep = [c.item_id for c in client.recall(user, 300).candidates]
    new_items = [i for i in reversed(deep) if i not in seen_before][:3]

    reply = client.record_interactions([(user, item, 0) for item in new_items])
    assert (reply.accepted, reply.unknown_items) == (3, 0)
    took = wait_for(
        lambda: [c.item_id for c in client.recall(user, 10).candidates] != before,
        FRESH_WITHIN_S,
    )
    print(f"event → changed Recall answer: {took:.2f} s")

    assert history(pipeline, user)[:3] == new_items[::-1]
    answer = client.recall(user, 50, exclude_seen=True)
    assert answer.source == recall_pb2.SOURCE_USER_VECTOR
    returned = {c.item_id for c in answer.candidates}
    assert len(returned) == 50
    assert not returned & (set(new_items) | seen_before)


def test_brand_new_user_with_three_events_gets_a_user_vector(
    pipeline: Pipeline, client: RecallClient, refresher: None
) -> None:
    user = f"brand-new-{time.time_ns()}"
    assert client.recall(user, 5).source == recall_pb2.SOURCE_FALLBACK
    items = [c.item_id for c in client.recall(user_ids(pipeline)[0], 3).candidates]
    client.record_interactions([(user, item, 0) for item in items])
    took = wait_for(
        lambda: client.recall(user, 5).source == recall_pb2.SOURCE_USER_VECTOR, FRESH_WITHIN_S
    )
    print(f"new user → SOURCE_USER_VECTOR: {took:.2f} s")
    seen = client.recall(user, 10, exclude_seen=True)
    assert not {c.item_id for c in seen.candidates} & set(items)


def test_unknown_items_are_reported_and_not_stored(
    pipeline: Pipeline, client: RecallClient
) -> None:
    user = f"unknown-items-{time.time_ns()}"
    known = client.recall(user, 1).candidates[0].item_id
    reply = client.record_interactions(
        [(user, "no-such-item", 0), (user, known, 0), (user, "no-such-item", 0), (user, "x2", 0)]
    )
    assert (reply.accepted, reply.unknown_items) == (1, 3)
    assert list(reply.unknown_item_ids) == ["no-such-item", "x2"]
    assert history(pipeline, user) == [known]


@pytest.mark.parametrize(
    ("interactions", "message"),
    [
        ([], "interactions: at least one"),
        ([("u", "1", 0)] * 51, "at most 50 per call"),
        ([("u", "", 0)], "interactions[0].item_id is required"),
        ([("u", "1", 0), ("", "1", 0)], "interactions[1].user_id is required"),
        ([("u", "1", -1)], "interactions[0].timestamp -1"),
        ([("u", "1", 10**13)], "interactions[0].timestamp"),
    ],
)
def test_malformed_or_oversized_input_is_invalid_argument(
    client: RecallClient, interactions: list[tuple[str, str, int]], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.record_interactions(interactions)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_exclude_seen_works_in_batch_recall(pipeline: Pipeline, client: RecallClient) -> None:
    users = user_ids(pipeline)[20:23]
    requests = [recall_pb2.RecallRequest(user_id=u, k=10, exclude_seen=True) for u in users]
    replies = client.batch_recall(requests).responses
    for user, reply in zip(users, replies, strict=True):
        assert len(reply.candidates) == 10
        assert not {c.item_id for c in reply.candidates} & set(history(pipeline, user))


def test_redis_briefly_away_retries_then_unavailable_or_success(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A server on its own Redis: stopped → UNAVAILABLE after the retry window; back within
    the window → the call succeeds and nothing is lost."""
    own = LocalRedis(tmp_path / "redis", free_port(), persist=False)
    own.start()
    restarter: threading.Timer | None = None
    try:
        settings = settings_for(pipeline, redis_url=own.url, redis_retry_s=3.0)
        with ServerThread(settings) as server:
            c = RecallClient(f"127.0.0.1:{server.port}", retries=0, timeout_s=10)
            try:
                item = c.recall("anyone", 1).candidates[0].item_id
                own.stop()
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    c.record_interactions([("u1", item, 0)])
                waited = time.monotonic() - started
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "not recorded, retry the call" in info.value.details()
                assert 2.5 <= waited < 6.0, waited

                restarter = threading.Timer(0.3, own.start)
                restarter.start()
                reply = c.record_interactions([("u2", item, 0)])
                assert reply.accepted == 1
                stored = redis.Redis.from_url(own.url).lrange(history_key("u2"), 0, -1)
                assert stored == [item.encode()]
            finally:
                c.close()
    finally:
        if restarter is not None:
            restarter.join()
        own.stop()
