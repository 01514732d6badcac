"""Embed the items added since training (``recall:items:new``) with a model's item tower
and write their vectors under that model's version (``recall:items:fresh:<model>``; keys:
``keyspace.catalogue_items``, docs/redis.md).

Two callers: the refresher worker, for the serving model, within a poll of an upsert
(``FreshItemWatcher``); and the index DAGs before an index build (``embed_fresh_items``),
for the model being indexed, so that the build folds the fresh items in
(``serving.tasks.build_index`` reads the vectors this writes).

Only items whose stored vector is missing or was embedded from an older record (its
``rev`` differs) are embedded; after a write ``recall:items:rev`` is bumped so servers
re-read. Every command names one key (Redis Cluster safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from artifacts.errors import ArtifactError
from artifacts.store import ArtifactStore, open_uri
from keyspace.catalogue_items import (
    ITEMS_REV,
    NEW_ITEMS,
    decode_new_item,
    encode_fresh_vector,
    fresh_vector_rev,
    fresh_vectors_key,
)
from keyspace.connection import REDIS_ERRORS, SyncRedis, make_client
from keyspace.user_vectors import MalformedValue

log = logging.getLogger(__name__)

BATCH = 512


class ItemVectorEncoder(Protocol):
    """What this module needs of ``training.item_encoder.ItemEncoder``."""

    model_version: str

    def encode(self, rows: Any) -> np.ndarray:
        """[B, dim] float32 for B rows of feature columns."""
        ...


ItemEncoderLoader = Callable[[Path], ItemVectorEncoder]


def load_item_encoder(model_dir: Path) -> ItemVectorEncoder:
    """Verify the model artifact's checksums, then load its item tower (imports TF).

    Raises:
        ArtifactError: a checksum differs, or the model has no exported item tower.
    """
    from artifacts.checksums import MANIFEST_NAME, verify_files
    from training.export import ModelManifest
    from training.item_encoder import ItemEncoder, ItemTowerMissing

    manifest = ModelManifest.model_validate_json((model_dir / MANIFEST_NAME).read_text())
    verify_files(model_dir, manifest.files)
    try:
        return ItemEncoder.load(model_dir)
    except ItemTowerMissing as exc:
        raise ArtifactError(str(exc)) from exc


def embed_pending(client: SyncRedis, encoder: ItemVectorEncoder) -> int:
    """Embed every added item whose vector under ``encoder.model_version`` is missing or
    stale; returns how many vectors were written."""
    records: dict[bytes, bytes] = client.hgetall(NEW_ITEMS)  # type: ignore[assignment]
    if not records:
        return 0
    key = fresh_vectors_key(encoder.model_version)
    stored: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    todo = []
    for raw_id, raw in records.items():
        item_id = raw_id.decode()
        try:
            item = decode_new_item(item_id, raw)
        except MalformedValue as exc:
            log.error("skipping %s", exc)
            continue
        have = stored.get(raw_id)
        try:
            fresh = have is not None and fresh_vector_rev(have) == item.rev
        except MalformedValue:
            fresh = False
        if not fresh:
            todo.append(item)
    written = 0
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        vectors = np.asarray(encoder.encode([i.features for i in batch]), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(batch):
            raise ValueError(f"item encoder returned shape {vectors.shape} for {len(batch)} items")
        mapping = {
            i.item_id.encode(): encode_fresh_vector(i.rev, v)
            for i, v in zip(batch, vectors, strict=True)
        }
        client.hset(key, mapping=mapping)  # type: ignore[arg-type]
        written += len(batch)
    if written:
        client.incr(ITEMS_REV)
        log.info("embedded %d fresh item(s) with model %s", written, encoder.model_version)
    return written


class FreshItemWatcher:
    """The refresher's side job: embed added items with the serving model's item tower
    whenever ``recall:items:rev`` or the serving model changes (one GET per check
    otherwise). A model without an exported item tower is reported once and skipped."""

    def __init__(
        self,
        client: SyncRedis,
        store: ArtifactStore,
        model_version: Callable[[], str],
        loader: ItemEncoderLoader = load_item_encoder,
    ) -> None:
        self.client = client
        self.store = store
        self.model_version = model_version
        self.loader = loader
        self._encoder: ItemVectorEncoder | None = None
        self._unusable: str | None = None  # a model whose item tower cannot be loaded
        self._seen: tuple[object, str] | None = None

    def encoder(self, version: str) -> ItemVectorEncoder | None:
        if self._encoder is not None and self._encoder.model_version == version:
            return self._encoder
        if self._unusable == version:
            return None
        try:
            self._encoder = self.loader(self.store.local_dir("models", version))
        except ArtifactError as exc:
            log.warning("fresh items cannot be embedded with model %s: %s", version, exc)
            self._unusable = version
            return None
        return self._encoder

    def check(self) -> int:
        """Embed what changed since the last check; returns vectors written.

        Raises:
            redis.RedisError, ArtifactError: the refresher logs and retries them.
        """
        version = self.model_version()
        rev = self.client.get(ITEMS_REV)
        if (rev, version) == self._seen:
            return 0
        encoder = self.encoder(version)
        written = 0
        if encoder is not None:
            try:
                written = embed_pending(self.client, encoder)
            except REDIS_ERRORS:
                raise
            except Exception:
                # A record the tower cannot take must not stop the user-vector refresh;
                # it is tried again when the catalogue next changes.
                log.exception("embedding fresh items with model %s failed", version)
        # Our own write bumped the rev: the next check reads once more and finds nothing.
        self._seen = (rev, version)
        return written


def embed_fresh_items(
    model_uri: str, redis_url: str, loader: ItemEncoderLoader = load_item_encoder
) -> int:
    """The index DAGs' task before a build: embed every added item with the model at
    ``model_uri``, so ``serving.tasks.build_index`` folds them into its index. A model
    without an item tower embeds nothing (logged). Returns vectors written."""
    client = make_client(redis_url, socket_timeout=30)
    try:
        if not client.hlen(NEW_ITEMS):
            return 0
        try:
            encoder = loader(open_uri(model_uri))
        except ArtifactError as exc:
            log.warning("fresh items not embedded for %s: %s", model_uri, exc)
            return 0
        return embed_pending(client, encoder)
    finally:
        client.close()
