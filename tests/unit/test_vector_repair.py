"""The repair decision (serving.vector_repair.assess) and the repair's writes, without a
server; the lock and the whole repair against a real Redis: tests/integration/test_redis_ops.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.user_vectors import encode_vector, meta_key, user_vector_key
from serving.vector_repair import VectorHealth, assess, write_missing_vectors
from tests.unit.helpers import write_model_artifact


class NxRedis:
    """The string commands write_missing_vectors uses: SET [NX] through pipelines, GET."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.pipelines = 0

    def set(self, key: bytes, value: bytes | str, nx: bool = False) -> bool | None:
        if nx and key in self.data:
            return None
        self.data[key] = value if isinstance(value, bytes) else value.encode()
        return True

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def pipeline(self, transaction: bool = True) -> NxRedis.Pipeline:
        assert not transaction
        self.pipelines += 1
        return NxRedis.Pipeline(self)

    class Pipeline:
        def __init__(self, client: NxRedis) -> None:
            self.client = client
            self.queued: list[tuple[bytes, bytes, bool]] = []

        def set(self, key: bytes, value: bytes, nx: bool = False) -> None:
            self.queued.append((key, value, nx))

        def execute(self) -> list[bool | None]:
            return [self.client.set(k, v, nx) for k, v, nx in self.queued]


def meta(count: int) -> bytes:
    return json.dumps({"dim": 4, "dtype": "float32", "count": count, "loaded_at": 1.0}).encode()


@pytest.mark.parametrize(
    ("meta_raw", "sample", "expected"),
    [
        (None, [True, True], VectorHealth.META_MISSING),
        (None, [], VectorHealth.META_MISSING),
        (b"not json", [True], VectorHealth.META_UNREADABLE),
        (b'{"dim": 4}', [True], VectorHealth.META_UNREADABLE),
        (b'{"count": "10"}', [True], VectorHealth.META_UNREADABLE),
        (b"[1, 2]", [True], VectorHealth.META_UNREADABLE),
        (meta(9), [True, True], VectorHealth.COUNT_SHORT),
        (meta(10), [True, False, True], VectorHealth.VECTORS_MISSING),
        (meta(10), [True, True], VectorHealth.COMPLETE),
        (meta(12), [True], VectorHealth.COMPLETE),  # the refresher's users come on top
        (meta(10), [], VectorHealth.COMPLETE),
    ],
)
def test_assess(meta_raw: bytes | None, sample: list[bool], expected: VectorHealth) -> None:
    assert assess(meta_raw, 10, sample) is expected


def test_write_missing_vectors_keeps_existing_keys_and_writes_meta_last(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "m", n_users=7)
    users, vectors = model.user_ids(), np.asarray(model.user_vectors())
    client = NxRedis()
    fresher = encode_vector(np.full(model.embedding_dim, 0.5, dtype=np.float32))
    client.set(user_vector_key(model.model_version, users[0]), fresher)
    batches: list[int] = []

    written = write_missing_vectors(
        model,
        client,  # type: ignore[arg-type]
        batch_size=2,
        after_batch=lambda: batches.append(1),
    )

    assert written == len(users) - 1
    assert client.get(user_vector_key(model.model_version, users[0])) == fresher
    for user_id, vector in zip(users[1:], vectors[1:], strict=True):
        assert client.get(user_vector_key(model.model_version, user_id)) == encode_vector(vector)
    assert len(batches) == client.pipelines == 4  # 7 users in pipelines of 2
    record = json.loads(client.data[meta_key(model.model_version)])
    assert record["count"] == len(users) and record["dim"] == model.embedding_dim
