"""A small in-memory stand-in for the sync ``redis.Redis`` commands the refresher and the
history seeding use (strings, lists, sorted sets, one stream with consumer groups), so
their logic is unit-tested without a server. Integration tests use a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class FakePipeline:
    def __init__(self, client: FakeRedis) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., FakePipeline]:
        def queue(*args: Any, **kwargs: Any) -> FakePipeline:
            self.calls.append((name, args, kwargs))
            return self

        return queue

    def execute(self) -> list[Any]:
        self.client.executed.append([name for name, _, _ in self.calls])
        return [getattr(self.client, name)(*a, **kw) for name, a, kw in self.calls]


class FakeScript:
    """register_script(REPLACE_HISTORY_LUA): DEL + RPUSH of one key."""

    def __init__(self, client: FakeRedis) -> None:
        self.client = client

    def __call__(self, keys: list[bytes], args: list[bytes], client: Any) -> Any:
        client.calls.append(("_replace_list", (keys[0], list(args)), {}))


class FakeRedis:
    def __init__(self, clock: Callable[[], float] = lambda: 0.0) -> None:
        self.clock = clock
        self.strings: dict[bytes, bytes] = {}
        self.lists: dict[bytes, list[bytes]] = {}
        self.zsets: dict[bytes, dict[bytes, float]] = {}
        self.stream: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.groups: dict[str, dict[str, Any]] = {}
        self.executed: list[list[str]] = []
        self.acked: list[bytes] = []

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert not transaction, "the code under test must use non-transactional pipelines"
        return FakePipeline(self)

    def register_script(self, script: str) -> FakeScript:
        return FakeScript(self)

    # strings
    def get(self, key: bytes) -> bytes | None:
        return self.strings.get(_b(key))

    def set(self, key: bytes, value: bytes | str) -> bool:
        self.strings[_b(key)] = _b(value)
        return True

    # lists
    def lpush(self, key: bytes, *values: bytes) -> int:
        lst = self.lists.setdefault(key, [])
        for v in values:
            lst.insert(0, v)
        return len(lst)

    def ltrim(self, key: bytes, start: int, end: int) -> bool:
        self.lists[key] = self.lists.get(key, [])[start : end + 1]
        return True

    def lrange(self, key: bytes, start: int, end: int) -> list[bytes]:
        lst = self.lists.get(key, [])
        return lst[start:] if end == -1 else lst[start : end + 1]

    def _replace_list(self, key: bytes, values: list[bytes]) -> int:
        self.lists[key] = list(values)
        return len(values)

    def execute_command(self, *args: Any) -> Any:
        """Only ``EVAL REPLACE_HISTORY_LUA 1 key items...`` (keyspace.histories)."""
        from keyspace.histories import REPLACE_HISTORY_LUA

        command, script, numkeys, key, *values = args
        assert (command, script, numkeys) == ("EVAL", REPLACE_HISTORY_LUA, 1), args
        return self._replace_list(key, values)

    # sorted sets
    def zadd(self, key: bytes, mapping: dict[bytes, float]) -> int:
        self.zsets.setdefault(key, {}).update(mapping)
        return len(mapping)

    def zrangebyscore(self, key: bytes, low: float | str, high: float | str) -> list[bytes]:
        lo = float(low) if low != "-inf" else float("-inf")
        hi = float(high) if high != "+inf" else float("inf")
        items = self.zsets.get(key, {})
        return [m for m, s in sorted(items.items(), key=lambda kv: kv[1]) if lo <= s <= hi]

    def zremrangebyscore(self, key: bytes, low: str, high: float) -> int:
        drop = [m for m, s in self.zsets.get(key, {}).items() if s <= high]
        for m in drop:
            del self.zsets[key][m]
        return len(drop)

    # one stream with consumer groups
    def xadd(self, name: bytes, fields: dict[bytes, bytes], **_: Any) -> bytes:
        eid = f"{len(self.stream) + 1}-0".encode()
        self.stream.append((eid, fields))
        return eid

    def xgroup_create(self, name: bytes, group: str, id: str = "$", mkstream: bool = False) -> bool:
        if group in self.groups:
            import redis

            raise redis.ResponseError("BUSYGROUP Consumer Group name already exists")
        self.groups[group] = {"next": 0 if id == "0" else len(self.stream), "pending": {}}
        return True

    def xreadgroup(
        self, group: str, consumer: str, streams: dict[bytes, str], count: int, block: int
    ) -> list[Any]:
        g = self.groups[group]
        entries = self.stream[g["next"] : g["next"] + count]
        g["next"] += len(entries)
        for eid, _ in entries:
            g["pending"][eid] = (consumer, self.clock())
        return [[next(iter(streams)), entries]] if entries else []

    def xautoclaim(
        self,
        name: bytes,
        group: str,
        consumer: str,
        min_idle_time: int,
        start_id: Any,
        count: int,
    ) -> list[Any]:
        g = self.groups[group]
        now = self.clock()
        stale = [eid for eid, (_, t) in g["pending"].items() if (now - t) * 1000 >= min_idle_time][
            :count
        ]
        for eid in stale:
            g["pending"][eid] = (consumer, now)
        by_id = dict(self.stream)
        return [b"0-0", [(eid, by_id[eid]) for eid in stale], []]

    def xack(self, name: bytes, group: str, *ids: bytes) -> int:
        for eid in ids:
            self.groups[group]["pending"].pop(eid, None)
        self.acked.extend(ids)
        return len(ids)

    def close(self) -> None:
        pass
