"""serving.micro_batcher: coalescing, bounds, per-item errors, deadlines, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from serving.errors import DeadlineExpired, InvalidRequest
from serving.micro_batcher import MicroBatcher


class Recorder:
    """A batch function that squares numbers, fails negative ones, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        return [InvalidRequest(f"bad {i}") if i < 0 else i * i for i in items]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for ``condition`` (polled every millisecond): a loaded machine may take longer
    than a fixed sleep to run a timer. Checks that something did *not* happen keep their
    fixed sleeps (slowness can only hide such a failure, never invent one)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def test_calls_that_arrive_together_share_one_batch_and_get_their_own_results() -> None:
    async def main() -> None:
        fn = Recorder()
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_wait_s=0.001, max_items=64)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert results == [i * i for i in range(10)]
        assert fn.batches == [list(range(10))]

    run(main())


def test_batch_size_is_bounded() -> None:
    async def main() -> None:
        fn = Recorder()
        sizes: list[int] = []
        batcher: MicroBatcher[int, int] = MicroBatcher(
            fn, max_wait_s=0.001, max_items=4, on_batch=sizes.append
        )
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        assert results == [i * i for i in range(10)]
        assert max(sizes) <= 4 and sum(sizes) == 10

    run(main())


def test_one_items_error_fails_only_that_caller() -> None:
    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(Recorder(), max_wait_s=0.001, max_items=8)
        results = await asyncio.gather(
            batcher.submit(2), batcher.submit(-1), batcher.submit(3), return_exceptions=True
        )
        assert results[0] == 4 and results[2] == 9
        assert isinstance(results[1], InvalidRequest)

    run(main())


def test_an_error_of_the_whole_batch_reaches_every_caller() -> None:
    async def broken(items: Sequence[int]) -> list[int | BaseException]:
        raise RuntimeError("index gone")

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(broken, max_wait_s=0.001, max_items=8)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)

    run(main())


def test_while_a_batch_runs_new_calls_wait_at_most_max_wait() -> None:
    async def main() -> None:
        fn = Recorder()
        fn.gate = asyncio.Event()
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_wait_s=0.01, max_items=64)
        first = asyncio.ensure_future(batcher.submit(1))
        await until(lambda: batcher.running == 1)
        assert fn.batches == [[1]]
        later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert fn.batches == [[1]]  # waiting for company
        await until(lambda: len(fn.batches) == 2)
        assert fn.batches == [[1], [2, 3]]  # went after max_wait although batch 1 still runs
        fn.gate.set()
        assert await first == 1
        assert [await f for f in later] == [4, 9]

    run(main())


def test_expired_and_cancelled_items_are_dropped_before_the_batch_runs() -> None:
    async def main() -> None:
        fn = Recorder()
        fn.gate = asyncio.Event()
        dropped: list[str] = []
        batcher: MicroBatcher[int, int] = MicroBatcher(
            fn, max_wait_s=0.02, max_items=64, on_dropped=dropped.append
        )
        loop = asyncio.get_running_loop()
        blocker = asyncio.ensure_future(batcher.submit(0))
        await until(lambda: fn.batches == [[0]])
        expiring = asyncio.ensure_future(batcher.submit(5, deadline=loop.time() + 0.005))
        cancelled = asyncio.ensure_future(batcher.submit(6))
        kept = asyncio.ensure_future(batcher.submit(7, deadline=loop.time() + 5))
        await asyncio.sleep(0.001)
        cancelled.cancel()
        await until(lambda: len(fn.batches) == 2)
        assert fn.batches == [[0], [7]]
        assert sorted(dropped) == ["cancelled", "deadline"]
        with pytest.raises(DeadlineExpired):
            await expiring
        fn.gate.set()
        assert await kept == 49 and await blocker == 0

    run(main())


def test_drain_runs_what_is_pending() -> None:
    async def main() -> None:
        fn = Recorder()
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, max_wait_s=1.0, max_items=64)
        pending = asyncio.ensure_future(batcher.submit(4))
        await asyncio.sleep(0)
        await batcher.drain()
        assert await pending == 16

    run(main())


def test_with_an_idle_wait_calls_arriving_one_by_one_share_a_batch() -> None:
    """gRPC hands calls over one event-loop turn apart: without an idle wait each goes
    alone; with one, the first waits and the others join it."""

    async def spaced(batcher: MicroBatcher[int, int]) -> list[int]:
        async def later(i: int) -> int:
            await asyncio.sleep(0.002 * i)
            return await batcher.submit(i)

        return list(await asyncio.gather(*(later(i) for i in range(4))))

    async def main() -> None:
        alone, waited = Recorder(), Recorder()
        assert await spaced(MicroBatcher(alone, max_wait_s=0.001, max_items=64)) == [0, 1, 4, 9]
        assert len(alone.batches) == 4
        with_wait = MicroBatcher(waited, max_wait_s=0.001, max_items=64, idle_wait_s=0.5)
        assert await spaced(with_wait) == [0, 1, 4, 9]
        assert waited.batches == [[0, 1, 2, 3]]

    run(main())


def test_a_negative_idle_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_wait_s"):
        MicroBatcher(Recorder(), max_wait_s=0.001, max_items=4, idle_wait_s=-1)


def _server(tmp_path: Any, **settings: Any) -> Any:
    """A RecallServer built (not started: nothing listens, Redis is never contacted)."""
    from serving.config import ServerSettings
    from serving.server import RecallServer

    return RecallServer(
        ServerSettings(
            port=0,
            admin_port=0,
            metrics_port=0,
            artifact_root=str(tmp_path),
            redis_url="redis://127.0.0.1:1/0",
            **settings,
        )
    )


def test_the_server_passes_its_idle_wait_setting_to_the_batcher(tmp_path: Any) -> None:
    batcher = _server(tmp_path, batch_idle_wait_ms=2.5).batcher
    assert batcher is not None and batcher.idle_wait_s == pytest.approx(0.0025)


def test_with_max_running_calls_wait_for_a_running_batch_and_go_together() -> None:
    """``max_running=1``: calls that arrive while a batch runs do not start a second one
    after ``max_wait_s``; they go as one batch when the first finishes (or once
    ``max_items`` of them are pending)."""

    async def main() -> None:
        fn = Recorder()
        fn.gate = asyncio.Event()
        batcher: MicroBatcher[int, int] = MicroBatcher(
            fn, max_wait_s=0.001, max_items=3, max_running=1
        )
        first = asyncio.ensure_future(batcher.submit(1))
        await until(lambda: fn.batches == [[1]])
        later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.02)  # well past max_wait
        assert fn.batches == [[1]] and batcher.running == 1
        full = [asyncio.ensure_future(batcher.submit(i)) for i in (4, 5)]
        await until(lambda: len(fn.batches) == 2)
        assert fn.batches == [[1], [2, 3, 4]]  # max_items pending go despite the limit
        fn.gate.set()
        assert await first == 1
        assert [await f for f in later + full] == [4, 9, 16, 25]
        assert fn.batches == [[1], [2, 3, 4], [5]]

    run(main())


def test_a_max_running_function_is_asked_at_every_flush() -> None:
    """A limit given as a function follows it: while it says 1, a call that arrives
    during a running batch waits for it; once it says 2, the next call starts a second
    batch beside the running one."""

    async def main() -> None:
        fn = Recorder()
        fn.gate = asyncio.Event()
        limit = [1]
        batcher: MicroBatcher[int, int] = MicroBatcher(
            fn, max_wait_s=0.001, max_items=8, max_running=lambda: limit[0]
        )
        first = asyncio.ensure_future(batcher.submit(1))
        await until(lambda: fn.batches == [[1]])
        waiting = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.02)
        assert fn.batches == [[1]] and batcher.max_running == 1
        limit[0] = 2
        third = asyncio.ensure_future(batcher.submit(3))
        await until(lambda: len(fn.batches) == 2)
        assert fn.batches == [[1], [2, 3]] and batcher.running == 2
        fn.gate.set()
        assert [await f for f in (first, waiting, third)] == [1, 4, 9]

    run(main())


def test_a_max_running_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_running"):
        MicroBatcher(Recorder(), max_wait_s=0.001, max_items=4, max_running=0)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        Recorder(), max_wait_s=0.001, max_items=4, max_running=lambda: 0
    )
    with pytest.raises(ValueError, match="max_running"):
        assert batcher.max_running


def test_the_server_passes_its_batch_and_search_thread_settings_on(tmp_path: Any) -> None:
    """RECALL_BATCH_MAX_RUNNING reaches the batcher; the engine's search threads run
    Faiss with RECALL_FAISS_THREADS OpenMP threads each (a per-thread OpenMP setting,
    so it must be made in every search thread, not once on the event loop's)."""
    import faiss

    for faiss_threads in (1, 3):
        server = _server(
            tmp_path, batch_max_running=2, search_threads=2, faiss_threads=faiss_threads
        )
        assert server.batcher is not None and server.batcher.max_running == 2
        pool = server.engine._search_executor()
        try:
            assert pool._max_workers == 2
            assert pool.submit(faiss.omp_get_max_threads).result() == faiss_threads
        finally:
            server.engine.close()


def test_the_server_runs_one_batch_while_its_index_is_cheap_to_search(tmp_path: Any) -> None:
    """RECALL_CHEAP_SEARCH_CODES reaches the engine; the batcher's limit is 1 while the
    engine says its index is cheap to search, else RECALL_BATCH_MAX_RUNNING (0: none)."""
    for setting, expensive in ((3, 3), (0, None)):
        server = _server(tmp_path, batch_max_running=setting, cheap_search_codes=1234)
        assert server.engine.cheap_search_codes == 1234
        batcher = server.batcher
        assert batcher is not None
        assert batcher.max_running == expensive  # no index loaded: not cheap
        server.engine.searches_are_cheap = lambda: True
        assert batcher.max_running == 1
        server.engine.searches_are_cheap = lambda: False
        assert batcher.max_running == expensive
