"""Each user's recent item ids (spec: docs/redis.md)::

    recall:hist:<user_id>      Redis list of UTF-8 item ids, index 0 = most recent,
                               at most HISTORY_MAX_ITEMS long (LTRIM after every append)

Written by the recall server (RecordInteractions appends) and by the pipeline's history
seeding (training.histories replaces whole lists); read by the refresher (the user tower's
input) and by the server's seen filter (``exclude_seen``).

The ``queue_*`` functions only queue commands on a pipeline the caller executes, so the
same code serves a sync (``redis.Redis``) and an async (``redis.asyncio``) pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from keyspace.user_vectors import KEY_PREFIX
from recall_settings import defaults

HISTORY_MAX_ITEMS = defaults.HISTORY_MAX_ITEMS.default
"""Default cap of one history list (servers: RECALL_HISTORY_MAX_ITEMS)."""

REPLACE_HISTORY_LUA = """
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return #ARGV
"""
"""Atomically replace list KEYS[1] by ARGV (in order). One key per call, so it works on
Redis Cluster; readers see the old list or the new one, never an empty or partial one."""

EVAL = "EVAL"


class ListPipeline(Protocol):
    """The part of a redis-py pipeline (sync or async) these functions queue commands on."""

    def lpush(self, name: bytes, *values: bytes) -> Any: ...
    def ltrim(self, name: bytes, start: int, end: int) -> Any: ...


class CommandPipeline(Protocol):
    """A redis-py pipeline (sync or async, single Redis or cluster) taking raw commands."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


def history_key(user_id: str) -> bytes:
    """``recall:hist:<user_id>`` as UTF-8 bytes."""
    return f"{KEY_PREFIX}:hist:{user_id}".encode()


def encode_items(item_ids: Sequence[str]) -> list[bytes]:
    """Item ids → list elements (UTF-8)."""
    return [item.encode() for item in item_ids]


def decode_items(raw: Sequence[bytes]) -> list[str]:
    """List elements (as LRANGE returns them) → item ids, in the same order."""
    return [item.decode() for item in raw]


def queue_history_append(
    pipe: ListPipeline, user_id: str, items_oldest_first: Sequence[str], cap: int
) -> None:
    """Queue LPUSH of ``items_oldest_first`` (so the newest ends at index 0) + LTRIM to ``cap``.

    Nothing is queued for an empty list.
    """
    if cap < 1:
        raise ValueError(f"history cap must be at least 1, got {cap}")
    if not items_oldest_first:
        return
    key = history_key(user_id)
    pipe.lpush(key, *encode_items(items_oldest_first))
    pipe.ltrim(key, 0, cap - 1)


def queue_history_replace(pipe: CommandPipeline, user_id: str, items: Sequence[str]) -> None:
    """Queue the atomic replacement of the user's list by ``items`` (most recent first):
    ``EVAL REPLACE_HISTORY_LUA 1 recall:hist:<user_id> items...``.

    EVAL with the script's text, not EVALSHA: redis-py's cluster pipeline refuses EVALSHA
    and cannot load a script on the nodes first, and the text is small beside the items.
    """
    pipe.execute_command(EVAL, REPLACE_HISTORY_LUA, 1, history_key(user_id), *encode_items(items))
