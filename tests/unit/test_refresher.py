"""training.refresher and training.histories with a fake encoder and a fake Redis: batching
of stream entries into distinct users, ack only after the write, reclaiming entries a
crashed worker left pending, the serving model's version, the hourly sweep, seeding order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artifacts.errors import ArtifactNotFound
from artifacts.store import ArtifactStore
from keyspace.events import (
    EVENTS_STREAM,
    REFRESH_WATERMARK,
    REFRESHER_GROUP,
    TOUCHED_USERS,
    UserEvent,
    encode_event,
)
from keyspace.user_vectors import decode_vector, user_vector_key
from tests.unit.fake_redis import FakeRedis
from training.histories import latest_histories, write_histories
from training.refresher import Refresher, ServingModel, refresh_touched_users, refresh_users

DIM = 4


class FakeEncoder:
    """UserEncoder's interface: vector = one-hot of the history length (capped), so tests
    can tell which history was encoded."""

    def __init__(self, model_version: str, history_length: int = 3) -> None:
        self.model_version = model_version
        self.history_length = history_length
        self.calls: list[tuple[list[str], list[list[str]]]] = []

    def encode(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        self.calls.append((list(user_ids), [list(h) for h in histories]))
        out = np.zeros((len(user_ids), DIM), dtype=np.float32)
        for row, history in enumerate(histories):
            out[row, min(len(history), DIM) - 1] = 1.0
        return out


def publish_index_manifest(store: ArtifactStore, tmp: Path, index: str, model: str) -> None:
    """Just enough of an index (and its model directory) for the lineage look-up."""
    src = tmp / f"src-{index}"
    src.mkdir()
    (src / "manifest.json").write_text(
        json.dumps({"index_version": index, "model_version": model, "factory": "IVF1,PQ1"})
    )
    store.publish("indexes", index, src)
    if not store.exists("models", model):
        msrc = tmp / f"msrc-{model}"
        msrc.mkdir()
        (msrc / "manifest.json").write_text("{}")
        store.publish("models", model, msrc)


@pytest.fixture()
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    publish_index_manifest(store, tmp_path, "20260101T000000Z-aaaaaa", "m1")
    return store


def loader_for(encoders: list[FakeEncoder]):
    def load(model_dir: Path) -> FakeEncoder:
        encoder = FakeEncoder(model_dir.name)
        encoders.append(encoder)
        return encoder

    return load


def add_event(client: FakeRedis, user: str, items: Sequence[str]) -> None:
    for item in items:
        client.lpush(b"recall:hist:" + user.encode(), item.encode())
    client.xadd(EVENTS_STREAM, encode_event(UserEvent(user, len(items), 1)))


def test_refresh_users_reads_capped_histories_skips_empty_and_writes_model_keys() -> None:
    client = FakeRedis()
    for item in ["a", "b", "c", "d"]:
        client.lpush(b"recall:hist:u1", item.encode())
    client.lpush(b"recall:hist:new", b"x")
    encoder = FakeEncoder("m1", history_length=3)

    written = refresh_users(client, encoder, ["u1", "empty", "new"])  # type: ignore[arg-type]

    assert written == 2
    assert encoder.calls == [(["u1", "new"], [["d", "c", "b"], ["x"]])]
    np.testing.assert_array_equal(
        decode_vector(client.strings[user_vector_key("m1", "u1")], DIM), [0, 0, 1, 0]
    )
    assert user_vector_key("m1", "empty") not in client.strings
    assert b"recall:uv:m1:new" in client.strings


def test_refresh_users_batches_the_encoder_calls() -> None:
    client = FakeRedis()
    users = [f"u{i}" for i in range(5)]
    for u in users:
        client.lpush(f"recall:hist:{u}".encode(), b"a")
    encoder = FakeEncoder("m1")
    assert refresh_users(client, encoder, users, batch_size=2) == 5  # type: ignore[arg-type]
    assert [len(ids) for ids, _ in encoder.calls] == [2, 2, 1]


def test_poll_encodes_each_user_once_per_batch_and_acks_after_writing(
    store: ArtifactStore,
) -> None:
    client = FakeRedis()
    encoders: list[FakeEncoder] = []
    worker = Refresher(client, ServingModel(store, loader_for(encoders)), "w1")  # type: ignore[arg-type]
    worker.ensure_group()
    worker.ensure_group()  # idempotent (BUSYGROUP)
    add_event(client, "u1", ["a"])
    add_event(client, "u2", ["b", "c"])
    add_event(client, "u1", ["d"])

    assert worker.poll() == 2

    [encoder] = encoders
    assert encoder.calls == [(["u1", "u2"], [["d", "a"], ["c", "b"]])]
    assert client.acked == [b"1-0", b"2-0", b"3-0"]
    assert client.groups[REFRESHER_GROUP]["pending"] == {}
    assert b"recall:uv:m1:u1" in client.strings
    assert worker.poll() == 0  # nothing new


def test_failed_batch_stays_pending_and_is_reclaimed_after_the_idle_time(
    tmp_path: Path,
) -> None:
    now = [0.0]
    client = FakeRedis(clock=lambda: now[0])
    empty = ArtifactStore(tmp_path / "empty")  # no index yet: the encoder cannot load
    crashed = Refresher(client, ServingModel(empty, loader_for([])), "w1", claim_idle_ms=1000)  # type: ignore[arg-type]
    crashed.ensure_group()
    add_event(client, "u1", ["a"])
    with pytest.raises(ArtifactNotFound):
        crashed.poll()
    assert client.acked == []
    assert list(client.groups[REFRESHER_GROUP]["pending"]) == [b"1-0"]

    publish_index_manifest(empty, tmp_path, "20260101T000000Z-bbbbbb", "m2")
    other = Refresher(client, ServingModel(empty, loader_for([])), "w2", claim_idle_ms=1000)  # type: ignore[arg-type]
    assert other.poll() == 0  # not idle long enough yet: not reclaimed, nothing new
    now[0] = 1.5
    assert other.poll() == 1
    assert client.acked == [b"1-0"]
    assert b"recall:uv:m2:u1" in client.strings


def test_serving_model_follows_the_latest_index_and_reloads_on_change(
    store: ArtifactStore, tmp_path: Path
) -> None:
    clock = [0.0]
    encoders: list[FakeEncoder] = []
    model = ServingModel(store, loader_for(encoders), check_interval_s=5, clock=lambda: clock[0])
    assert model.encoder().model_version == "m1"
    publish_index_manifest(store, tmp_path, "20260102T000000Z-cccccc", "m2")
    assert model.encoder().model_version == "m1"  # not re-checked within the interval
    clock[0] = 6
    assert model.encoder().model_version == "m2"
    clock[0] = 12
    model.encoder()
    assert [e.model_version for e in encoders] == ["m1", "m2"]  # loaded once each


def test_hourly_refresh_covers_users_touched_since_the_last_run(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeRedis()
    monkeypatch.setattr("training.refresher.make_client", lambda *a, **k: client)
    for user, touched in (("old", 100.0), ("mid", 1000.0), ("new", 2000.0)):
        client.lpush(f"recall:hist:{user}".encode(), b"a")
        client.zadd(TOUCHED_USERS, {user.encode(): touched})
    encoders: list[FakeEncoder] = []

    def run(now: float) -> int:
        return refresh_touched_users(
            str(store.root),
            "redis://unused",
            overlap_s=10,
            retention_s=1000,
            loader=loader_for(encoders),
            now=now,
        )

    assert run(now=1500.0) == 3  # first run: everyone touched
    assert client.strings[REFRESH_WATERMARK] == b"1500.0"
    assert set(client.zsets[TOUCHED_USERS]) == {b"mid", b"new"}  # "old" aged out
    assert run(now=2500.0) == 1  # only "new" (touched after 1500 - 10)
    assert encoders[-1].calls[-1][0] == ["new"]


def test_latest_histories_most_recent_first_capped_ties_by_row() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u", "u", "v", "u", "u"],
            "item_id": ["a", "b", "x", "c", "d"],
            "timestamp": [10, 30, 5, 20, 30],
        }
    )
    assert latest_histories(frame, cap=3) == {"u": ["d", "b", "c"], "v": ["x"]}
    with pytest.raises(ValueError):
        latest_histories(frame, cap=0)


def test_write_histories_replaces_each_list_in_one_pipeline() -> None:
    client = FakeRedis()
    client.lists[b"recall:hist:u"] = [b"stale"]
    client.lists[b"recall:hist:other"] = [b"kept"]
    assert write_histories(client, {"u": ["d", "b"], "v": ["x"]}) == 2  # type: ignore[arg-type]
    assert client.lists[b"recall:hist:u"] == [b"d", b"b"]
    assert client.lists[b"recall:hist:v"] == [b"x"]
    assert client.lists[b"recall:hist:other"] == [b"kept"]
    assert client.executed == [["execute_command", "execute_command"]]
