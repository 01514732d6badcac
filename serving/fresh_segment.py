"""The fresh segment and the deny set: catalogue changes served between index builds.

Vector databases keep a small, exactly searched "growing" segment beside their sealed
ANN segments; this is that segment for the recall server. Items added with
``RecallAdmin.UpsertItems`` are embedded by the refresher worker (training side) into
``recall:items:fresh:<model_version>``; taken-down items sit in ``recall:items:deny``
(keys: ``keyspace.catalogue_items``, docs/redis.md). Every server polls both
(``FreshSegmentPoller``, every ``RECALL_FRESH_POLL_S``), so a fleet converges on the same
state within one poll and a restarted server recovers it on its first poll.

A ``FreshSegment`` is an immutable snapshot for one loaded index: the fresh vectors of
its model (minus items the index already holds: they were folded in by a build), and the
deny set folded into canonical ids. The recall engine reads one attribute per call
(``RecallEngine.fresh_segment``); None means "nothing fresh, nothing denied", so the hot
path pays nothing when the catalogue has no pending changes.

Answers: denied ids join every query's exclusions (so the index search deepens and still
fills k), and each user-vector row is merged by score with the top-k exact inner products
over the fresh vectors, each id once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from keyspace.catalogue_items import (
    DENY_SET,
    ITEMS_REV,
    decode_fresh_vector,
    decode_ids,
    fresh_vectors_key,
)
from keyspace.connection import REDIS_ERRORS, AsyncRedis
from keyspace.user_vectors import MalformedValue
from serving.index.loaded import LoadedIndex
from serving.model_artifact import CanonicalMaps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FreshSegment:
    """One snapshot of the fresh vectors and the deny set, for one loaded index.

    ``ids``: [n] canonical item ids, none of them in the index ``index_version``;
    ``vectors``: [n, dim] float32, row i ↔ ``ids[i]`` (the model ``model_version``'s item
    tower); ``deny``: canonical ids never to answer (folded with the model's duplicate map).
    """

    model_version: str
    index_version: str
    ids: tuple[str, ...]
    vectors: np.ndarray
    deny: frozenset[str]

    @property
    def size(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``depth`` inner products: queries [B, dim] → (scores [B, d], rows
        [B, d]) best first, d = min(depth, size)."""
        scores = queries @ self.vectors.T  # [B, n]
        d = min(depth, self.size)
        if d < self.size:
            top = np.argpartition(-scores, d - 1, axis=1)[:, :d]
            picked = np.take_along_axis(scores, top, axis=1)
        else:
            top = np.broadcast_to(np.arange(self.size), scores.shape)
            picked = scores
        order = np.argsort(-picked, axis=1)
        return np.take_along_axis(picked, order, axis=1), np.take_along_axis(top, order, axis=1)

    def merge_rows(
        self,
        rows: Sequence[Sequence[tuple[str, float]]],
        queries: np.ndarray,
        excludes: Sequence[frozenset[str]],
        ks: Sequence[int],
    ) -> list[Sequence[tuple[str, float]]]:
        """Each index row merged with the fresh segment's best items for its query.

        rows[i]: the index's candidates for query i (best first, distinct, already free of
        excludes[i]); queries: [len(rows), dim] float32 user vectors."""
        if not self.size:
            return list(rows)
        merged: list[Sequence[tuple[str, float]]] = []
        depth = max(ks) + max((len(e) for e in excludes), default=0)
        scores, found = self.search(queries, depth)
        for i, row in enumerate(rows):
            # A full row only lets in fresh items that beat its last score: usually none,
            # so the common case builds no tuples and keeps the row as it is.
            n = len(scores[i])
            if len(row) >= ks[i]:
                n = int(np.searchsorted(-scores[i], -row[-1][1], side="left"))
            if n == 0:
                merged.append(row)  # as it is (an EncodedCandidates keeps its bytes)
                continue
            fresh = [
                (self.ids[r], float(s))
                for r, s in zip(found[i][:n].tolist(), scores[i][:n].tolist(), strict=True)
            ]
            merged.append(merge_candidates(row, fresh, excludes[i], ks[i]))
        return merged


def merge_candidates(
    index_row: Sequence[tuple[str, float]],
    fresh_row: Sequence[tuple[str, float]],
    exclude: frozenset[str],
    k: int,
) -> list[tuple[str, float]]:
    """The best ``k`` of both lists by score (ties: the index's first), each id once, none
    in ``exclude``. Both inputs are best first (a two-way merge: O(k), no sort)."""
    chosen: list[tuple[str, float]] = []
    seen: set[str] = set()
    i = j = 0
    n_index, n_fresh = len(index_row), len(fresh_row)
    while len(chosen) < k and (i < n_index or j < n_fresh):
        if j >= n_fresh or (i < n_index and index_row[i][1] >= fresh_row[j][1]):
            item, score = index_row[i]
            i += 1
        else:
            item, score = fresh_row[j]
            j += 1
        if item in exclude or item in seen:
            continue
        seen.add(item)
        chosen.append((item, score))
    return chosen


def build_segment(
    loaded: LoadedIndex,
    raw_vectors: Mapping[bytes, bytes],
    raw_deny: Iterable[str],
    canonical: Callable[[str], str],
    max_items: int,
) -> FreshSegment | None:
    """A snapshot for ``loaded`` from the raw HGETALL/SMEMBERS replies; None when nothing
    is fresh and nothing is denied. Malformed vectors (another dimension) are skipped with
    a warning; items the index already holds are left out (a build folded them in); at
    most ``max_items`` fresh items are kept (ids in sorted order), the rest logged."""
    deny = frozenset(canonical(d) for d in raw_deny)
    dim = loaded.manifest.dim
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    for raw_id in sorted(raw_vectors):
        item = canonical(raw_id.decode())
        if item in loaded.internal_ids:
            continue
        try:
            _, vector = decode_fresh_vector(raw_vectors[raw_id], dim)
        except MalformedValue as exc:
            log.warning("fresh item %s skipped: %s", item, exc)
            continue
        if len(ids) >= max_items:
            log.warning(
                "fresh segment holds its maximum of %d items (RECALL_FRESH_MAX_ITEMS); "
                "the others wait for the next index build",
                max_items,
            )
            break
        ids.append(item)
        vectors.append(vector)
    if not ids and not deny:
        return None
    matrix = np.stack(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    return FreshSegment(loaded.model_version, loaded.index_version, tuple(ids), matrix, deny)


class FreshSegmentPoller:
    """Polls ``recall:items:rev`` and, when it or the serving index moved, re-reads the
    fresh vectors of the serving model and the deny set, then publishes a new snapshot
    through ``publish`` (None: empty). One GET per poll while nothing changes.

    ``current``: the serving index or None; ``on_sizes``: called with (fresh items, deny
    set size) after every rebuild (Prometheus gauges)."""

    def __init__(
        self,
        client: AsyncRedis,
        current: Callable[[], LoadedIndex | None],
        canonical_maps: CanonicalMaps,
        publish: Callable[[FreshSegment | None], None],
        *,
        max_items: int = 50_000,
        on_sizes: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.current = current
        self.canonical_maps = canonical_maps
        self.publish = publish
        self.max_items = max_items
        self.on_sizes = on_sizes
        self.fresh_count = 0
        self.deny_count = 0
        self._seen: tuple[object, str] | None = None

    async def poll_once(self) -> bool:
        """One poll; True when a new snapshot was published.

        Raises the Redis client's errors (``run`` logs and retries them)."""
        loaded = self.current()
        if loaded is None:
            return False
        rev = await self.client.get(ITEMS_REV)
        state = (rev, loaded.index_version)
        if state == self._seen:
            return False
        raw_vectors: dict[bytes, bytes] = await self.client.hgetall(  # type: ignore[assignment]
            fresh_vectors_key(loaded.model_version)
        )
        raw_deny = decode_ids(await self.client.smembers(DENY_SET))
        canonical = await self.canonical_maps.for_model(loaded.model_version)
        segment = build_segment(loaded, raw_vectors, raw_deny, canonical.canonical, self.max_items)
        self.publish(segment)
        self.fresh_count = segment.size if segment else 0
        self.deny_count = len(raw_deny)
        if self.on_sizes is not None:
            self.on_sizes(self.fresh_count, self.deny_count)
        self._seen = state
        return True

    async def run(self, interval_s: float) -> None:
        """Poll every ``interval_s`` seconds until cancelled; Redis errors keep the last
        snapshot (a takedown already applied stays applied) and are retried."""
        while True:
            try:
                await self.poll_once()
            except REDIS_ERRORS as exc:
                log.warning("fresh segment poll failed (%s); keeping the last snapshot", exc)
            except Exception:
                log.exception("fresh segment poll failed; retrying")
            await asyncio.sleep(interval_s)
