"""User-vector keys and the value encoding (spec: docs/redis.md)::

    recall:uv:<model_version>:<user_id>      value: dim × little-endian float32 (4·dim bytes)
    recall:uvmeta:<model_version>            value: JSON {"dim", "dtype", "count", "loaded_at"}
    recall:uvrepair:<model_version>          value: random token of the repairing server (PX TTL)

The bulk loader (serving.user_vectors.load_user_vectors) and the refresher
(training.refresher) write with these functions, the recall server reads with them.
"""

from __future__ import annotations

import numpy as np

KEY_PREFIX = "recall"
VALUE_DTYPE = np.dtype("<f4")


class MalformedValue(ValueError):
    """A stored value does not have the documented format (wrong size, bad field)."""


def user_vector_key(model_version: str, user_id: str) -> bytes:
    """``recall:uv:<model_version>:<user_id>`` as UTF-8 bytes."""
    return f"{KEY_PREFIX}:uv:{model_version}:{user_id}".encode()


def meta_key(model_version: str) -> bytes:
    """``recall:uvmeta:<model_version>`` as UTF-8 bytes."""
    return f"{KEY_PREFIX}:uvmeta:{model_version}".encode()


def repair_lock_key(model_version: str) -> bytes:
    """``recall:uvrepair:<model_version>``: the lock a server holds while it reloads that
    model's vectors (serving.vector_repair), so N servers do not all reload."""
    return f"{KEY_PREFIX}:uvrepair:{model_version}".encode()


def encode_vector(vector: np.ndarray) -> bytes:
    """[dim] float → 4·dim bytes, little-endian float32."""
    return np.asarray(vector, dtype=VALUE_DTYPE).tobytes()


def decode_vector(raw: bytes, dim: int) -> np.ndarray:
    """Inverse of encode_vector: [dim] float32. Raises MalformedValue if the size is not
    4·dim bytes."""
    expected = dim * VALUE_DTYPE.itemsize
    if len(raw) != expected:
        raise MalformedValue(
            f"stored user vector has {len(raw)} bytes, expected {expected} (dim {dim})"
        )
    return np.frombuffer(raw, dtype=VALUE_DTYPE).astype(np.float32)
