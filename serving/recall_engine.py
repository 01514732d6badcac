"""Request → candidates: validation, user-vector lookup, ANN search, exclusions, fallback.

Transport-free (no gRPC here), so the logic is testable without a server; the servicer in
``serving.server`` only converts messages and maps errors to status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from serving.errors import InvalidRequest
from serving.index.loaded import LoadedIndex
from serving.index_holder import IndexHolder
from serving.user_vectors import UserVectorStore

MAX_USER_ID_BYTES = 512
"""Longer user ids are refused: they would only make oversized Redis keys."""
MAX_EXCLUDED_ITEMS = 10_000
"""More exclusions are refused: each one deepens the search (k + excluded results)."""


class Source(Enum):
    USER_VECTOR = "user_vector"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class RecallQuery:
    user_id: str
    k: int
    exclude: frozenset[str] = field(default_factory=frozenset)
    exclude_seen: bool = False  # also exclude the user's history (recall:hist:<user_id>)


@dataclass(frozen=True)
class RecallResult:
    candidates: list[tuple[str, float]]  # (item_id, score), best first, distinct
    model_version: str
    index_version: str
    source: Source


def validate_query(query: RecallQuery, max_k: int) -> None:
    """Raises InvalidRequest when user_id is empty or too long, k is outside 1..max_k, or
    there are more than MAX_EXCLUDED_ITEMS exclusions."""
    if not query.user_id:
        raise InvalidRequest("user_id is required")
    if len(query.user_id.encode()) > MAX_USER_ID_BYTES:
        raise InvalidRequest(f"user_id is longer than {MAX_USER_ID_BYTES} bytes")
    if len(query.exclude) > MAX_EXCLUDED_ITEMS:
        raise InvalidRequest(
            f"at most {MAX_EXCLUDED_ITEMS} exclude_item_ids, got {len(query.exclude)}"
        )
    if not 1 <= query.k <= max_k:
        raise InvalidRequest(f"k must be between 1 and {max_k}, got {query.k}")


def select_candidates(
    ids: np.ndarray, scores: np.ndarray, item_ids: Sequence[str], exclude: frozenset[str], k: int
) -> list[tuple[str, float]]:
    """First ``k`` results of one search row that are valid (id ≥ 0), not excluded, not
    repeated. ids, scores: [n] from Faiss, best first."""
    chosen: list[tuple[str, float]] = []
    seen: set[str] = set()
    for internal, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if internal < 0:
            continue
        item = item_ids[internal]
        if item in exclude or item in seen:
            continue
        seen.add(item)
        chosen.append((item, float(score)))
        if len(chosen) == k:
            break
    return chosen


def fallback_candidates(
    popular: Sequence[tuple[str, float]], exclude: frozenset[str], k: int
) -> list[tuple[str, float]]:
    """The ``k`` most popular items not excluded (fewer if the list runs out)."""
    return [(item, score) for item, score in popular if item not in exclude][:k]


class RecallEngine:
    def __init__(
        self, holder: IndexHolder, vectors: UserVectorStore, max_k: int, nprobe: int | None = None
    ) -> None:
        self.holder = holder
        self.vectors = vectors
        self.max_k = max_k
        self.nprobe = nprobe

    async def recall(self, queries: Sequence[RecallQuery]) -> list[RecallResult]:
        """Serve several queries against one index snapshot; results in query order."""
        for i, query in enumerate(queries):
            try:
                validate_query(query, self.max_k)
            except InvalidRequest as exc:
                if len(queries) == 1:
                    raise
                raise InvalidRequest(f"requests[{i}]: {exc}") from exc
        loaded = self.holder.current()
        states = await self.vectors.read_users(
            loaded.model_version,
            [q.user_id for q in queries],
            loaded.manifest.dim,
            [q.exclude_seen for q in queries],
        )
        # The seen filter is one more exclusion: from here on, history ∪ exclude_item_ids.
        queries = [
            dataclasses.replace(q, exclude=q.exclude | frozenset(s.history)) if s.history else q
            for q, s in zip(queries, states, strict=True)
        ]
        vectors = [s.vector for s in states]
        with_vector = [i for i, v in enumerate(vectors) if v is not None]
        found: dict[int, list[tuple[str, float]]] = {}
        if with_vector:
            matrix = np.stack([vectors[i] for i in with_vector])  # type: ignore[misc]
            batch = [queries[i] for i in with_vector]
            rows = await asyncio.to_thread(self._search, loaded, matrix, batch)
            found = dict(zip(with_vector, rows, strict=True))
        results = []
        for i, query in enumerate(queries):
            if i in found:
                results.append(
                    RecallResult(
                        found[i], loaded.model_version, loaded.index_version, Source.USER_VECTOR
                    )
                )
            else:
                results.append(
                    RecallResult(
                        fallback_candidates(loaded.popular, query.exclude, query.k),
                        loaded.model_version,
                        loaded.index_version,
                        Source.FALLBACK,
                    )
                )
        return results

    def _search(
        self, loaded: LoadedIndex, matrix: np.ndarray, queries: Sequence[RecallQuery]
    ) -> list[list[tuple[str, float]]]:
        """Blocking: one batched Faiss search, then a wider per-query search for any query
        whose probed lists held fewer than k usable results."""
        nprobe = self.nprobe or loaded.manifest.nprobe
        excluded = [sum(1 for e in q.exclude if e in loaded.internal_ids) for q in queries]
        wanted = [min(q.k, loaded.item_count - n) for q, n in zip(queries, excluded, strict=True)]
        depth = min(loaded.item_count, max(q.k + n for q, n in zip(queries, excluded, strict=True)))
        scores, ids = loaded.search(matrix, depth, nprobe)
        rows = []
        for r, query in enumerate(queries):
            row = select_candidates(ids[r], scores[r], loaded.item_ids, query.exclude, query.k)
            if len(row) < wanted[r]:
                deep = min(loaded.item_count, query.k + excluded[r])
                s2, i2 = loaded.search(matrix[r : r + 1], deep, loaded.manifest.nlist)
                row = select_candidates(i2[0], s2[0], loaded.item_ids, query.exclude, query.k)
            rows.append(row)
        return rows
