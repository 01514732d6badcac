"""The shared Redis key formats and value codecs (keyspace/), pinned byte for byte: the
contract between the recall server, the refresher and the pipelines (docs/redis.md)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from keyspace.events import (
    EVENTS_STREAM,
    REFRESH_WATERMARK,
    REFRESHER_GROUP,
    TOUCHED_USERS,
    UserEvent,
    decode_event,
    encode_event,
    queue_user_event,
)
from keyspace.histories import (
    HISTORY_MAX_ITEMS,
    decode_items,
    encode_items,
    history_key,
    queue_history_append,
)
from keyspace.user_vectors import (
    MalformedValue,
    decode_vector,
    encode_vector,
    meta_key,
    repair_lock_key,
    user_vector_key,
)
from tests.unit.fake_redis import FakeRedis


def test_user_vector_keys_are_pinned() -> None:
    assert (
        user_vector_key("20261123T073012Z-3f9a1c", "42") == b"recall:uv:20261123T073012Z-3f9a1c:42"
    )
    assert meta_key("v1") == b"recall:uvmeta:v1"
    assert encode_vector(np.array([1.0, -2.0])) == struct.pack("<2f", 1.0, -2.0)
    with pytest.raises(MalformedValue, match="7 bytes"):
        decode_vector(b"\x00" * 7, 2)


def test_history_key_is_pinned_and_utf8() -> None:
    assert history_key("42") == b"recall:hist:42"
    assert history_key("josé:1") == b"recall:hist:jos\xc3\xa9:1"
    assert HISTORY_MAX_ITEMS == 1000


def test_history_items_are_utf8_elements() -> None:
    assert encode_items(["50", "é"]) == [b"50", b"\xc3\xa9"]
    assert decode_items([b"50", b"\xc3\xa9"]) == ["50", "é"]


def test_event_names_are_pinned() -> None:
    assert EVENTS_STREAM == b"recall:events"
    assert REFRESHER_GROUP == "refreshers"
    assert TOUCHED_USERS == b"recall:touched"
    assert REFRESH_WATERMARK == b"recall:touched:refreshed_at"


def test_event_fields_are_pinned_and_round_trip() -> None:
    event = UserEvent("josé", 3, 1795419978)
    fields = encode_event(event)
    assert fields == {b"user_id": b"jos\xc3\xa9", b"items": b"3", b"ts": b"1795419978"}
    assert decode_event(fields) == event


@pytest.mark.parametrize(
    "fields", [{}, {b"items": b"1"}, {b"user_id": b"u", b"items": b"x"}, {b"user_id": b"\xff"}]
)
def test_malformed_event_raises(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedValue):
        decode_event(fields)


def test_history_append_pushes_newest_to_the_head_and_trims() -> None:
    client = FakeRedis()
    client.lists[b"recall:hist:u"] = [b"old2", b"old1"]
    pipe = client.pipeline(transaction=False)
    queue_history_append(pipe, "u", ["a", "b", "c"], cap=4)
    assert [name for name, _, _ in pipe.calls] == ["lpush", "ltrim"]
    pipe.execute()
    assert client.lists[b"recall:hist:u"] == [b"c", b"b", b"a", b"old2"]


def test_history_append_of_nothing_queues_nothing() -> None:
    pipe = FakeRedis().pipeline(transaction=False)
    queue_history_append(pipe, "u", [], cap=4)
    assert pipe.calls == []
    with pytest.raises(ValueError):
        queue_history_append(pipe, "u", ["a"], cap=0)


def test_user_event_goes_to_the_stream_and_the_touched_set() -> None:
    client = FakeRedis()
    pipe = client.pipeline(transaction=False)
    queue_user_event(pipe, UserEvent("u", 2, 100), received_at=123.5, maxlen=50)
    assert pipe.calls[0] == (
        "xadd",
        (EVENTS_STREAM, {b"user_id": b"u", b"items": b"2", b"ts": b"100"}),
        {"maxlen": 50, "approximate": True},
    )
    pipe.execute()
    assert client.zsets[TOUCHED_USERS] == {b"u": 123.5}


def test_repair_lock_key_is_pinned() -> None:
    assert repair_lock_key("20261123T073012Z-3f9a1c") == b"recall:uvrepair:20261123T073012Z-3f9a1c"
    # Outside the prefixes that list loaded versions (recall:uvmeta:*) and a version's
    # vectors (recall:uv:<version>:*), so neither SCAN ever sees it.
    assert not repair_lock_key("v").startswith(b"recall:uvmeta:")
    assert not repair_lock_key("v").startswith(b"recall:uv:v:")
