"""Request → candidates: validation, user-vector lookup, ANN search, exclusions, fallback.

Transport-free (no gRPC here), so the logic is testable without a server; the servicer in
``serving.server`` only converts messages and maps errors to status codes.

Answers do not depend on which queries share a call: queries are searched in groups of
equal (depth, nprobe, refine factor), so a query gets the same candidates alone, in a
``BatchRecall`` or in a micro-batch of concurrent ``Recall`` calls.

Degraded answers: when the user-vector read fails or times out, or the circuit breaker is
open, every query of the call gets the popular items (minus its explicit exclusions; the
history cannot be read) marked ``FALLBACK_DEGRADED`` with the reason, unless the failure
mode is ``unavailable`` (then the call fails with BackendUnavailable).

Duplicate items: the serving model's canonical-id map (duplicates.json) folds every id of
``exclude_item_ids`` and of the seen list into its canonical id, and answers carry
canonical ids only, each once: excluding either copy of a film excludes both.

Fresh items and takedowns (``serving.fresh_segment``): when ``fresh_segment`` is set, its
denied ids join every query's exclusions and user-vector answers are merged by score with
an exact search over the fresh items; None (the usual case) costs one attribute read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import faiss
import numpy as np

from serving.circuit_breaker import CircuitBreaker
from serving.errors import BackendUnavailable, InvalidRequest, RecallError
from serving.fresh_segment import FreshSegment
from serving.index.loaded import LoadedIndex
from serving.index_holder import IndexHolder
from serving.model_artifact import CanonicalMaps
from serving.response_encoding import CandidateWireTable, EncodedCandidates
from serving.user_vectors import UserState, UserVectorStore

MAX_USER_ID_BYTES = 512
"""Longer user ids are refused: they would only make oversized Redis keys."""
MAX_EXCLUDED_ITEMS = 10_000
"""More exclusions are refused: each one deepens the search (k + excluded results)."""


class Source(Enum):
    USER_VECTOR = "user_vector"
    FALLBACK = "fallback"
    FALLBACK_DEGRADED = "fallback_degraded"


FailureMode = Literal["fallback", "unavailable"]

# LoadedIndex.search gains a k_factor (refine over-fetch) keyword with the exact re-rank;
# until then a per-request refine factor is accepted and has no effect.
_SEARCH_TAKES_K_FACTOR = "k_factor" in inspect.signature(LoadedIndex.search).parameters


@dataclass(frozen=True)
class RecallQuery:
    user_id: str
    k: int
    exclude: frozenset[str] = field(default_factory=frozenset)
    exclude_seen: bool = False  # also exclude the user's history (recall:hist:<user_id>)
    nprobe: int | None = None  # per-request override; None = the server's default
    refine_factor: int | None = None  # per-request re-rank over-fetch; None = the index's


@dataclass(frozen=True)
class RecallResult:
    # (item_id, score), best first, distinct; answers straight from the index come as
    # EncodedCandidates (a Sequence that also holds their wire bytes).
    candidates: Sequence[tuple[str, float]]
    model_version: str
    index_version: str
    source: Source
    degraded_reason: str = ""  # why, for FALLBACK_DEGRADED: redis_error|redis_timeout|circuit_open


def validate_query(
    query: RecallQuery, max_k: int, max_nprobe: int = 1024, max_refine_factor: int = 64
) -> None:
    """Raises InvalidRequest when user_id is empty or too long, k is outside 1..max_k, there
    are more than MAX_EXCLUDED_ITEMS exclusions, or nprobe / refine_factor (when given) are
    outside 1..max_nprobe / 1..max_refine_factor."""
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
    if query.nprobe is not None and not 1 <= query.nprobe <= max_nprobe:
        raise InvalidRequest(
            f"nprobe must be between 1 and {max_nprobe} (0 = server default), got {query.nprobe}"
        )
    if query.refine_factor is not None and not 1 <= query.refine_factor <= max_refine_factor:
        raise InvalidRequest(
            f"refine_factor must be between 1 and {max_refine_factor} (0 = index default), "
            f"got {query.refine_factor}"
        )


def select_candidates(
    ids: np.ndarray,
    scores: np.ndarray,
    item_ids: Sequence[str],
    exclude: frozenset[str],
    k: int,
    aliases: Mapping[str, str] | None = None,
) -> list[tuple[str, float]]:
    """First ``k`` results of one search row that are valid (id ≥ 0), not excluded, not
    repeated. ids, scores: [n] from Faiss, best first. ``aliases`` (non-canonical id →
    canonical id): results are named by canonical id, so two copies count as one item
    (``exclude`` must hold canonical ids then)."""
    if not exclude and len(ids) <= k:
        # Fast path of most calls: a Faiss row holds each internal id at most once, so
        # without exclusions only the -1 padding (missing results) goes.
        valid = ids >= 0
        names = [item_ids[i] for i in ids[valid].tolist()]
        if aliases:
            names = [aliases.get(n, n) for n in names]
        if len(set(names)) == len(names):  # external ids distinct too (always, in practice)
            return list(zip(names, scores[valid].tolist(), strict=True))
    chosen: list[tuple[str, float]] = []
    seen: set[str] = set()
    for internal, score in zip(ids.tolist(), scores.tolist(), strict=True):
        if internal < 0:
            continue
        item = item_ids[internal]
        if aliases:
            item = aliases.get(item, item)
        if item in exclude or item in seen:
            continue
        seen.add(item)
        chosen.append((item, score))
        if len(chosen) == k:
            break
    return chosen


def fallback_candidates(
    popular: Sequence[tuple[str, float]],
    exclude: frozenset[str],
    k: int,
    aliases: Mapping[str, str] | None = None,
) -> list[tuple[str, float]]:
    """The ``k`` most popular items not excluded (fewer if the list runs out); with
    ``aliases``, named by canonical id and each once."""
    if aliases:
        chosen: list[tuple[str, float]] = []
        seen: set[str] = set()
        for item, score in popular:
            item = aliases.get(item, item)
            if item not in exclude and item not in seen:
                seen.add(item)
                chosen.append((item, score))
                if len(chosen) == k:
                    break
        return chosen
    if not exclude:
        return list(popular[:k])
    return [(item, score) for item, score in popular if item not in exclude][:k]


@dataclass
class _Group:
    """Queries of one batch that search together (RecallEngine._groups)."""

    depth: int
    nprobe: int
    refine_factor: int | None
    members: list[int]  # the queries' positions in the batch
    excluded: list[np.ndarray]  # per member: internal ids of its excluded items in the index


_NONE_EXCLUDED = np.empty(0, dtype=np.int64)


class RecallEngine:
    def __init__(
        self,
        holder: IndexHolder,
        vectors: UserVectorStore,
        max_k: int,
        nprobe: int | None = None,
        *,
        max_nprobe: int = 1024,
        max_refine_factor: int = 64,
        breaker: CircuitBreaker | None = None,
        failure_mode: FailureMode = "unavailable",
        inline_search_codes: int = 0,
        cheap_search_codes: int = 0,
        canonical_maps: CanonicalMaps | None = None,
        search_threads: int = 1,
        faiss_threads: int = 1,
    ) -> None:
        """``breaker``: guards the Redis reads (None: every call asks Redis).
        ``failure_mode``: what a failed read gives, degraded answers ("fallback") or
        BackendUnavailable ("unavailable"). ``inline_search_codes``: searches expected to
        scan at most this many PQ codes run on the event loop, larger ones in a thread.
        ``cheap_search_codes``: an index whose one query scans at most this many codes at
        the served nprobe is cheap to search (``searches_are_cheap``; 0: never).
        ``canonical_maps``: duplicate maps by model version (default: read from the
        holder's artifact store, ``models/<version>/duplicates.json``).
        ``search_threads``: threads that run the searches that leave the loop (at most
        this many at once); ``faiss_threads``: OpenMP threads of each of them."""
        self.holder = holder
        self.vectors = vectors
        self.max_k = max_k
        self.nprobe = nprobe
        self.max_nprobe = max_nprobe
        self.max_refine_factor = max_refine_factor
        self.breaker = breaker
        self.failure_mode = failure_mode
        self.inline_search_codes = inline_search_codes
        self.cheap_search_codes = cheap_search_codes
        self.canonical_maps = canonical_maps or CanonicalMaps(holder.store)
        # Set by serving.fresh_segment.FreshSegmentPoller; None: nothing fresh or denied.
        self.fresh_segment: FreshSegment | None = None
        # Searches that leave the event loop run here, not in asyncio's default executor:
        # OpenMP's thread count is per calling thread (omp_set_num_threads on the loop
        # thread does not reach a pool thread, which would start one OpenMP thread per
        # core), and a bounded pool keeps concurrent batches from thrashing the cores
        # they share with gRPC (bench/README.md: 1M items, 6 pool threads searching at
        # once took ~1.5 ms of CPU per query against 0.9 ms alone).
        self.search_threads = search_threads
        self.faiss_threads = faiss_threads
        # Set by the server: how many Recall/BatchRecall calls it is serving now (None:
        # unknown, so no search runs inline for being alone).
        self.calls_in_flight: Callable[[], int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        # (index version, model version) → the model's canonical map and whether it renames
        # an id of the index (never, by construction; checked once per pair and map).
        self._renames_index_ids: dict[tuple[str, str], tuple[Mapping[str, str], bool]] = {}

    def validate(self, query: RecallQuery) -> None:
        """Raises InvalidRequest for a query out of this server's bounds."""
        validate_query(query, self.max_k, self.max_nprobe, self.max_refine_factor)

    async def recall(self, queries: Sequence[RecallQuery]) -> list[RecallResult]:
        """Serve several queries against one index snapshot; results in query order.
        Any query's error (invalid, corrupt vector) fails the whole call."""
        for i, query in enumerate(queries):
            try:
                self.validate(query)
            except InvalidRequest as exc:
                if len(queries) == 1:
                    raise
                raise InvalidRequest(f"requests[{i}]: {exc}") from exc
        results = []
        for result in await self.recall_each(queries):
            if isinstance(result, RecallError):
                raise result
            results.append(result)
        return results

    async def recall_each(self, queries: Sequence[RecallQuery]) -> list[RecallResult | RecallError]:
        """Serve already validated queries (one Redis round trip, one search per group);
        one result or error per query, in order. Errors that concern every query (no
        index, Redis down in ``unavailable`` mode) are raised."""
        loaded = self.holder.current()
        canonical = await self.canonical_maps.for_model(loaded.model_version)
        states, degraded = await self._read_users(loaded, queries)
        # The seen filter is one more exclusion: from here on, history ∪ exclude_item_ids,
        # each id folded into its canonical id (the index holds canonical ids only).
        queries = [
            dataclasses.replace(
                q, exclude=canonical.canonical_set(q.exclude | frozenset(s.history))
            )
            if s.history or (canonical.groups and q.exclude)
            else q
            for q, s in zip(queries, states, strict=True)
        ]
        segment = self.fresh_segment
        if segment is not None and segment.deny:
            queries = [dataclasses.replace(q, exclude=q.exclude | segment.deny) for q in queries]
        aliases = canonical.aliases if canonical.groups else None
        with_vector = [i for i, s in enumerate(states) if s.vector is not None]
        found: dict[int, Sequence[tuple[str, float]]] = {}
        if with_vector:
            matrix = np.stack([states[i].vector for i in with_vector])  # type: ignore[misc]
            batch = [queries[i] for i in with_vector]
            inline = self._inline(loaded, batch)
            groups = self._groups(loaded, batch)
            found_rows = await self._search_groups_on(inline, loaded, matrix, groups)
            rows, short = self._select(loaded, batch, groups, found_rows, aliases)
            if short:
                # Rare: a query whose probed lists held fewer than k usable results is
                # searched again over every list (as expensive as the catalogue is large,
                # so off the loop like any search).
                wide = [
                    _Group(g.depth, loaded.manifest.nlist, g.refine_factor, [r], [excluded])
                    for r, g, excluded in short
                ]
                found_wide = await self._search_groups_on(inline, loaded, matrix, wide)
                widened, _ = self._select(loaded, batch, wide, found_wide, aliases)
                for r, _group, _excluded in short:
                    rows[r] = widened[r]
            if (
                segment is not None
                and segment.size
                and segment.model_version == loaded.model_version
            ):
                rows = segment.merge_rows(
                    rows, matrix, [q.exclude for q in batch], [q.k for q in batch]
                )
            found = dict(zip(with_vector, rows, strict=True))
        results: list[RecallResult | RecallError] = []
        for i, (query, state) in enumerate(zip(queries, states, strict=True)):
            if i in found:
                results.append(
                    RecallResult(
                        found[i], loaded.model_version, loaded.index_version, Source.USER_VECTOR
                    )
                )
            elif state.error is not None:
                results.append(state.error)
            else:
                results.append(
                    RecallResult(
                        fallback_candidates(loaded.popular, query.exclude, query.k, aliases),
                        loaded.model_version,
                        loaded.index_version,
                        Source.FALLBACK_DEGRADED if degraded else Source.FALLBACK,
                        degraded,
                    )
                )
        return results

    async def _read_users(
        self, loaded: LoadedIndex, queries: Sequence[RecallQuery]
    ) -> tuple[list[UserState], str]:
        """Each query's user state, and "" or the reason the read was skipped or failed
        (then every state is empty)."""
        breaker = self.breaker
        try:
            if breaker is not None and not breaker.allow():
                raise BackendUnavailable(
                    "Redis unavailable: circuit breaker open after repeated failures",
                    reason="circuit_open",
                )
            try:
                states = await self.vectors.read_users(
                    loaded.model_version,
                    [q.user_id for q in queries],
                    loaded.manifest.dim,
                    [q.exclude_seen for q in queries],
                )
            except BackendUnavailable:
                if breaker is not None:
                    breaker.record_failure()
                raise
            if breaker is not None:
                breaker.record_success()
            return states, ""
        except BackendUnavailable as exc:
            if self.failure_mode == "unavailable":
                raise
            return [UserState(None, [])] * len(queries), exc.reason

    def _search_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.search_threads,
                thread_name_prefix="recall-search",
                # A per-thread OpenMP setting: every search thread makes its own.
                initializer=faiss.omp_set_num_threads,
                initargs=(self.faiss_threads,),
            )
        return self._executor

    def close(self) -> None:
        """Stop the search threads (after the last call; a later search starts them again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _nprobe(self, loaded: LoadedIndex, query: RecallQuery) -> int:
        return query.nprobe or self.nprobe or loaded.manifest.nprobe

    def _codes(self, loaded: LoadedIndex, nprobe: int) -> float:
        """PQ codes one query scans at ``nprobe`` (nprobe × items per list, on average)."""
        nlist = max(1, loaded.manifest.nlist)
        return min(nprobe, nlist) * loaded.item_count / nlist

    def _inline(self, loaded: LoadedIndex, queries: Sequence[RecallQuery]) -> bool:
        """Whether the search runs on the event loop rather than in a search thread.

        Under load the thread wins: the loop takes in the next calls while this batch
        searches, and they make the next batch larger. A lone call loses: the hop and the
        loop's wake-up cost it ~0.25 ms (bench/README.md). So a cheap search
        (``cheap_search_codes``) whose calls are all the server is serving runs inline, as
        does any search expected to scan at most ``inline_search_codes`` codes."""
        if (
            self.calls_in_flight is not None
            and self.calls_in_flight() <= len(queries)
            and self._cheap(loaded)
        ):
            return True
        if self.inline_search_codes <= 0:
            return False
        codes = sum(self._codes(loaded, self._nprobe(loaded, q)) for q in queries)
        return codes <= self.inline_search_codes

    def _cheap(self, loaded: LoadedIndex) -> bool:
        if self.cheap_search_codes <= 0:
            return False
        return self._codes(loaded, self.nprobe or loaded.manifest.nprobe) <= self.cheap_search_codes

    def searches_are_cheap(self) -> bool:
        """Whether a query against the loaded index scans at most ``cheap_search_codes``
        codes at the served nprobe (False with no index loaded). The server then lets one
        batch run at a time: with cheap searches the request path's own work dominates,
        and calls that wait for the running batch make the next one larger (fewer loop
        turns per call; bench/README.md: +10-45 % QPS on the demo index at 8-64 in flight)."""
        loaded = self.holder.current_or_none()
        return loaded is not None and self._cheap(loaded)

    def _search_rows(
        self,
        loaded: LoadedIndex,
        matrix: np.ndarray,
        depth: int,
        nprobe: int,
        refine_factor: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if refine_factor is not None and _SEARCH_TAKES_K_FACTOR:
            # Typed loosely so that this module checks against either LoadedIndex.search.
            search: Callable[..., tuple[np.ndarray, np.ndarray]] = loaded.search
            return search(matrix, depth, nprobe, k_factor=refine_factor)
        return loaded.search(matrix, depth, nprobe)

    def _groups(self, loaded: LoadedIndex, queries: Sequence[RecallQuery]) -> list[_Group]:
        """The queries' search groups: equal (depth, nprobe, refine factor) search
        together, usually all of them; depth = k + the query's excluded items in the
        index (at most the catalogue)."""
        groups: dict[tuple[int, int, int | None], _Group] = {}
        internal = loaded.internal_ids
        for r, query in enumerate(queries):
            excluded = (
                np.fromiter((internal[e] for e in query.exclude if e in internal), dtype=np.int64)
                if query.exclude
                else _NONE_EXCLUDED
            )
            depth = min(loaded.item_count, query.k + len(excluded))
            key = (depth, self._nprobe(loaded, query), query.refine_factor)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(depth, key[1], query.refine_factor, [], [])
            group.members.append(r)
            group.excluded.append(excluded)
        return list(groups.values())

    async def _search_groups_on(
        self,
        inline: bool,
        loaded: LoadedIndex,
        matrix: np.ndarray,
        groups: Sequence[_Group],
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``_search_groups`` on the event loop (``inline``) or in a search thread. Only
        Faiss leaves the loop: candidate selection is Python, which in the thread would
        wait for the GIL the loop holds."""
        if inline:
            return self._search_groups(loaded, matrix, groups)
        return await asyncio.get_running_loop().run_in_executor(
            self._search_executor(), self._search_groups, loaded, matrix, groups
        )

    def _search_groups(
        self, loaded: LoadedIndex, matrix: np.ndarray, groups: Sequence[_Group]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Blocking: one Faiss search per group, (scores, ids) [len(members), depth] each.

        matrix: [queries, dim] float32 user vectors."""
        found = []
        for group in groups:
            block = matrix if len(group.members) == len(matrix) else matrix[group.members]
            found.append(
                self._search_rows(loaded, block, group.depth, group.nprobe, group.refine_factor)
            )
        return found

    def _select(
        self,
        loaded: LoadedIndex,
        queries: Sequence[RecallQuery],
        groups: Sequence[_Group],
        found: Sequence[tuple[np.ndarray, np.ndarray]],
        aliases: Mapping[str, str] | None = None,
    ) -> tuple[list[Sequence[tuple[str, float]]], list[tuple[int, _Group, np.ndarray]]]:
        """Each query's candidates from its group's search (queries of no group get []),
        and the (position, group, excluded ids) of every query whose search held fewer
        than k usable results.

        Rows are picked with numpy and written as wire bytes in one go per group
        (``EncodedCandidates``); a row holding an id without a wire-table entry, or an
        index whose ids the canonical map renames, goes through ``select_candidates``."""
        rows: list[Sequence[tuple[str, float]]] = [[] for _ in queries]
        short: list[tuple[int, _Group, np.ndarray]] = []
        wire = self._wire_table(loaded, aliases)
        for group, (scores, ids) in zip(groups, found, strict=True):
            full = np.all(ids >= 0, axis=1)  # rows without -1 padding
            encode: list[tuple[int, np.ndarray, np.ndarray]] = []
            for j, (r, excluded) in enumerate(zip(group.members, group.excluded, strict=True)):
                query = queries[r]
                row_ids, row_scores = ids[j], scores[j]
                if wire is None:
                    rows[r] = select_candidates(
                        row_ids, row_scores, loaded.item_ids, query.exclude, query.k, aliases
                    )
                    found_count = len(rows[r])
                else:
                    if len(excluded) or not full[j]:
                        # Faiss rows hold each internal id at most once, so dropping the -1
                        # padding and the excluded ids leaves distinct candidates.
                        keep = row_ids >= 0
                        if len(excluded):
                            keep &= ~np.isin(row_ids, excluded)
                        picked = np.flatnonzero(keep)[: query.k]
                        row_ids, row_scores = row_ids[picked], row_scores[picked]
                    else:
                        row_ids, row_scores = row_ids[: query.k], row_scores[: query.k]
                    found_count = len(row_ids)
                    if wire.all_encodable or wire.encodable(row_ids):
                        encode.append((r, row_ids, row_scores))
                    else:
                        rows[r] = select_candidates(
                            row_ids, row_scores, loaded.item_ids, frozenset(), query.k
                        )
                if found_count < min(query.k, loaded.item_count - len(excluded)):
                    short.append((r, group, excluded))
            if encode and wire is not None:  # (encode is only filled with a table)
                wires = wire.encode(
                    np.concatenate([e[1] for e in encode]),
                    np.concatenate([e[2] for e in encode]),
                    [len(e[1]) for e in encode],
                )
                for (r, row_ids, row_scores), data in zip(encode, wires, strict=True):
                    rows[r] = EncodedCandidates(data, row_ids, row_scores, loaded.item_ids)
        return rows, short

    def _wire_table(
        self, loaded: LoadedIndex, aliases: Mapping[str, str] | None
    ) -> CandidateWireTable | None:
        """The index's wire table, or None where answers must name items through
        ``aliases`` (an index holding an id the canonical map renames: never, as indexes
        hold canonical ids only, but then the slow path keeps answers canonical)."""
        if aliases:
            key = (loaded.index_version, loaded.model_version)
            cached = self._renames_index_ids.get(key)
            if cached is None or cached[0] is not aliases:
                cached = (aliases, any(item in aliases for item in loaded.item_ids))
                if len(self._renames_index_ids) >= 16:
                    self._renames_index_ids.clear()
                self._renames_index_ids[key] = cached
            if cached[1]:
                return None
        wire = loaded.candidate_wire
        return wire if wire.distinct else None
