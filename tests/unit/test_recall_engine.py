"""serving.recall_engine: the pure candidate-selection functions, and RecallEngine end to end
over a real (small) verified index with a fake user-vector store."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from artifacts.store import ArtifactStore
from serving.api.recall.v1 import recall_pb2
from serving.circuit_breaker import CircuitBreaker
from serving.errors import BackendUnavailable, CorruptUserVector, InvalidRequest, NoIndexLoaded
from serving.index.artifact import INDEX_KIND
from serving.index.loaded import LoadedIndex
from serving.index.search import search_parameters
from serving.index_holder import IndexHolder
from serving.model_artifact import ModelArtifact
from serving.recall_engine import (
    RecallEngine,
    RecallQuery,
    RecallResult,
    Source,
    fallback_candidates,
    select_candidates,
    validate_query,
)
from serving.response_encoding import EncodedCandidates
from serving.server import _response_bytes
from serving.user_vectors import UserState
from tests.unit.helpers import SMALL_PARAMS, write_index, write_model_artifact

ITEMS = ["a", "b", "c", "d", "e"]


# --- select_candidates / fallback_candidates / validate_query ----------------------------


def test_select_candidates_skips_missing_excluded_and_duplicate_ids() -> None:
    ids = np.array([2, -1, 0, 2, 4, 1, 3])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], dtype=np.float32)
    got = select_candidates(ids, scores, ITEMS, frozenset({"e"}), k=3)
    assert got == [("c", pytest.approx(0.9)), ("a", pytest.approx(0.7)), ("b", pytest.approx(0.4))]
    assert all(isinstance(score, float) for _, score in got)


def test_select_candidates_stops_at_k() -> None:
    ids = np.arange(5)
    scores = np.linspace(1.0, 0.0, 5)
    assert [i for i, _ in select_candidates(ids, scores, ITEMS, frozenset(), k=2)] == ["a", "b"]
    assert len(select_candidates(ids, scores, ITEMS, frozenset(), k=10)) == 5


def test_select_candidates_dedupes_external_ids() -> None:
    # Two internal ids mapping to the same external id are returned once.
    got = select_candidates(
        np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0]), ["x", "x", "y"], frozenset(), k=3
    )
    assert got == [("x", 3.0), ("y", 1.0)]


def test_select_candidates_all_missing_is_empty() -> None:
    assert select_candidates(np.full(4, -1), np.zeros(4), ITEMS, frozenset(), k=4) == []


def test_fallback_candidates_keeps_order_and_skips_excluded() -> None:
    popular = [("p1", 0.4), ("p2", 0.3), ("p3", 0.2), ("p4", 0.1)]
    assert fallback_candidates(popular, frozenset(), 2) == [("p1", 0.4), ("p2", 0.3)]
    assert fallback_candidates(popular, frozenset({"p1", "p3"}), 3) == [("p2", 0.3), ("p4", 0.1)]
    assert fallback_candidates(popular, frozenset(), 10) == popular
    assert fallback_candidates([], frozenset(), 3) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RecallQuery(user_id="", k=5), "user_id"),
        (RecallQuery(user_id="u", k=0), "k must be"),
        (RecallQuery(user_id="u", k=-1), "k must be"),
        (RecallQuery(user_id="u", k=101), "k must be"),
        (RecallQuery(user_id="u" * 513, k=5), "longer than 512 bytes"),
        (
            RecallQuery(user_id="u", k=5, exclude=frozenset(map(str, range(10_001)))),
            "at most 10000",
        ),
    ],
)
def test_validate_query_rejects(query: RecallQuery, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_query(query, max_k=100)


@pytest.mark.parametrize("k", [1, 100])
def test_validate_query_accepts_bounds(k: int) -> None:
    validate_query(RecallQuery(user_id="u", k=k), max_k=100)
    validate_query(
        RecallQuery(user_id="é" * 256, k=k, exclude=frozenset(map(str, range(10_000)))), max_k=100
    )


# --- RecallEngine end to end -----------------------------------------------------------


class FakeUserVectors:
    """Stands in for UserVectorStore: vectors per (model version, user id), histories per
    user id."""

    def __init__(self, model_version: str, vectors: dict[str, np.ndarray]) -> None:
        self.model_version = model_version
        self.vectors = vectors
        self.histories: dict[str, list[str]] = {}
        self.calls: list[tuple[str, list[str], int]] = []
        self.history_asked: list[list[bool]] = []

    async def read_users(
        self, model_version: str, user_ids: Sequence[str], dim: int, with_history: Sequence[bool]
    ) -> list[UserState]:
        self.calls.append((model_version, list(user_ids), dim))
        self.history_asked.append(list(with_history))
        return [
            UserState(
                self.vectors.get(u) if model_version == self.model_version else None,
                self.histories.get(u, []) if h else [],
            )
            for u, h in zip(user_ids, with_history, strict=True)
        ]


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.model: ModelArtifact = write_model_artifact(tmp_path / "model")
        index_dir = write_index(self.model, tmp_path / "index", "20261123T080000Z-0a0b0c")
        self.store = ArtifactStore(tmp_path / "store")
        self.store.publish(INDEX_KIND, "20261123T080000Z-0a0b0c", index_dir)
        self.holder = IndexHolder(self.store)
        asyncio.run(self.holder.load(None))
        users = self.model.user_vectors(mmap=False)
        self.user_vectors = {u: users[i] for i, u in enumerate(self.model.user_ids())}
        self.vectors = FakeUserVectors(self.model.model_version, self.user_vectors)

    @property
    def loaded(self) -> LoadedIndex:
        return self.holder.current()

    def engine(self, max_k: int = 100, nprobe: int | None = None) -> RecallEngine:
        return RecallEngine(self.holder, self.vectors, max_k=max_k, nprobe=nprobe)  # type: ignore[arg-type]

    def recall(self, *queries: RecallQuery, nprobe: int | None = None) -> list[RecallResult]:
        return asyncio.run(self.engine(nprobe=nprobe).recall(list(queries)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("engine"))


def assert_well_formed(result: RecallResult, k: int) -> None:
    ids = [i for i, _ in result.candidates]
    scores = [s for _, s in result.candidates]
    assert len(ids) == k
    assert len(set(ids)) == k
    assert all(a >= b for a, b in itertools.pairwise(scores)), scores


def test_known_user_gets_k_distinct_ranked_candidates(setup: Setup) -> None:
    [result] = setup.recall(RecallQuery(user_id="user-3", k=10))
    assert result.source is Source.USER_VECTOR
    assert result.model_version == setup.model.model_version
    assert result.index_version == "20261123T080000Z-0a0b0c"
    assert_well_formed(result, 10)
    assert set(i for i, _ in result.candidates) <= set(setup.model.item_ids())
    assert setup.vectors.calls[-1] == (setup.model.model_version, ["user-3"], 16)


def test_known_user_candidates_are_near_the_exact_neighbours(setup: Setup) -> None:
    items, ids = setup.model.item_vectors(), setup.model.item_ids()
    hits = 0
    for user in ("user-0", "user-1", "user-2", "user-3", "user-4"):
        [result] = setup.recall(RecallQuery(user_id=user, k=10), nprobe=SMALL_PARAMS.nlist)
        exact = {ids[i] for i in np.argsort(-(items @ setup.user_vectors[user]))[:10]}
        hits += len(exact & {i for i, _ in result.candidates})
    assert hits / 50 >= 0.6


def test_excluded_items_never_returned_and_k_still_filled(setup: Setup) -> None:
    [top] = setup.recall(RecallQuery(user_id="user-5", k=10))
    excluded = frozenset(i for i, _ in top.candidates[:5]) | {"not-in-catalog"}

    [result] = setup.recall(RecallQuery(user_id="user-5", k=10, exclude=excluded))

    assert result.source is Source.USER_VECTOR
    assert_well_formed(result, 10)
    returned = {i for i, _ in result.candidates}
    assert not returned & excluded
    # The non-excluded part of the previous top-10 is still there, and still first.
    kept = [i for i, _ in top.candidates if i not in excluded]
    assert [i for i, _ in result.candidates[: len(kept)]] == kept


def test_excluding_every_item_in_the_probed_list_falls_back_to_a_wider_search(
    setup: Setup,
) -> None:
    loaded = setup.loaded
    query_vector = setup.user_vectors["user-6"][None, :]
    _, ids = loaded.search(query_vector, loaded.item_count, nprobe=1)
    in_first_list = frozenset(loaded.item_ids[i] for i in ids[0] if i >= 0)
    assert 0 < len(in_first_list) < loaded.item_count - 10

    [result] = setup.recall(RecallQuery(user_id="user-6", k=10, exclude=in_first_list), nprobe=1)

    assert result.source is Source.USER_VECTOR
    assert_well_formed(result, 10)
    assert not {i for i, _ in result.candidates} & in_first_list
    # In a batch, only that query is searched again; its neighbours keep their answers.
    other = RecallQuery(user_id="user-5", k=10)
    together = setup.recall(
        other, RecallQuery(user_id="user-6", k=10, exclude=in_first_list), other, nprobe=1
    )
    assert together == [setup.recall(other, nprobe=1)[0], result, setup.recall(other, nprobe=1)[0]]


def test_k_larger_than_what_is_left_returns_everything_left(setup: Setup) -> None:
    all_items = setup.model.item_ids()
    excluded = frozenset(all_items[:-3])
    [result] = setup.recall(RecallQuery(user_id="user-7", k=10, exclude=excluded))
    assert sorted(i for i, _ in result.candidates) == sorted(all_items[-3:])


def test_unknown_user_gets_fallback_in_popularity_order(setup: Setup) -> None:
    [result] = setup.recall(RecallQuery(user_id="nobody", k=5, exclude=frozenset({"item-1"})))
    assert result.source is Source.FALLBACK
    assert [i for i, _ in result.candidates] == ["item-0", "item-2", "item-3", "item-4", "item-5"]
    shares = [s for _, s in result.candidates]
    assert shares == sorted(shares, reverse=True)
    assert shares[0] == pytest.approx(setup.loaded.popular[0][1])
    assert result.model_version == setup.model.model_version


def test_mixed_batch_keeps_query_order(setup: Setup) -> None:
    queries = [
        RecallQuery(user_id="nobody", k=3),
        RecallQuery(user_id="user-1", k=4),
        RecallQuery(user_id="user-2", k=2, exclude=frozenset({"item-0"})),
        RecallQuery(user_id="also-nobody", k=2),
    ]
    results = setup.recall(*queries)
    assert [r.source for r in results] == [
        Source.FALLBACK,
        Source.USER_VECTOR,
        Source.USER_VECTOR,
        Source.FALLBACK,
    ]
    assert [len(r.candidates) for r in results] == [3, 4, 2, 2]
    # Each user-vector row equals what that query gets alone.
    [alone] = setup.recall(queries[1])
    assert results[1].candidates == alone.candidates
    assert setup.vectors.calls[-2][1] == ["nobody", "user-1", "user-2", "also-nobody"]


def test_invalid_query_in_batch_rejects_whole_batch_before_lookup(setup: Setup) -> None:
    calls = len(setup.vectors.calls)
    with pytest.raises(InvalidRequest):
        setup.recall(RecallQuery(user_id="user-1", k=5), RecallQuery(user_id="user-2", k=101))
    assert len(setup.vectors.calls) == calls


def test_exclude_seen_removes_the_history_and_still_returns_k(setup: Setup) -> None:
    [top] = setup.recall(RecallQuery(user_id="user-8", k=10))
    seen = [i for i, _ in top.candidates[:4]] + ["not-in-catalog"]
    setup.vectors.histories["user-8"] = seen
    try:
        [plain] = setup.recall(RecallQuery(user_id="user-8", k=10))
        [result] = setup.recall(
            RecallQuery(
                user_id="user-8", k=10, exclude=frozenset({top.candidates[4][0]}), exclude_seen=True
            )
        )
    finally:
        del setup.vectors.histories["user-8"]
    assert plain.candidates == top.candidates  # the history only matters when asked for
    assert setup.vectors.history_asked[-1] == [True]
    assert_well_formed(result, 10)
    returned = [i for i, _ in result.candidates]
    assert not set(returned) & {*seen, top.candidates[4][0]}
    assert returned[:5] == [i for i, _ in top.candidates[5:]]


def test_exclude_seen_in_a_batch_and_for_fallback_answers(setup: Setup) -> None:
    popular = [i for i, _ in setup.loaded.popular]
    setup.vectors.histories.update({"nobody": popular[:2], "user-1": ["item-0"]})
    try:
        results = setup.recall(
            RecallQuery(user_id="nobody", k=3, exclude_seen=True),
            RecallQuery(user_id="user-1", k=3),
            RecallQuery(user_id="nobody", k=3),
        )
    finally:
        setup.vectors.histories.clear()
    assert setup.vectors.history_asked[-1] == [True, False, False]
    assert results[0].source is Source.FALLBACK
    assert [i for i, _ in results[0].candidates] == popular[2:5]
    assert [i for i, _ in results[2].candidates] == popular[:3]


def test_no_index_loaded_raises(tmp_path: Path) -> None:
    holder = IndexHolder(ArtifactStore(tmp_path / "empty"))
    engine = RecallEngine(holder, FakeUserVectors("v", {}), max_k=10)  # type: ignore[arg-type]
    with pytest.raises(NoIndexLoaded):
        asyncio.run(engine.recall([RecallQuery(user_id="u", k=1)]))


def test_searches_are_cheap_compares_the_codes_one_query_scans_with_the_threshold(
    setup: Setup, tmp_path: Path
) -> None:
    """One query scans nprobe × items/nlist codes at the served nprobe (the server's
    setting, else the manifest's): at most ``cheap_search_codes`` is cheap; 0 or no
    index loaded is never cheap."""
    loaded = setup.loaded
    nlist, nprobe = loaded.manifest.nlist, loaded.manifest.nprobe
    assert nprobe < nlist
    codes = nprobe * loaded.item_count / nlist

    def cheap(
        threshold: float, nprobe: int | None = None, holder: IndexHolder | None = None
    ) -> bool:
        engine = RecallEngine(
            holder or setup.holder,
            setup.vectors,  # type: ignore[arg-type]
            max_k=10,
            nprobe=nprobe,
            cheap_search_codes=int(threshold),
        )
        return engine.searches_are_cheap()

    assert cheap(codes) and not cheap(codes - 1)
    assert not cheap(codes, nprobe=nlist)  # the server's nprobe counts, not the manifest's
    assert cheap(codes * 2, nprobe=nprobe * 2)
    assert cheap(codes / nprobe, nprobe=1)
    assert not cheap(0)
    assert not cheap(10**9, holder=IndexHolder(ArtifactStore(tmp_path / "empty")))


def test_a_cheap_search_runs_on_the_loop_only_while_its_calls_are_all_in_flight(
    setup: Setup,
) -> None:
    """A thread hop costs a lone call more than a cheap search, but under load the search
    thread frees the loop: a cheap search runs on the event loop's thread only when the
    server serves no call beyond the batch's own (or when RECALL_INLINE_SEARCH_CODES
    covers it); an expensive one, or one with unknown load, goes to a search thread."""
    loaded = setup.loaded
    codes = loaded.manifest.nprobe * loaded.item_count / loaded.manifest.nlist
    queries = [RecallQuery(user_id="user-1", k=5), RecallQuery(user_id="user-2", k=5)]

    def search_thread(in_flight: int | None, cheap_codes: float, inline_codes: float = 0) -> str:
        engine = RecallEngine(
            setup.holder,
            setup.vectors,  # type: ignore[arg-type]
            max_k=10,
            cheap_search_codes=int(cheap_codes),
            inline_search_codes=int(inline_codes),
        )
        if in_flight is not None:
            engine.calls_in_flight = lambda: in_flight
        threads: list[str] = []
        search = engine._search_groups

        def spy(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return search(*args)

        engine._search_groups = spy  # type: ignore[method-assign]
        try:
            answers = asyncio.run(engine.recall(queries))
        finally:
            engine.close()
        assert answers == asyncio.run(setup.engine().recall(queries))
        assert len(threads) == 1
        return "loop" if threads[0] == threading.main_thread().name else "thread"

    assert search_thread(in_flight=2, cheap_codes=codes) == "loop"
    assert search_thread(in_flight=1, cheap_codes=codes) == "loop"
    assert search_thread(in_flight=3, cheap_codes=codes) == "thread"  # another call waits
    assert search_thread(in_flight=2, cheap_codes=codes - 1) == "thread"  # not cheap
    assert search_thread(in_flight=None, cheap_codes=codes) == "thread"
    assert search_thread(in_flight=3, cheap_codes=0, inline_codes=2 * codes) == "loop"
    assert search_thread(in_flight=3, cheap_codes=0, inline_codes=2 * codes - 1) == "thread"


# --- per-request options, batch independence, degraded answers ---------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (RecallQuery(user_id="u", k=5, nprobe=0), "nprobe must be"),
        (RecallQuery(user_id="u", k=5, nprobe=-3), "nprobe must be"),
        (RecallQuery(user_id="u", k=5, nprobe=65), "nprobe must be"),
        (RecallQuery(user_id="u", k=5, refine_factor=0), "refine_factor must be"),
        (RecallQuery(user_id="u", k=5, refine_factor=9), "refine_factor must be"),
    ],
)
def test_search_options_out_of_bounds_are_invalid(query: RecallQuery, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_query(query, max_k=100, max_nprobe=64, max_refine_factor=8)
    validate_query(
        RecallQuery(user_id="u", k=5, nprobe=64, refine_factor=8),
        max_k=100,
        max_nprobe=64,
        max_refine_factor=8,
    )


def test_answers_do_not_depend_on_the_batch_they_share(setup: Setup) -> None:
    queries = [
        RecallQuery(user_id="user-1", k=10),
        RecallQuery(user_id="user-2", k=3, exclude=frozenset({"item-0", "item-1"})),
        RecallQuery(user_id="user-3", k=7, nprobe=1),
        RecallQuery(user_id="user-4", k=10, nprobe=SMALL_PARAMS.nlist, refine_factor=2),
        RecallQuery(user_id="nobody", k=4),
    ]
    together = setup.recall(*queries)
    alone = [setup.recall(q)[0] for q in queries]
    assert together == alone


def test_answers_written_from_the_wire_table_equal_select_candidates_ones(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numpy path (rows picked and written as bytes per group) against the per-candidate
    path it replaces, on the same searches: exclusions, -1 padding (nprobe 1, deep k),
    the wider re-search, k beyond the catalogue, and a batch mixing them."""
    items = setup.model.item_ids()
    history = items[3:9]
    monkeypatch.setitem(setup.vectors.histories, "user-2", history)
    queries = [
        RecallQuery(user_id="user-1", k=10),
        RecallQuery(user_id="user-2", k=5, exclude=frozenset(items[:4]) | {"gone"}),
        RecallQuery(user_id="user-2", k=8, exclude_seen=True),
        RecallQuery(user_id="user-3", k=40, nprobe=1),
        RecallQuery(user_id="user-4", k=100, exclude=frozenset(items[:-3])),
        RecallQuery(user_id="user-5", k=len(items) + 5),
    ]
    fast = asyncio.run(setup.engine(max_k=1000).recall(queries))
    assert all(isinstance(r.candidates, EncodedCandidates) for r in fast[:4])
    monkeypatch.setattr(RecallEngine, "_wire_table", lambda self, loaded, aliases: None)
    slow = asyncio.run(setup.engine(max_k=1000).recall(queries))
    assert not any(isinstance(r.candidates, EncodedCandidates) for r in slow)
    assert fast == slow
    for f, s in zip(fast, slow, strict=True):
        assert _response_bytes(f) != b"" and recall_pb2.RecallResponse.FromString(
            _response_bytes(f)
        ) == recall_pb2.RecallResponse.FromString(_response_bytes(s))
    assert not {i for i, _ in fast[2].candidates} & set(history)
    assert len(fast[3].candidates) == 40 and len(fast[5].candidates) == len(items)


def test_an_index_whose_ids_the_canonical_map_renames_is_answered_per_candidate(
    setup: Setup,
) -> None:
    engine = setup.engine()
    loaded = setup.loaded
    assert engine._wire_table(loaded, None) is loaded.candidate_wire
    assert engine._wire_table(loaded, {"not-an-item": "x"}) is loaded.candidate_wire
    assert engine._wire_table(loaded, {loaded.item_ids[0]: "x"}) is None


class FailingUserVectors(FakeUserVectors):
    """Redis that fails (or times out) on every read, counting the reads."""

    def __init__(self, reason: str) -> None:
        super().__init__("v", {})
        self.reason = reason
        self.reads = 0

    async def read_users(
        self, model_version: str, user_ids: Sequence[str], dim: int, with_history: Sequence[bool]
    ) -> list[UserState]:
        self.reads += 1
        raise BackendUnavailable("Redis unavailable: refused", reason=self.reason)


def test_redis_failure_gives_marked_fallback_and_the_breaker_stops_asking(setup: Setup) -> None:
    failing = FailingUserVectors("redis_timeout")
    breaker = CircuitBreaker(failures=2, reset_s=60)
    engine = RecallEngine(
        setup.holder,
        failing,  # type: ignore[arg-type]
        max_k=100,
        breaker=breaker,
        failure_mode="fallback",
    )
    query = RecallQuery(user_id="user-1", k=3, exclude=frozenset({"item-0"}), exclude_seen=True)
    first, second, third = (asyncio.run(engine.recall([query]))[0] for _ in range(3))
    assert first.source is Source.FALLBACK_DEGRADED
    assert first.degraded_reason == second.degraded_reason == "redis_timeout"
    assert third.degraded_reason == "circuit_open"
    assert failing.reads == 2  # the open breaker answered the third call without Redis
    popular = [i for i, _ in setup.loaded.popular if i != "item-0"]
    assert [i for i, _ in third.candidates] == popular[:3]


def test_unavailable_mode_fails_the_call(setup: Setup) -> None:
    engine = RecallEngine(
        setup.holder,
        FailingUserVectors("redis_error"),  # type: ignore[arg-type]
        max_k=100,
        failure_mode="unavailable",
    )
    with pytest.raises(BackendUnavailable):
        asyncio.run(engine.recall([RecallQuery(user_id="user-1", k=3)]))


def test_a_corrupt_vector_fails_only_its_own_query(setup: Setup) -> None:
    class OneCorrupt(FakeUserVectors):
        async def read_users(
            self,
            model_version: str,
            user_ids: Sequence[str],
            dim: int,
            with_history: Sequence[bool],
        ) -> list[UserState]:
            states = await super().read_users(model_version, user_ids, dim, with_history)
            return [
                UserState(None, [], CorruptUserVector("bad")) if u == "user-2" else s
                for u, s in zip(user_ids, states, strict=True)
            ]

    vectors = OneCorrupt(setup.model.model_version, setup.user_vectors)
    engine = RecallEngine(setup.holder, vectors, max_k=100)  # type: ignore[arg-type]
    each = asyncio.run(
        engine.recall_each([RecallQuery(user_id="user-1", k=3), RecallQuery(user_id="user-2", k=3)])
    )
    assert isinstance(each[1], CorruptUserVector)
    assert isinstance(each[0], RecallResult) and each[0].source is Source.USER_VECTOR
    with pytest.raises(CorruptUserVector):  # BatchRecall keeps failing the whole call
        asyncio.run(engine.recall([RecallQuery(user_id="user-2", k=3)]))


def test_search_parameters_are_made_once_per_setting(setup: Setup) -> None:
    loaded = setup.loaded
    first = loaded._search_parameters(3, 2)
    assert loaded._search_parameters(3, 2) is first
    assert loaded._search_parameters(4, 2) is not first
    assert loaded._search_parameters(3, None) is not first
    for nprobe in range(1, 300):
        loaded._search_parameters(nprobe, 1)
    assert len(loaded._parameters) <= 256
    # Shared objects keep each search's own setting.
    query = setup.user_vectors["user-1"][None, :]
    for nprobe in (1, SMALL_PARAMS.nlist, 1):
        scores, ids = loaded.search(query, 10, nprobe)
        fresh = loaded.index.search(
            query, 10, params=search_parameters(loaded.index, nprobe, loaded.manifest.refine_factor)
        )
        assert (ids == fresh[1]).all() and np.allclose(scores, fresh[0])
