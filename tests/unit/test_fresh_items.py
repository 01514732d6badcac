"""The refresher's fresh-item job (training/fresh_items.py) against a dict-backed stand-in
for the few Redis commands it uses: what is embedded, when, and that a failing encoder
does not stop the worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keyspace.catalogue_items import (
    ITEMS_REV,
    NEW_ITEMS,
    NewItem,
    decode_fresh_vector,
    encode_new_item,
    fresh_vectors_key,
)
from training.fresh_items import FreshItemWatcher, embed_pending


class HashRedis:
    """GET/INCR/HGETALL/HSET over dicts: the commands embed_pending and the watcher use."""

    def __init__(self) -> None:
        self.strings: dict[bytes, int] = {}
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}

    def get(self, key: bytes) -> bytes | None:
        return str(self.strings[key]).encode() if key in self.strings else None

    def incr(self, key: bytes) -> int:
        self.strings[key] = self.strings.get(key, 0) + 1
        return self.strings[key]

    def hgetall(self, key: bytes) -> dict[bytes, bytes]:
        return dict(self.hashes.get(key, {}))

    def hset(self, key: bytes, mapping: Mapping[bytes, bytes]) -> int:
        self.hashes.setdefault(key, {}).update(mapping)
        return len(mapping)

    def upsert(self, item_id: str, features: dict[str, str]) -> None:
        rev = self.incr(ITEMS_REV)
        self.hset(NEW_ITEMS, {item_id.encode(): encode_new_item(NewItem(item_id, features, rev))})


class CountingEncoder:
    """[B, 2] vectors: (number of features, length of the genres text)."""

    def __init__(self, model_version: str = "m1", fail: bool = False) -> None:
        self.model_version = model_version
        self.fail = fail
        self.calls: list[int] = []

    def encode(self, rows: Sequence[Mapping[str, str]]) -> np.ndarray:
        if self.fail:
            raise ValueError("tower refused the input")
        self.calls.append(len(rows))
        return np.array([[len(r), len(r.get("genres", ""))] for r in rows], dtype=np.float32)


def test_embeds_new_and_changed_records_only() -> None:
    client = HashRedis()
    encoder = CountingEncoder()
    client.upsert("a", {"genres": "Drama"})
    client.upsert("b", {"genres": "War", "year": "1990"})
    assert embed_pending(client, encoder) == 2  # type: ignore[arg-type]
    stored = client.hashes[fresh_vectors_key("m1")]
    rev, vector = decode_fresh_vector(stored[b"b"], 2)
    assert rev == 2 and vector.tolist() == [2.0, 3.0]
    rev_after = client.strings[ITEMS_REV]
    assert embed_pending(client, encoder) == 0  # type: ignore[arg-type]  # nothing changed
    client.upsert("a", {"genres": "Drama|Romance"})  # new features → embedded again
    assert embed_pending(client, encoder) == 1  # type: ignore[arg-type]
    assert decode_fresh_vector(client.hashes[fresh_vectors_key("m1")][b"a"], 2)[1][1] == 13.0
    assert encoder.calls == [2, 1]
    assert client.strings[ITEMS_REV] > rev_after  # servers are told to re-read


def test_watcher_checks_only_on_a_change_and_survives_a_failing_encoder() -> None:
    client = HashRedis()
    encoders = {"m1": CountingEncoder("m1", fail=True), "m2": CountingEncoder("m2")}
    serving = ["m1"]
    loaded: list[str] = []

    def loader(path: Path) -> Any:
        loaded.append(path.name)
        return encoders[path.name]

    class Store:
        def local_dir(self, kind: str, version: str) -> Path:
            return Path("/models") / version

    watcher = FreshItemWatcher(client, Store(), lambda: serving[0], loader)  # type: ignore[arg-type]
    client.upsert("a", {"genres": "Drama"})
    assert watcher.check() == 0  # the encoder raised: logged, the worker goes on
    assert watcher.check() == 0  # and it is not retried in a busy loop
    assert fresh_vectors_key("m1") not in client.hashes
    serving[0] = "m2"  # the serving model moved: embed with the new one
    assert watcher.check() == 1
    assert b"a" in client.hashes[fresh_vectors_key("m2")]
    assert loaded == ["m1", "m2"]
