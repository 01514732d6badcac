"""User vectors in Redis: loading, pruning and the server's reads.

The key formats and the value encoding are shared with training and live in
``keyspace.user_vectors`` (spec in docs/redis.md, pinned by tests/unit/test_keyspace.py)::

    recall:uv:<model_version>:<user_id>      value: dim × little-endian float32 (4·dim bytes)
    recall:uvmeta:<model_version>            value: JSON {"dim", "dtype", "count", "loaded_at"}

The model version in every key means a new model's vectors load beside the old ones while
the old ones serve, and a server only ever reads vectors of its index's model. The meta key
is written last, so its presence means the load for that version completed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keyspace import user_vectors as keys
from keyspace.connection import (
    REDIS_ERRORS,
    AsyncRedis,
    RedisSecurity,
    SyncRedis,
    is_cluster,
    make_client,
)
from keyspace.histories import decode_items, history_key
from keyspace.user_vectors import (
    KEY_PREFIX,
    VALUE_DTYPE,
    MalformedValue,
    encode_vector,
    meta_key,
    user_vector_key,
)
from serving.errors import BackendUnavailable, CorruptUserVector
from serving.model_artifact import ModelArtifact

__all__ = [
    "KEY_PREFIX",
    "VALUE_DTYPE",
    "UserState",
    "UserVectorStore",
    "decode_vector",
    "delete_user_vectors",
    "encode_vector",
    "load_count",
    "load_user_vectors",
    "loaded_model_versions",
    "meta_key",
    "user_vector_key",
    "vectors_load_problem",
]


def decode_vector(raw: bytes, dim: int) -> np.ndarray:
    """``keyspace.user_vectors.decode_vector``, raising CorruptUserVector (→ DATA_LOSS)."""
    try:
        return keys.decode_vector(raw, dim)
    except MalformedValue as exc:
        raise CorruptUserVector(str(exc)) from exc


@dataclass(frozen=True)
class UserState:
    """What one request needs of a user: the vector ([dim] float32, None when the serving
    model has none) and the history (item ids, most recent first; empty unless asked for).
    ``error`` is set (and ``vector`` None) when the stored vector is corrupt: it fails this
    user's request only."""

    vector: np.ndarray | None
    history: list[str]
    error: CorruptUserVector | None = None


ProgressCallback = Callable[[int, int], None]
"""Called with (users written so far, total users)."""


def load_user_vectors(
    model: ModelArtifact,
    client: SyncRedis,
    *,
    batch_size: int = 2000,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Write every user vector of ``model`` to Redis in non-transactional pipelines, then
    the meta key. Idempotent: re-running overwrites the same keys. Returns the user count.

    On a Redis Cluster each pipeline of ``batch_size`` SETs is split by node (redis-py's
    ClusterPipeline: one round trip per node that owns some of the batch's slots).

    Raises:
        BackendUnavailable: Redis cannot be reached or rejects the writes.
    """
    version = model.model_version
    user_ids = model.user_ids()
    vectors = model.user_vectors()
    if len(user_ids) != len(vectors):
        raise ValueError(f"{model.path}: {len(user_ids)} user ids but {len(vectors)} vectors")
    try:
        for start in range(0, len(user_ids), batch_size):
            pipe = client.pipeline(transaction=False)
            for user_id, vector in zip(
                user_ids[start : start + batch_size],
                vectors[start : start + batch_size],
                strict=True,
            ):
                pipe.set(user_vector_key(version, user_id), encode_vector(vector))
            pipe.execute()
            if on_progress:
                on_progress(min(start + batch_size, len(user_ids)), len(user_ids))
        meta = {
            "dim": model.embedding_dim,
            "dtype": "float32",
            "count": len(user_ids),
            "loaded_at": time.time(),
        }
        client.set(meta_key(version), json.dumps(meta))
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(f"writing user vectors to Redis failed: {exc}") from exc
    return len(user_ids)


def loaded_model_versions(client: SyncRedis) -> list[str]:
    """Model versions whose user-vector load completed (their meta key exists), sorted.
    (On a cluster SCAN visits every primary.)"""
    prefix = meta_key("")
    return sorted(
        key[len(prefix) :].decode() for key in client.scan_iter(prefix + b"*", count=1000)
    )


def load_count(meta_raw: bytes | str) -> int | None:
    """The user count a model's meta value (``recall:uvmeta:<version>``, present) records,
    or None when it records none.

    Raises:
        MalformedValue: not a JSON object, or a ``count`` that is not an integer.
    """
    try:
        meta = json.loads(meta_raw)
    except ValueError:
        raise MalformedValue(f"{meta_raw[:80]!r} (not the documented JSON)") from None
    if not isinstance(meta, dict):
        raise MalformedValue(f"{meta_raw[:80]!r} (not a JSON object)")
    if "count" not in meta:
        return None
    count = meta["count"]
    if not isinstance(count, int) or isinstance(count, bool):
        raise MalformedValue(f"count {count!r} is not an integer")
    return count


def vectors_load_problem(meta_raw: bytes | str | None, expected_count: int) -> str | None:
    """What is wrong with a model's user-vector load, judged by its meta key's raw value
    (``meta_raw``; None when the key is absent) against the model's user count, or None
    when the load completed.

    A count at or above ``expected_count`` passes: the same rule as the server's vector
    repair (``serving.vector_repair.assess``), so a load the repair calls complete is never
    refused here (and one it would repair is). A meta value without ``count`` passes on
    its presence alone (the key is written last, after every vector); the repair, which
    can rewrite it, reloads such a load to record the count.
    """
    if meta_raw is None:
        return "no completed load (the meta key is absent: never loaded, pruned or flushed)"
    try:
        count = load_count(meta_raw)
    except MalformedValue as exc:
        return f"an unreadable meta value: {exc}"
    if count is not None and count < expected_count:
        return f"a load of {count} users, but the model has {expected_count}"
    return None


def delete_user_vectors(client: SyncRedis, model_version: str, batch_size: int = 1000) -> int:
    """Remove every user vector of ``model_version``; returns how many keys were removed.

    The meta key goes first, so a version being deleted no longer counts as loaded; keys
    are found with SCAN (never KEYS) and removed with UNLINK (freed off the main thread).
    On a cluster SCAN visits every primary and a multi-key UNLINK is split by slot.
    """
    if not model_version or ":" in model_version or "*" in model_version:
        raise ValueError(f"refusing to delete vectors of model version {model_version!r}")
    try:
        client.unlink(meta_key(model_version))
        removed = 0
        pattern = user_vector_key(model_version, "*")
        batch: list[bytes] = []
        for key in client.scan_iter(pattern, count=batch_size):
            batch.append(key)
            if len(batch) == batch_size:
                removed += int(client.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(client.unlink(*batch))
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(f"deleting user vectors from Redis failed: {exc}") from exc
    return removed


class UserVectorStore:
    """Async reads of user vectors for one server (shares one connection pool).

    ``multi_key_reads``: read a batch's vectors with one MGET (cheaper to send and parse
    than a GET per user: measured ~2x for 32 keys). Off, and always on a Redis Cluster
    client (the keys of one batch live in different hash slots, and a cluster pipeline
    refuses MGET), each vector is a GET of the same non-transactional pipeline; a cluster
    pipeline sends each node its GETs in one round trip, to all nodes concurrently."""

    def __init__(self, client: AsyncRedis, *, multi_key_reads: bool = True) -> None:
        self._client = client
        self.multi_key_reads = multi_key_reads and not is_cluster(client)

    @classmethod
    def from_url(
        cls,
        url: str,
        timeout_s: float = 0.5,
        health_check_interval_s: float = 10.0,
        *,
        multi_key_reads: bool = True,
        security: RedisSecurity | None = None,
    ) -> UserVectorStore:
        """A client whose pooled connections survive a Redis restart: a command that fails
        with a connection error (a connection the restarted server closed) is retried once
        on a fresh connection, and a connection idle for ``health_check_interval_s`` is
        PINGed before reuse. Timeouts are not retried: they would double the time a hanging
        Redis costs (the circuit breaker in ``serving.recall_engine`` handles those); on a
        Redis Cluster URL the one retry also follows a failover (the slot map is reloaded
        first), and covers a timeout too (redis-py's cluster client retries both).
        ``security``: password/TLS options (``keyspace.connection``; None: from env)."""
        return cls(
            make_client(
                url,
                security,
                asyncio=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=math.ceil(health_check_interval_s),
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            ),
            multi_key_reads=multi_key_reads,
        )

    @property
    def client(self) -> AsyncRedis:
        """The shared async client (the event writer uses the same connection pool)."""
        return self._client

    async def get_many(
        self, model_version: str, user_ids: Sequence[str], dim: int
    ) -> list[np.ndarray | None]:
        """One vector ([dim] float32) or None per user id, in order, in one round trip.
        Raises CorruptUserVector for the first corrupt one."""
        states = await self.read_users(model_version, user_ids, dim, [False] * len(user_ids))
        for state in states:
            if state.error is not None:
                raise state.error
        return [s.vector for s in states]

    async def read_users(
        self,
        model_version: str,
        user_ids: Sequence[str],
        dim: int,
        with_history: Sequence[bool],
    ) -> list[UserState]:
        """Vector and (where ``with_history[i]``) history of each user, in order, in one
        round trip: the vector keys (one MGET, or a GET each without ``multi_key_reads``)
        and LRANGE 0 -1 of the histories asked for, in one non-transactional pipeline.
        """
        if not user_ids:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            keys = [user_vector_key(model_version, u) for u in user_ids]
            if self.multi_key_reads:
                pipe.mget(keys)
            else:
                for key in keys:
                    pipe.get(key)
            for user_id, history in zip(user_ids, with_history, strict=True):
                if history:
                    pipe.lrange(history_key(user_id), 0, -1)
            replies = await pipe.execute()
        except (redis.TimeoutError, TimeoutError) as exc:
            raise BackendUnavailable(f"Redis timed out: {exc}", reason="redis_timeout") from exc
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        if self.multi_key_reads:
            vectors, histories = replies[0], iter(replies[1:])
        else:
            vectors, histories = replies[: len(keys)], iter(replies[len(keys) :])
        states = []
        for raw, history in zip(vectors, with_history, strict=True):
            items = decode_items(next(histories)) if history else []
            if raw is None:
                states.append(UserState(None, items))
                continue
            try:
                states.append(UserState(decode_vector(raw, dim), items))
            except CorruptUserVector as exc:
                states.append(UserState(None, items, exc))
        return states

    async def meta(self, model_version: str) -> dict[str, object] | None:
        """The load record of ``model_version`` (dim, dtype, count, loaded_at), or None."""
        try:
            raw = await self._client.get(meta_key(model_version))
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        return None if raw is None else dict(json.loads(raw))

    async def ping(self) -> tuple[bool, str]:
        """(healthy, detail) without raising."""
        try:
            await self._client.ping()
            return True, ""
        except REDIS_ERRORS as exc:
            return False, str(exc)

    async def close(self) -> None:
        await self._client.aclose()
