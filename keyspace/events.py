"""The interaction event stream and the touched-users set (spec: docs/redis.md)::

    recall:events                  Stream, one entry per user per RecordInteractions call:
                                   fields user_id (UTF-8), items (count), ts (newest
                                   interaction, Unix seconds); XADD MAXLEN ~ EVENTS_MAXLEN
    consumer group "refreshers"    on recall:events; each refresher is one consumer
    recall:touched                 Sorted set: user_id → when the server received the user's
                                   last interaction (Unix seconds, float)
    recall:touched:refreshed_at    String: the cut-off (Unix seconds) of the last hourly
                                   refresh; the next one re-encodes users touched since then

The stream wakes the refresher within milliseconds; the sorted set lets the hourly DAG
find every user touched since its last run, whatever the stream lost (trimmed, or a
worker that was down).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from keyspace.user_vectors import KEY_PREFIX, MalformedValue

EVENTS_STREAM = f"{KEY_PREFIX}:events".encode()
REFRESHER_GROUP = "refreshers"
TOUCHED_USERS = f"{KEY_PREFIX}:touched".encode()
REFRESH_WATERMARK = f"{KEY_PREFIX}:touched:refreshed_at".encode()
EVENTS_MAXLEN = 100_000
"""Approximate length cap of the stream (older entries are trimmed; the hourly refresh
covers users whose entries were trimmed before a refresher read them)."""


@dataclass(frozen=True)
class UserEvent:
    """One stream entry: ``items`` new interactions of ``user_id``, the newest at ``ts``."""

    user_id: str
    items: int
    ts: int


class EventPipeline(Protocol):
    """The part of a redis-py pipeline (sync or async) ``queue_user_event`` uses."""

    def xadd(self, name: bytes, fields: Any, *, maxlen: int, approximate: bool) -> Any: ...
    def zadd(self, name: bytes, mapping: Any) -> Any: ...


def encode_event(event: UserEvent) -> dict[bytes, bytes]:
    """A stream entry's fields: ``{b"user_id", b"items", b"ts"}``, values UTF-8/decimal."""
    return {
        b"user_id": event.user_id.encode(),
        b"items": str(event.items).encode(),
        b"ts": str(event.ts).encode(),
    }


def decode_event(fields: Mapping[bytes, bytes]) -> UserEvent:
    """Inverse of encode_event. Raises MalformedValue on a missing or non-numeric field."""
    try:
        return UserEvent(
            user_id=fields[b"user_id"].decode(),
            items=int(fields.get(b"items", b"0")),
            ts=int(fields.get(b"ts", b"0")),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise MalformedValue(f"malformed event stream entry {dict(fields)!r}: {exc}") from exc


def queue_user_event(
    pipe: EventPipeline, event: UserEvent, received_at: float, maxlen: int = EVENTS_MAXLEN
) -> None:
    """Queue XADD of ``event`` to the stream (approximate MAXLEN) and ZADD of its user to
    the touched set with score ``received_at``."""
    pipe.xadd(EVENTS_STREAM, encode_event(event), maxlen=maxlen, approximate=True)
    pipe.zadd(TOUCHED_USERS, {event.user_id.encode(): received_at})
