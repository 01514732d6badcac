"""The refresher: re-encode users whose history changed and rewrite their vectors in Redis.

The recall server appends each user's interactions to ``recall:hist:<user_id>`` and adds
one entry per user to the ``recall:events`` stream (``keyspace.events``). A refresher
process reads that stream with a consumer group, collects the distinct users of a batch,
reads their histories (LRANGE), runs the model's user tower on them and writes their
vectors under the **serving model's** version (``recall:uv:<model_version>:<user_id>``,
the bulk loader's encoding), then acknowledges the entries. Entries are acknowledged only
after the vectors are written; those a crashed refresher left pending are reclaimed by
another (or the restarted) one with XAUTOCLAIM after ``claim_idle_ms``, so nothing is lost.

The serving model is the model of the store's LATEST index: that is whose vectors the
servers read. It is checked every ``model_check_interval_s`` and the encoder reloaded
when it changes. The hourly DAG ``recall_refresh_vectors`` calls ``refresh_touched_users``,
which re-encodes everyone in the ``recall:touched`` set since its previous run, covering
anything the worker missed (it was down, or the stream was trimmed).

Redis Cluster (a ``redis+cluster://`` URL, ``keyspace.connection``): every command names
one key (the stream and its consumer group live in the stream's slot), and the history
reads and vector writes are non-transactional pipelines, which a cluster client splits by
node.

Fresh items: between batches the worker also embeds items added with
``RecallAdmin.UpsertItems`` with the serving model's item tower
(``training.fresh_items.FreshItemWatcher``), so they reach answers within a batch wait
(``refresh_block_ms``) plus the servers' poll.

TensorFlow is only imported by the default encoder loaders (``training.user_encoder``,
``training.item_encoder``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from artifacts.errors import ArtifactError
from artifacts.lineage import index_lineage
from artifacts.store import ArtifactStore
from keyspace.connection import REDIS_ERRORS, SyncRedis, make_client
from keyspace.events import (
    EVENTS_STREAM,
    REFRESH_WATERMARK,
    REFRESHER_GROUP,
    TOUCHED_USERS,
    decode_event,
)
from keyspace.histories import decode_items, history_key
from keyspace.user_vectors import MalformedValue, encode_vector, user_vector_key
from recall_settings import defaults
from training.fresh_items import FreshItemWatcher, ItemEncoderLoader, load_item_encoder

log = logging.getLogger(__name__)

MODEL_KIND = "models"
RETRIED_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, ArtifactError)
"""What ``Refresher.run`` logs and retries with backoff (the batch stays pending)."""


class Encoder(Protocol):
    """What the refresher needs of ``training.user_encoder.UserEncoder``."""

    model_version: str
    history_length: int

    def encode(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        """[B, dim] float32 unit-norm; histories[i] is user i's items, most recent first."""
        ...


EncoderLoader = Callable[[Path], Encoder]


def load_user_encoder(model_dir: Path) -> Encoder:
    """Verify the model artifact's checksums, then load its user tower (imports TF)."""
    from artifacts.checksums import MANIFEST_NAME, verify_files
    from training.export import ModelManifest
    from training.user_encoder import UserEncoder

    manifest = ModelManifest.model_validate_json((model_dir / MANIFEST_NAME).read_text())
    verify_files(model_dir, manifest.files)
    return UserEncoder.load(model_dir)


class RefresherSettings(BaseSettings):
    """The refresher's settings, from ``RECALL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RECALL_", extra="forbid")

    redis_url: str = Field(
        default_factory=defaults.default_redis_url,
        description="Redis holding histories, the event stream and user vectors.",
    )
    artifact_root: str = Field(
        default_factory=lambda: defaults.ARTIFACT_ROOT.default_in(),
        description="Artifact store whose LATEST index names the serving model.",
    )
    refresh_batch: int = Field(256, ge=1, description="Most stream entries per batch.")
    refresh_block_ms: int = Field(
        500, ge=1, description="How long one XREADGROUP waits for new entries."
    )
    refresh_claim_idle_ms: int = Field(
        30_000, ge=1, description="Reclaim entries another consumer left pending this long."
    )
    model_check_interval_s: float = Field(
        5.0, ge=0, description="How often to check whether the LATEST index's model changed."
    )


class ServingModel:
    """The user encoder of the model the store's LATEST index was built from."""

    def __init__(
        self,
        store: ArtifactStore,
        loader: EncoderLoader = load_user_encoder,
        check_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.loader = loader
        self.check_interval_s = check_interval_s
        self.clock = clock
        self._encoder: Encoder | None = None
        self._next_check = 0.0

    def encoder(self) -> Encoder:
        """The current encoder, reloaded when the LATEST index names another model.

        Raises:
            ArtifactError: no index published yet, or the model artifact is unusable.
        """
        if self._encoder is not None and self.clock() < self._next_check:
            return self._encoder
        version = index_lineage(self.store).model_version
        if self._encoder is None or self._encoder.model_version != version:
            encoder = self.loader(self.store.local_dir(MODEL_KIND, version))
            if encoder.model_version != version:
                raise ArtifactError(
                    f"models/{version} holds a user tower of model {encoder.model_version}"
                )
            log.info(
                "user encoder of model %s loaded (history length %d)",
                version,
                encoder.history_length,
            )
            self._encoder = encoder
        self._next_check = self.clock() + self.check_interval_s
        return self._encoder


def refresh_users(
    client: SyncRedis, encoder: Encoder, user_ids: Sequence[str], batch_size: int = 512
) -> int:
    """Re-encode ``user_ids`` from their histories and write their vectors under
    ``encoder.model_version``. Users with an empty history are skipped. Returns how many
    vectors were written."""
    written = 0
    for start in range(0, len(user_ids), batch_size):
        users = list(user_ids[start : start + batch_size])
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.lrange(history_key(user), 0, encoder.history_length - 1)
        histories = [decode_items(raw) for raw in pipe.execute()]
        present = [(u, h) for u, h in zip(users, histories, strict=True) if h]
        if not present:
            continue
        vectors = np.asarray(
            encoder.encode([u for u, _ in present], [h for _, h in present]), dtype=np.float32
        )
        if vectors.ndim != 2 or len(vectors) != len(present):
            raise ValueError(f"encoder returned shape {vectors.shape} for {len(present)} users")
        pipe = client.pipeline(transaction=False)
        for (user, _), vector in zip(present, vectors, strict=True):
            pipe.set(user_vector_key(encoder.model_version, user), encode_vector(vector))
        pipe.execute()
        written += len(present)
    return written


@dataclass
class RefresherStats:
    batches: int = 0
    entries: int = 0
    users_written: int = 0
    last_batch_s: float = 0.0


class Refresher:
    """One consumer of the event stream (see the module docstring)."""

    def __init__(
        self,
        client: SyncRedis,
        model: ServingModel,
        consumer: str | None = None,
        *,
        batch_size: int = 256,
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        items: FreshItemWatcher | None = None,
    ) -> None:
        """``items``: also embed added items with the serving model between batches."""
        self.client = client
        self.items = items
        self.model = model
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.stats = RefresherStats()
        self._claim_cursor: bytes | str = "0-0"

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless they exist. A new group starts
        at the stream's first entry, so events recorded before any refresher ran count."""
        try:
            self.client.xgroup_create(EVENTS_STREAM, REFRESHER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim_stale(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply: Any = self.client.xautoclaim(
            EVENTS_STREAM,
            REFRESHER_GROUP,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch_size,
        )
        self._claim_cursor = reply[0]
        return [(eid, fields) for eid, fields in reply[1] if fields]

    def _read_new(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply: Any = self.client.xreadgroup(
            REFRESHER_GROUP,
            self.consumer,
            {EVENTS_STREAM: ">"},
            count=self.batch_size,
            block=self.block_ms,
        )
        return [(eid, fields) for _, entries in reply or [] for eid, fields in entries if fields]

    def poll(self) -> int:
        """Process one batch: stale pending entries first, else new ones (waiting up to
        ``block_ms``). Returns the number of user vectors written.

        Raises:
            redis.RedisError: Redis is unreachable (the batch stays pending).
            ArtifactError: no serving model can be loaded (the batch stays pending).
        """
        entries = self._claim_stale() or self._read_new()
        if not entries:
            return 0
        started = time.monotonic()
        users: dict[str, None] = {}
        for eid, fields in entries:
            try:
                users[decode_event(fields).user_id] = None
            except MalformedValue as exc:
                log.error("skipping stream entry %r: %s", eid, exc)
        written = refresh_users(self.client, self.model.encoder(), list(users))
        self.client.xack(EVENTS_STREAM, REFRESHER_GROUP, *[eid for eid, _ in entries])
        self.stats.batches += 1
        self.stats.entries += len(entries)
        self.stats.users_written += written
        self.stats.last_batch_s = time.monotonic() - started
        log.info(
            "refreshed %d user vector(s) from %d event(s) in %.0f ms",
            written,
            len(entries),
            1000 * self.stats.last_batch_s,
        )
        return written

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; Redis and artifact errors are logged and retried
        with backoff (unacknowledged entries are picked up again)."""
        backoff = 0.1
        group_ready = False
        while not stop.is_set():
            try:
                if not group_ready:
                    self.ensure_group()
                    self.model.encoder()  # load the tower now, not on the first event
                    # Join the group explicitly: a visible sign that this worker is ready.
                    self.client.xgroup_createconsumer(EVENTS_STREAM, REFRESHER_GROUP, self.consumer)
                    group_ready = True
                self.poll()
                if self.items is not None:
                    self.items.check()
                backoff = 0.1
            except RETRIED_ERRORS as exc:
                log.warning("refresher: %s; retrying in %.1f s", exc, backoff)
                # Entries read but not acknowledged are reclaimed from the start.
                self._claim_cursor = "0-0"
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def make_refresher(
    settings: RefresherSettings,
    loader: EncoderLoader = load_user_encoder,
    item_loader: ItemEncoderLoader = load_item_encoder,
) -> Refresher:
    """A Refresher wired from settings (its Redis client waits longer than one block),
    embedding fresh items with the same serving model."""
    client = make_client(settings.redis_url, socket_timeout=settings.refresh_block_ms / 1000 + 10)
    store = ArtifactStore(settings.artifact_root)
    model = ServingModel(store, loader, settings.model_check_interval_s)
    items = FreshItemWatcher(client, store, lambda: model.encoder().model_version, item_loader)
    return Refresher(
        client,
        model,
        batch_size=settings.refresh_batch,
        block_ms=settings.refresh_block_ms,
        claim_idle_ms=settings.refresh_claim_idle_ms,
        items=items,
    )


def refresh_touched_users(
    artifact_root: str,
    redis_url: str,
    *,
    overlap_s: float = 300.0,
    retention_s: float = 7 * 86_400,
    loader: EncoderLoader = load_user_encoder,
    now: float | None = None,
) -> int:
    """Re-encode every user touched since the previous call (the hourly DAG's task).

    Users in ``recall:touched`` with a score ≥ the stored watermark − ``overlap_s`` are
    re-encoded with the serving model; then the watermark moves to ``now`` and entries
    older than ``retention_s`` leave the set (so it stays bounded). The first run covers
    every touched user. Returns the number of vectors written.
    """
    now = time.time() if now is None else now
    client = make_client(redis_url, socket_timeout=30)
    try:
        raw = client.get(REFRESH_WATERMARK)
        since = float(raw) - overlap_s if raw is not None else float("-inf")
        touched: list[bytes] = client.zrangebyscore(TOUCHED_USERS, since, "+inf")  # type: ignore[assignment]
        users = [u.decode() for u in touched]
        written = 0
        if users:
            encoder = ServingModel(ArtifactStore(artifact_root), loader).encoder()
            written = refresh_users(client, encoder, users)
        client.set(REFRESH_WATERMARK, repr(now))
        client.zremrangebyscore(TOUCHED_USERS, "-inf", now - retention_s)
    finally:
        client.close()
    log.info("hourly refresh: %d touched user(s), %d vector(s) written", len(users), written)
    return written
