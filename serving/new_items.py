"""UpsertItems / RemoveItems: check added items against the serving model's item feature
spec and write the catalogue changes to Redis (keys: ``keyspace.catalogue_items``).

The spec is read from the model manifest's ``features.item`` list (written by training:
``column``, ``kind`` and, for ``lsh_buckets``, ``source_columns``), so the server checks
features without TensorFlow. An item must carry every column the item tower reads, and
nothing else (a misspelt column would otherwise be silently ignored and the item embedded
as "features unknown"); a ``bucketized`` column must be a finite number.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from artifacts.checksums import MANIFEST_NAME
from artifacts.store import ArtifactStore
from keyspace.catalogue_items import (
    DENY_SET,
    ITEMS_REV,
    NEW_ITEMS,
    NewItem,
    encode_new_item,
)
from keyspace.connection import REDIS_ERRORS, AsyncRedis
from serving.errors import BackendUnavailable, IndexLoadError, InvalidRequest

ITEM_TOWER_FILE = "item_tower/saved_model.pb"
"""The manifest entry that says a model exported its item tower (training/export.py)."""
MAX_ITEM_ID_BYTES = 512
MAX_FEATURE_BYTES = 65_536
"""Longer feature values are refused (a text column is a title or a description)."""


@dataclass(frozen=True)
class FeatureRule:
    """One column the serving model's item tower reads: its name and how it is encoded
    (``categorical``, ``multi_categorical``, ``bucketized``, ``text_tokens``, or
    ``content`` for a source column of an ``lsh_buckets`` feature)."""

    column: str
    kind: str


def feature_rules(manifest: Mapping[str, object]) -> dict[str, FeatureRule]:
    """column → rule, from a model manifest's ``features.item`` (empty for an ids-only
    model: then items carry no features)."""
    features = manifest.get("features")
    items = features.get("item", []) if isinstance(features, dict) else []
    rules: dict[str, FeatureRule] = {}
    for feature in items:
        kind = str(feature.get("kind", ""))
        if kind == "lsh_buckets":
            for column in feature.get("source_columns") or [feature["column"]]:
                rules.setdefault(str(column), FeatureRule(str(column), "content"))
        else:
            rules[str(feature["column"])] = FeatureRule(str(feature["column"]), kind)
    return rules


def exports_item_tower(manifest: Mapping[str, object]) -> bool:
    """Whether the model artifact lists an exported item tower (models before it do not,
    and nothing could embed an added item with them)."""
    files = manifest.get("files")
    return isinstance(files, list) and any(
        isinstance(f, dict) and f.get("path") == ITEM_TOWER_FILE for f in files
    )


def read_feature_rules(store: ArtifactStore, model_version: str) -> dict[str, FeatureRule]:
    """The item feature rules of ``models/<model_version>`` (reads its manifest only).

    Raises:
        IndexLoadError: the model's manifest cannot be read, or the model has no exported
            item tower (→ FAILED_PRECONDITION: retrain, then add the items).
    """
    try:
        raw = store.fs.cat_file(f"{store.uri('models', model_version)}/{MANIFEST_NAME}")
        manifest = json.loads(raw)
        rules = feature_rules(manifest)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise IndexLoadError(
            f"models/{model_version}: cannot read its item feature spec ({exc})"
        ) from exc
    if not exports_item_tower(manifest):
        raise IndexLoadError(
            f"model {model_version} has no exported item tower (trained before it existed): "
            "added items could not be embedded; serve a newer model, then add them"
        )
    return rules


def _check_id(item_id: str, field: str) -> None:
    if not item_id:
        raise InvalidRequest(f"{field}: item_id is required")
    if len(item_id.encode()) > MAX_ITEM_ID_BYTES:
        raise InvalidRequest(f"{field}: item_id is longer than {MAX_ITEM_ID_BYTES} bytes")


def validate_item(
    item_id: str, features: Mapping[str, str], rules: Mapping[str, FeatureRule], field: str
) -> None:
    """Raises InvalidRequest naming ``field`` (e.g. ``items[3]``), the item and the
    feature column that is missing, unknown or malformed."""
    _check_id(item_id, field)
    where = f"{field} (item {item_id!r})"
    unknown = sorted(set(features) - set(rules))
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown feature {unknown[0]!r}; the serving model reads "
            f"{sorted(rules) or 'no features'}"
        )
    for column, rule in sorted(rules.items()):
        value = features.get(column)
        if value is None or not value.strip():
            raise InvalidRequest(f"{where}: feature {column!r} ({rule.kind}) is missing")
        if len(value.encode()) > MAX_FEATURE_BYTES:
            raise InvalidRequest(
                f"{where}: feature {column!r} is longer than {MAX_FEATURE_BYTES} bytes"
            )
        if rule.kind == "bucketized":
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise InvalidRequest(
                    f"{where}: feature {column!r} (bucketized) must be a finite number, "
                    f"got {value!r}"
                )
        if rule.kind == "multi_categorical" and not any(v for v in value.split("|")):
            raise InvalidRequest(f"{where}: feature {column!r} (multi_categorical) is empty")


def validate_items(
    items: Sequence[tuple[str, Mapping[str, str]]],
    rules: Mapping[str, FeatureRule],
    max_items: int,
) -> None:
    """Check a whole UpsertItems request (count, ids, no repeats, every item's features)."""
    if not items:
        raise InvalidRequest("items: at least one item is required")
    if len(items) > max_items:
        raise InvalidRequest(f"items: at most {max_items} per call, got {len(items)}")
    seen: set[str] = set()
    for i, (item_id, features) in enumerate(items):
        validate_item(item_id, features, rules, f"items[{i}]")
        if item_id in seen:
            raise InvalidRequest(f"items[{i}]: item_id {item_id!r} appears twice")
        seen.add(item_id)


def validate_ids(item_ids: Sequence[str], max_items: int) -> None:
    if not item_ids:
        raise InvalidRequest("item_ids: at least one id is required")
    if len(item_ids) > max_items:
        raise InvalidRequest(f"item_ids: at most {max_items} per call, got {len(item_ids)}")
    for i, item_id in enumerate(item_ids):
        _check_id(item_id, f"item_ids[{i}]")


async def store_items(client: AsyncRedis, items: Sequence[tuple[str, Mapping[str, str]]]) -> int:
    """Write ``items`` to ``recall:items:new`` with fresh revs, then bump
    ``recall:items:rev`` (after the write: a poller that read the old rev re-reads).
    Returns how many were stored.

    Raises:
        BackendUnavailable: Redis failed (some items may be stored; a retry is safe).
    """
    try:
        last = int(await client.incrby(ITEMS_REV, len(items)))
        now = time.time()
        first = last - len(items) + 1
        mapping = {
            item_id.encode(): encode_new_item(NewItem(item_id, dict(features), first + n, now))
            for n, (item_id, features) in enumerate(items)
        }
        await client.hset(NEW_ITEMS, mapping=mapping)  # type: ignore[arg-type]
        await client.incr(ITEMS_REV)
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(f"Redis failed while storing items: {exc}") from exc
    return len(items)


async def set_denied(client: AsyncRedis, item_ids: Sequence[str], lift: bool) -> tuple[int, int]:
    """Add ``item_ids`` to the deny set (``lift``: remove them), then bump the rev.
    Returns (ids whose state changed, deny set size after).

    Raises:
        BackendUnavailable: Redis failed (a retry is safe: both directions are idempotent).
    """
    members = [i.encode() for i in item_ids]
    try:
        if lift:
            changed = int(await client.srem(DENY_SET, *members))
        else:
            changed = int(await client.sadd(DENY_SET, *members))
        await client.incr(ITEMS_REV)
        size = int(await client.scard(DENY_SET))
    except REDIS_ERRORS as exc:
        raise BackendUnavailable(f"Redis failed while updating the deny set: {exc}") from exc
    return changed, size
