"""serving.interactions: validation, unknown-item accounting, the Redis writes and the
bounded retry, with fake clients (real Redis: tests/integration/test_freshness.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from keyspace.events import EVENTS_STREAM, TOUCHED_USERS
from serving.errors import BackendUnavailable, InvalidRequest
from serving.interactions import (
    Interaction,
    InteractionRecorder,
    plan_writes,
    validate_interactions,
)
from tests.unit.fake_redis import FakeRedis

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([], "interactions: at least one"),
        ([Interaction("u", "i", 1)] * 4, "at most 3 per call, got 4"),
        ([Interaction("u", "i", 1), Interaction("", "i", 1)], r"interactions\[1\].user_id is"),
        ([Interaction("u", "", 1)], r"interactions\[0\].item_id is required"),
        ([Interaction("u", "é" * 257, 1)], r"interactions\[0\].item_id is longer than 512"),
        ([Interaction("u" * 513, "i", 1)], r"interactions\[0\].user_id is longer"),
        ([Interaction("u", "i", -5)], r"interactions\[0\].timestamp -5"),
        ([Interaction("u", "i", int(NOW) * 1000)], r"interactions\[0\].timestamp"),
    ],
)
def test_validate_rejects_naming_the_field(events: list[Interaction], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_interactions(events, max_per_call=3, now=NOW)


def test_validate_fills_in_now_for_zero_and_accepts_bounds() -> None:
    events = [
        Interaction("u", "i", 0),
        Interaction("é" * 256, "j" * 512, int(NOW) + 86_400),
        Interaction("u", "k", 1),
    ]
    checked = validate_interactions(events, max_per_call=3, now=NOW + 0.7)
    assert [e.timestamp for e in checked] == [int(NOW), int(NOW) + 86_400, 1]


def test_plan_groups_by_user_oldest_first_and_counts_unknown_items() -> None:
    events = [
        Interaction("u1", "b", 20),
        Interaction("u1", "x", 25),
        Interaction("u2", "a", 5),
        Interaction("u1", "a", 10),
        Interaction("u3", "y", 1),
        Interaction("u1", "c", 20),
        Interaction("u3", "x", 2),
    ]
    items, newest, outcome = plan_writes(events, {"a", "b", "c"})
    assert items == {"u1": ["a", "b", "c"], "u2": ["a"]}  # equal times keep request order
    assert newest == {"u1": 20, "u2": 5}
    assert outcome.accepted == 4
    assert outcome.unknown_items == 3
    assert outcome.unknown_item_ids == ["x", "y"]


def test_plan_reports_at_most_ten_unknown_ids() -> None:
    events = [Interaction("u", f"n{i}", 1) for i in range(25)]
    _, _, outcome = plan_writes(events, set())
    assert outcome.unknown_items == 25
    assert outcome.unknown_item_ids == [f"n{i}" for i in range(10)]


class FlakyAsyncRedis:
    """An async client whose pipelines fail ``failures`` times, then run on a FakeRedis."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.store = FakeRedis()

    def pipeline(self, transaction: bool = True) -> Any:
        assert not transaction
        outer = self
        inner = self.store.pipeline(transaction=False)

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            async def execute(self) -> list[Any]:
                outer.attempts += 1
                if outer.attempts <= outer.failures:
                    raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1")
                return inner.execute()

        return Pipe()


def recorder(client: FlakyAsyncRedis, retry_s: float = 1.0) -> tuple[InteractionRecorder, list]:
    holder = SimpleNamespace(current=lambda: SimpleNamespace(internal_ids={"a": 0, "b": 1, "c": 2}))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    rec = InteractionRecorder(
        holder,  # type: ignore[arg-type]
        client,  # type: ignore[arg-type]
        max_per_call=100,
        history_cap=3,
        events_maxlen=1000,
        retry_s=retry_s,
        clock=lambda: NOW,
        sleep=sleep,
    )
    return rec, slept


def test_recorder_writes_histories_stream_and_touched_set_in_one_pipeline() -> None:
    client = FlakyAsyncRedis(failures=0)
    rec, _ = recorder(client)
    events = [Interaction("u", i, t) for i, t in (("a", 3), ("b", 1), ("zz", 2), ("c", 2))]
    outcome = asyncio.run(rec.record(events))
    assert (outcome.accepted, outcome.unknown_items, outcome.unknown_item_ids) == (3, 1, ["zz"])
    store = client.store
    assert store.executed == [["lpush", "ltrim", "xadd", "zadd"]]
    assert store.lists[b"recall:hist:u"] == [b"a", b"c", b"b"]
    assert store.stream == [(b"1-0", {b"user_id": b"u", b"items": b"3", b"ts": b"3"})]
    assert store.zsets[TOUCHED_USERS] == {b"u": NOW}
    assert EVENTS_STREAM == b"recall:events"


def test_recorder_with_only_unknown_items_writes_nothing() -> None:
    client = FlakyAsyncRedis(failures=0)
    rec, _ = recorder(client)
    outcome = asyncio.run(rec.record([Interaction("u", "nope", 1)]))
    assert (outcome.accepted, outcome.unknown_items) == (0, 1)
    assert client.attempts == 0


def test_recorder_retries_a_briefly_missing_redis() -> None:
    client = FlakyAsyncRedis(failures=3)
    rec, slept = recorder(client, retry_s=5.0)
    outcome = asyncio.run(rec.record([Interaction("u", "a", 1)]))
    assert outcome.accepted == 1
    assert client.attempts == 4
    assert slept == [0.05, 0.1, 0.2]
    assert client.store.lists[b"recall:hist:u"] == [b"a"]


def test_recorder_gives_up_with_backend_unavailable_within_the_window() -> None:
    client = FlakyAsyncRedis(failures=10**6)
    rec, slept = recorder(client, retry_s=0.0)
    with pytest.raises(BackendUnavailable, match=r"1 interaction\(s\) of 1 user\(s\) not recorded"):
        asyncio.run(rec.record([Interaction("u", "a", 1)]))
    assert client.attempts == 1 and slept == []


def test_recorder_validates_before_touching_redis() -> None:
    client = FlakyAsyncRedis(failures=0)
    rec, _ = recorder(client)
    with pytest.raises(InvalidRequest):
        asyncio.run(rec.record([Interaction("u", "a", 1), Interaction("u", "", 1)]))
    assert client.attempts == 0
