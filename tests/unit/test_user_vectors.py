"""Redis key format and value encoding (the byte-level contract in serving.user_vectors),
plus loading and reading through fake Redis clients."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from serving.errors import BackendUnavailable, CorruptUserVector
from serving.user_vectors import (
    UserVectorStore,
    decode_vector,
    encode_vector,
    load_user_vectors,
    meta_key,
    user_vector_key,
)
from tests.unit.helpers import write_model_artifact

VERSION = "20261123T073012Z-3f9a1c"


def test_user_vector_key_is_pinned_byte_for_byte() -> None:
    assert user_vector_key(VERSION, "42") == b"recall:uv:20261123T073012Z-3f9a1c:42"


def test_user_vector_key_is_utf8() -> None:
    assert user_vector_key("v1", "josé") == b"recall:uv:v1:jos\xc3\xa9"


def test_meta_key_is_pinned_byte_for_byte() -> None:
    assert meta_key(VERSION) == b"recall:uvmeta:20261123T073012Z-3f9a1c"


def test_encode_vector_is_little_endian_float32() -> None:
    assert encode_vector(np.array([1.0, -2.0])) == struct.pack("<2f", 1.0, -2.0)
    assert encode_vector([1.0, -2.0]) == b"\x00\x00\x80\x3f\x00\x00\x00\xc0"


def test_encode_vector_converts_big_endian_and_float64_input() -> None:
    values = [0.5, 3.25, -7.0]
    expected = struct.pack("<3f", *values)
    assert encode_vector(np.array(values, dtype=">f8")) == expected
    assert encode_vector(np.array(values, dtype=">f4")) == expected


def test_decode_round_trip() -> None:
    vector = np.random.default_rng(0).normal(size=16).astype(np.float32)
    raw = encode_vector(vector)
    assert len(raw) == 64
    decoded = decode_vector(raw, 16)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, vector)


@pytest.mark.parametrize("size", [0, 4 * 15, 4 * 17, 4 * 16 - 1])
def test_decode_wrong_length_raises_corrupt_user_vector(size: int) -> None:
    with pytest.raises(CorruptUserVector, match=str(size)):
        decode_vector(b"\x00" * size, 16)


# --- loading and reading through fake clients -------------------------------------------


class FakeSyncPipeline:
    def __init__(self, client: FakeSyncRedis) -> None:
        self.client = client
        self.pending: list[tuple[bytes, bytes]] = []

    def set(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))

    def execute(self) -> list[bool]:
        self.client.executed_batches.append(len(self.pending))
        for key, value in self.pending:
            self.client.set(key, value)
        return [True] * len(self.pending)


class FakeSyncRedis:
    def __init__(self, fail: bool = False) -> None:
        self.data: dict[bytes, bytes] = {}
        self.order: list[bytes] = []
        self.executed_batches: list[int] = []
        self.fail = fail

    def pipeline(self, transaction: bool = True) -> FakeSyncPipeline:
        assert transaction is False, "user vectors must be written without MULTI/EXEC"
        if self.fail:
            raise redis.ConnectionError("connection refused")
        return FakeSyncPipeline(self)

    def set(self, key: bytes, value: bytes | str) -> bool:
        self.data[key] = value.encode() if isinstance(value, str) else value
        self.order.append(key)
        return True


def test_load_user_vectors_writes_every_user_then_meta_last(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=50, n_users=7, dim=4)
    client = FakeSyncRedis()
    progress: list[tuple[int, int]] = []

    count = load_user_vectors(
        model, client, batch_size=3, on_progress=lambda done, total: progress.append((done, total))
    )

    assert count == 7
    assert client.executed_batches == [3, 3, 1]
    assert progress == [(3, 7), (6, 7), (7, 7)]
    vectors = model.user_vectors()
    for row, user_id in enumerate(model.user_ids()):
        raw = client.data[b"recall:uv:" + model.model_version.encode() + b":" + user_id.encode()]
        assert raw == vectors[row].astype("<f4").tobytes()
    assert client.order[-1] == meta_key(model.model_version)
    meta = json.loads(client.data[meta_key(model.model_version)])
    assert meta["dim"] == 4 and meta["count"] == 7 and meta["dtype"] == "float32"


def test_load_user_vectors_maps_redis_errors(tmp_path: Path) -> None:
    model = write_model_artifact(tmp_path / "model", n_items=50, n_users=3, dim=4)
    with pytest.raises(BackendUnavailable):
        load_user_vectors(model, FakeSyncRedis(fail=True))


class FakeAsyncPipeline:
    def __init__(self, client: FakeAsyncRedis) -> None:
        self.client = client
        self.keys: list[bytes] = []

    def get(self, key: bytes) -> None:
        self.keys.append(key)

    def mget(self, keys: list[bytes]) -> None:
        self.keys.append(b"MGET")
        self.mget_keys = keys

    async def execute(self) -> list[Any]:
        if self.client.error is not None:
            raise self.client.error
        self.client.round_trips += 1
        return [
            [self.client.data.get(k) for k in self.mget_keys]
            if k == b"MGET"
            else self.client.data.get(k)
            for k in self.keys
        ]


class FakeAsyncRedis:
    def __init__(self, data: dict[bytes, bytes], error: Exception | None = None) -> None:
        self.data = data
        self.error = error
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> FakeAsyncPipeline:
        assert transaction is False, "reads must work on Redis Cluster (no MULTI)"
        return FakeAsyncPipeline(self)


def test_get_many_returns_vectors_and_none_in_order_in_one_round_trip() -> None:
    a, b = np.array([1.0, 2.0], np.float32), np.array([-3.0, 0.5], np.float32)
    client = FakeAsyncRedis(
        {
            user_vector_key("v1", "a"): encode_vector(a),
            user_vector_key("v1", "b"): encode_vector(b),
            user_vector_key("v0", "c"): encode_vector(a),
        }
    )
    store = UserVectorStore(client)  # type: ignore[arg-type]

    for multi_key_reads in (True, False):  # MGET, or a GET each (Redis Cluster)
        store.multi_key_reads = multi_key_reads
        client.round_trips = 0
        got = asyncio.run(store.get_many("v1", ["b", "missing", "a", "c"], 2))

        assert client.round_trips == 1
        np.testing.assert_array_equal(got[0], b)
        assert got[1] is None
        np.testing.assert_array_equal(got[2], a)
        assert got[3] is None  # only the requested model version's keys are read
        assert asyncio.run(store.get_many("v1", [], 2)) == []


def test_get_many_raises_corrupt_user_vector_on_wrong_dim() -> None:
    client = FakeAsyncRedis({user_vector_key("v1", "a"): encode_vector([1.0, 2.0, 3.0])})
    with pytest.raises(CorruptUserVector):
        asyncio.run(UserVectorStore(client).get_many("v1", ["a"], 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [redis.ConnectionError("down"), TimeoutError("slow")])
def test_get_many_maps_connection_errors_to_backend_unavailable(error: Exception) -> None:
    client = FakeAsyncRedis({}, error=error)
    with pytest.raises(BackendUnavailable):
        asyncio.run(UserVectorStore(client).get_many("v1", ["a"], 2))  # type: ignore[arg-type]
