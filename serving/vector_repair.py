"""Self-repairing user vectors: a recall server notices that the serving model's vectors are
missing or incomplete in Redis and reloads them from the model artifact.

Why: Redis may come back from a crash without the newest writes (at most a second of them
with AOF ``appendfsync everysec``; everything with no persistence), be flushed, or lose
keys some other way. Without a repair every user of the lost vectors silently gets the
popular-items fallback until the next pipeline run.

Each check (``VectorRepairer.repair_once``, every ``RECALL_VECTOR_REPAIR_INTERVAL_S``):

1. ``assess``: the meta key ``recall:uvmeta:<model_version>`` must exist, its ``count`` must
   reach the model's user count (manifest ``user_count``, else ``user_ids.json``), and a
   random sample of the model's users (``sample_size``) must all have their vector key.
2. If not: take the lock ``recall:uvrepair:<model_version>`` (``SET NX PX`` with a random
   token; renewed after each batch, released only by its owner through a compare-and-delete
   script), assess again (another server may just have finished), then write every user
   vector of the model artifact's ``user_vectors.npy`` with ``SET NX`` (only keys that are
   missing), and the meta key last. Another server holding the lock: skip; it re-checks
   next round.

``SET NX`` is deliberate: a vector that survived was written either by the bulk load
(same value) or by the refresher (fresher than the artifact's), so overwriting it could
only lose a fresher vector. After a crash the refresher's writes of the last second may be
gone with everything else; those users get their training-time vector back now and a
fresh one on their next interaction or the hourly refresh. Re-running a repair is
harmless (idempotent).

Redis Cluster: every command and script names one key (the lock is one key; the meta key
and the vectors need not share a slot: nothing reads or writes them together), and the
write pipelines split by node, so the same code runs on a cluster client.

No TensorFlow here: the vectors come from the artifact's ``user_vectors.npy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from artifacts.errors import ArtifactError
from artifacts.store import ArtifactStore
from keyspace.connection import (
    REDIS_ERRORS,
    RedisSecurity,
    SyncRedis,
    make_client,
    parse_redis_url,
    redis_kwargs,
)
from keyspace.user_vectors import (
    MalformedValue,
    encode_vector,
    meta_key,
    repair_lock_key,
    user_vector_key,
)
from serving.metrics import USER_VECTOR_REPAIRS, USER_VECTORS_COMPLETE, USER_VECTORS_REPAIRED
from serving.model_artifact import ModelArtifact, open_model_artifact
from serving.user_vectors import load_count

log = logging.getLogger(__name__)

MODEL_KIND = "models"
SAMPLE_POOL = 1024
"""Users of a model kept in memory for the key-presence sample (not all: models may have
millions of users)."""


class VectorHealth(StrEnum):
    """What one check found for the serving model's vectors in Redis."""

    COMPLETE = "complete"
    META_MISSING = "meta_missing"  # no completed load (Redis lost it, flushed, never loaded)
    META_UNREADABLE = "meta_unreadable"  # the meta value is not the documented JSON
    COUNT_SHORT = "count_short"  # the meta key records fewer users than the model has
    VECTORS_MISSING = "vectors_missing"  # sampled users have no vector key


class RepairResult(StrEnum):
    HEALTHY = "healthy"  # nothing to do
    REPAIRED = "repaired"  # this server reloaded the vectors
    BUSY = "busy"  # another server holds the lock (it is repairing)
    FAILED = "failed"  # Redis or the artifact could not be read/written; retried next round


def assess(
    meta_raw: bytes | None, expected_count: int, sample_present: Sequence[bool]
) -> VectorHealth:
    """The repair decision, from what Redis holds: the meta key's raw value (None if
    absent), the model's user count, and whether each sampled user's vector key exists."""
    if meta_raw is None:
        return VectorHealth.META_MISSING
    try:
        count = load_count(meta_raw)
    except MalformedValue:
        return VectorHealth.META_UNREADABLE
    if count is None:
        return VectorHealth.META_UNREADABLE  # a load without its count: rewrite it
    if count < expected_count:
        return VectorHealth.COUNT_SHORT
    if not all(sample_present):
        return VectorHealth.VECTORS_MISSING
    return VectorHealth.COMPLETE


@dataclass(frozen=True)
class RepairOutcome:
    """What one ``repair_once`` did. ``written``: vector keys this server created."""

    model_version: str
    result: RepairResult
    health: VectorHealth | None = None
    written: int = 0
    seconds: float = 0.0
    detail: str = ""


class LockLost(RuntimeError):
    """The repair lock expired or was taken over while this server was writing."""


REPAIR_FAILURES: tuple[type[Exception], ...] = (*REDIS_ERRORS, ArtifactError, ValueError, LockLost)
"""What ends one repair round as ``RepairResult.FAILED`` (retried next round)."""


# Compare-and-delete / compare-and-extend: only the holder of the token may touch the lock.
_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class RepairLock:
    """A Redis lock on one key: ``SET key token NX PX ttl``; renewed and released only by
    the holder of ``token`` (one-key scripts, so it works on Redis Cluster too)."""

    def __init__(self, client: SyncRedis, key: bytes, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = secrets.token_hex(16).encode()
        self._release = client.register_script(_RELEASE_LUA)
        self._renew = client.register_script(_RENEW_LUA)

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> bool:
        return bool(self._release(keys=[self.key], args=[self.token]))


@dataclass(frozen=True)
class _ModelUsers:
    expected_count: int
    sample_pool: list[str]


def write_missing_vectors(
    model: ModelArtifact,
    client: SyncRedis,
    *,
    batch_size: int = 2000,
    after_batch: Callable[[], None] | None = None,
) -> int:
    """Write each user vector of ``model`` whose key is missing (``SET NX``, pipelines of
    ``batch_size``), then the meta key. Returns how many keys were created.
    ``after_batch`` runs after each pipeline (the lock renewal; it may raise to stop)."""
    version = model.model_version
    user_ids = model.user_ids()
    vectors = model.user_vectors()
    if len(user_ids) != len(vectors):
        raise ValueError(f"{model.path}: {len(user_ids)} user ids but {len(vectors)} vectors")
    written = 0
    for start in range(0, len(user_ids), batch_size):
        pipe = client.pipeline(transaction=False)
        for user_id, vector in zip(
            user_ids[start : start + batch_size], vectors[start : start + batch_size], strict=True
        ):
            pipe.set(user_vector_key(version, user_id), encode_vector(vector), nx=True)
        written += sum(1 for created in pipe.execute() if created)
        if after_batch is not None:
            after_batch()
    meta = {"dim": model.embedding_dim, "dtype": "float32", "count": len(user_ids)}
    client.set(meta_key(version), json.dumps({**meta, "loaded_at": time.time()}))
    return written


class VectorRepairer:
    """Checks and repairs the user vectors of the model a server serves.

    ``repair_once`` is blocking (Redis round trips, reading the artifact); the server runs
    ``run`` as an asyncio task, which calls it in a worker thread every ``interval_s``.

    ``client``, or ``connect`` to make it on first use (a blocking cluster client connects
    when made, and a server must start while Redis is down).
    """

    def __init__(
        self,
        store: ArtifactStore,
        client: SyncRedis | None = None,
        *,
        connect: Callable[[], SyncRedis] | None = None,
        sample_size: int = 32,
        lock_ttl_s: float = 30.0,
        batch_size: int = 2000,
        seed: int | None = None,
    ) -> None:
        if (client is None) == (connect is None):
            raise ValueError("give VectorRepairer a client or a connect function, not both")
        self.store = store
        self._client = client
        self._connect = connect
        self.sample_size = sample_size
        self.lock_ttl_s = lock_ttl_s
        self.batch_size = batch_size
        self._rng = random.Random(seed)
        self._users: dict[str, _ModelUsers] = {}
        self._stopping = threading.Event()
        self._last_problem: str | None = None

    @classmethod
    def from_url(
        cls,
        store: ArtifactStore,
        redis_url: str,
        *,
        timeout_s: float = 10.0,
        security: RedisSecurity | None = None,
    ) -> VectorRepairer:
        """A repairer with its own blocking Redis client (it works in a worker thread, apart
        from the server's async connection pool); ``security`` as in ``keyspace.connection``.
        A cluster client is made on the first check (see the class docstring); the URL
        and the security settings are checked now either way.

        Raises:
            RedisConnectionConfigError: the URL or the security settings are wrong.
        """

        def connect() -> SyncRedis:
            return make_client(
                redis_url,
                security,
                socket_timeout=timeout_s,
                socket_connect_timeout=min(timeout_s, 2.0),
            )

        if parse_redis_url(redis_url).cluster:
            redis_kwargs(redis_url, security)
            return cls(store, connect=connect)
        return cls(store, connect())

    @property
    def client(self) -> SyncRedis:
        """The Redis client (made now if ``connect`` was given and this is the first use).

        Raises:
            redis.ConnectionError: a cluster client could not reach any node.
        """
        if self._client is None:
            assert self._connect is not None
            self._client = self._connect()
        return self._client

    def _model(self, model_version: str, *, verify: bool) -> ModelArtifact:
        return open_model_artifact(self.store.local_dir(MODEL_KIND, model_version), verify=verify)

    def _model_users(self, model_version: str) -> _ModelUsers:
        users = self._users.get(model_version)
        if users is None:
            model = self._model(model_version, verify=False)
            ids = model.user_ids()
            pool = ids if len(ids) <= SAMPLE_POOL else self._rng.sample(ids, SAMPLE_POOL)
            users = _ModelUsers(model.user_count(), pool)
            self._users = {model_version: users}  # only the serving model's is needed
        return users

    def check(self, model_version: str) -> VectorHealth:
        """One look at Redis (a GET and a pipeline of EXISTS for the sample)."""
        users = self._model_users(model_version)
        sample = self._rng.sample(users.sample_pool, min(self.sample_size, len(users.sample_pool)))
        pipe = self.client.pipeline(transaction=False)
        pipe.get(meta_key(model_version))
        for user_id in sample:
            pipe.exists(user_vector_key(model_version, user_id))
        meta_raw, *present = pipe.execute()
        return assess(meta_raw, users.expected_count, [bool(p) for p in present])

    def repair_once(self, model_version: str) -> RepairOutcome:
        """Check, and repair if needed (under the lock). Never raises for Redis or artifact
        errors: they come back as ``RepairResult.FAILED`` with the reason."""
        began = time.monotonic()
        health: VectorHealth | None = None
        try:
            health = self.check(model_version)
            USER_VECTORS_COMPLETE.set(1 if health is VectorHealth.COMPLETE else 0)
            if health is VectorHealth.COMPLETE:
                outcome = RepairOutcome(model_version, RepairResult.HEALTHY, health)
            else:
                outcome = self._repair_locked(model_version, health, began)
        except REPAIR_FAILURES as exc:
            outcome = RepairOutcome(
                model_version,
                RepairResult.FAILED,
                health,
                seconds=time.monotonic() - began,
                detail=f"{type(exc).__name__}: {exc}",
            )
        self._record(outcome)
        return outcome

    def _repair_locked(
        self, model_version: str, health: VectorHealth, began: float
    ) -> RepairOutcome:
        lock = RepairLock(self.client, repair_lock_key(model_version), self.lock_ttl_s)
        if not lock.acquire():
            return RepairOutcome(model_version, RepairResult.BUSY, health)
        try:
            # Another server may have finished a repair between our check and the lock.
            health = self.check(model_version)
            if health is VectorHealth.COMPLETE:
                USER_VECTORS_COMPLETE.set(1)
                return RepairOutcome(model_version, RepairResult.HEALTHY, health)
            log.warning(
                "user vectors of model %s incomplete in Redis (%s): reloading the missing "
                "ones from the model artifact",
                model_version,
                health.value,
            )
            model = self._model(model_version, verify=True)

            def renew() -> None:
                if self._stopping.is_set():
                    raise LockLost("repair stopped: the server is shutting down")
                if not lock.renew():
                    raise LockLost(f"lost the repair lock of model {model_version}")

            written = write_missing_vectors(
                model, self.client, batch_size=self.batch_size, after_batch=renew
            )
            USER_VECTORS_COMPLETE.set(1)
            return RepairOutcome(
                model_version,
                RepairResult.REPAIRED,
                health,
                written=written,
                seconds=time.monotonic() - began,
            )
        finally:
            # On a Redis error the lock expires after lock_ttl_s by itself.
            with contextlib.suppress(*REDIS_ERRORS):
                lock.release()

    def _record(self, outcome: RepairOutcome) -> None:
        """Metric and log line; a problem that repeats every round is logged once."""
        if outcome.result is not RepairResult.HEALTHY:
            USER_VECTOR_REPAIRS.labels(outcome.result.value).inc()
        if outcome.result is RepairResult.REPAIRED:
            USER_VECTORS_REPAIRED.inc(outcome.written)
            log.warning(
                "repaired user vectors of model %s (%s): wrote %d missing vector(s) in %.1f s",
                outcome.model_version,
                outcome.health.value if outcome.health else "?",
                outcome.written,
                outcome.seconds,
            )
        problem = outcome.detail if outcome.result is RepairResult.FAILED else None
        if problem and problem != self._last_problem:
            log.error(
                "user-vector repair of model %s failed: %s (retrying every round)",
                outcome.model_version,
                problem,
            )
        elif outcome.result is RepairResult.BUSY:
            log.info(
                "user vectors of model %s are being repaired by another server",
                outcome.model_version,
            )
        self._last_problem = problem

    async def run(self, serving_model: Callable[[], str | None], interval_s: float) -> None:
        """Forever: check the model ``serving_model()`` names (skipped while None), then
        sleep ``interval_s``. Cancel the task to stop it (see ``close``)."""
        while True:
            model_version = serving_model()
            if model_version:
                try:
                    await asyncio.to_thread(self.repair_once, model_version)
                except Exception:
                    log.exception("user-vector repair failed unexpectedly; retrying")
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        """Make a repair in progress stop at its next batch, and close the Redis client."""
        self._stopping.set()
        if self._client is not None:
            self._client.close()
