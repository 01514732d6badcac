"""Fresh items and takedowns: the catalogue changes made between index builds (spec:
docs/redis.md)::

    recall:items:new                 Hash: item_id → JSON {"features": {column: text},
                                     "rev": int, "added_at": Unix seconds}. Items added with
                                     UpsertItems and not yet folded into a promoted index.
                                     Durable: every model (the serving one, a new one of the
                                     nightly build) embeds them from here.
    recall:items:fresh:<model>       Hash: item_id → 8-byte little-endian int64 ``rev`` of
                                     the record it was embedded from, then dim ×
                                     little-endian float32 (the item tower's vector under
                                     that model version).
    recall:items:deny                Set of item ids taken down (RemoveItems; lifted with
                                     RemoveItems(lift=true)). Persist until lifted.
    recall:items:rev                 Integer, INCR'd after every change of the keys above:
                                     servers and the worker poll it and re-read the rest
                                     only when it moved.

Every command names one key, so all of this works on Redis Cluster unchanged (no hash
tags needed). ``rev`` values come from ``INCR recall:items:rev`` at upsert time, so a
vector whose stored rev differs from its record's is stale (the features changed) and is
embedded again.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from keyspace.user_vectors import KEY_PREFIX, VALUE_DTYPE, MalformedValue

NEW_ITEMS = f"{KEY_PREFIX}:items:new".encode()
DENY_SET = f"{KEY_PREFIX}:items:deny".encode()
ITEMS_REV = f"{KEY_PREFIX}:items:rev".encode()
_REV = struct.Struct("<q")

DELETE_IF_UNCHANGED_LUA = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""
"""HDEL fields ARGV[1], ARGV[3], … of hash KEYS[1] whose value is still ARGV[2], ARGV[4], …
(an item re-upserted while its fold-in ran keeps its newer record). One key: cluster-safe."""


def fresh_vectors_key(model_version: str) -> bytes:
    """``recall:items:fresh:<model_version>`` as UTF-8 bytes."""
    return f"{KEY_PREFIX}:items:fresh:{model_version}".encode()


@dataclass(frozen=True)
class NewItem:
    """One added item: its feature columns as text (as the items table would hold them)
    and the ``rev`` its record was written with."""

    item_id: str
    features: Mapping[str, str]
    rev: int
    added_at: float = 0.0


def encode_new_item(item: NewItem) -> bytes:
    """The ``recall:items:new`` field value: compact JSON, UTF-8."""
    payload = {"features": dict(item.features), "rev": item.rev, "added_at": item.added_at}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def decode_new_item(item_id: str, raw: bytes) -> NewItem:
    """Inverse of encode_new_item. Raises MalformedValue on bad JSON or fields."""
    try:
        payload = json.loads(raw)
        features = payload["features"]
        rev = payload["rev"]
        if not isinstance(features, dict) or not isinstance(rev, int):
            raise TypeError("features must be an object and rev an integer")
        return NewItem(
            item_id,
            {str(k): str(v) for k, v in features.items()},
            rev,
            float(payload.get("added_at", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedValue(f"new item {item_id!r}: {exc}") from exc


def encode_fresh_vector(rev: int, vector: np.ndarray) -> bytes:
    """8 bytes of little-endian int64 ``rev``, then [dim] little-endian float32."""
    return _REV.pack(rev) + np.asarray(vector, dtype=VALUE_DTYPE).tobytes()


def fresh_vector_rev(raw: bytes) -> int:
    """The ``rev`` a stored fresh vector was embedded from. Raises MalformedValue."""
    if len(raw) < _REV.size:
        raise MalformedValue(f"fresh item vector has {len(raw)} bytes, fewer than 8")
    return int(_REV.unpack_from(raw)[0])


def decode_fresh_vector(raw: bytes, dim: int) -> tuple[int, np.ndarray]:
    """Inverse of encode_fresh_vector: (rev, [dim] float32). Raises MalformedValue when
    the size is not 8 + 4·dim bytes (a vector of another model's dimension)."""
    expected = _REV.size + dim * VALUE_DTYPE.itemsize
    if len(raw) != expected:
        raise MalformedValue(
            f"fresh item vector has {len(raw)} bytes, expected {expected} (dim {dim})"
        )
    vector = np.frombuffer(raw, dtype=VALUE_DTYPE, offset=_REV.size).astype(np.float32)
    return fresh_vector_rev(raw), vector


def decode_ids(raw: object) -> set[str]:
    """SMEMBERS / HKEYS reply (bytes) → set of UTF-8 ids."""
    if not raw:
        return set()
    return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}  # type: ignore[attr-defined]
