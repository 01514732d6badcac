"""Coalesce concurrent calls into batches: many ``submit(item)`` coroutines, one
``run(items)`` call per batch (for Recall: one Redis round trip and one Faiss search).

Flush rule: while no batch is running, the pending items go at the next turn of the event
loop (so a lone call waits for nothing, and calls that arrived together share a batch) or,
with ``idle_wait_s`` > 0, after that long (calls that arrive one by one, as they do from
gRPC, then share a batch: one Redis round trip per call alone costs a do-nothing gRPC
server ~30 % of its throughput, bench/README.md); while batches run, items wait at most
``max_wait_s`` for company, or, with ``max_running`` batches already running, until one of
them finishes (so calls pile up into one larger batch instead of starting more searches
that fight for the same cores); ``max_items`` pending items flush at once. ``max_running``
may be a function, asked at every flush (the server's limit depends on the index it
serves: one batch for cheap searches, two for expensive ones). Items whose caller
gave up (their future was cancelled, as gRPC does when a client cancels or its deadline
passes) or whose deadline has passed are dropped before the batch runs; the latter get
``DeadlineExpired``.

``run`` returns one result or exception per item, in order: one item's error (e.g. a
corrupt stored vector) fails only that item's caller. An exception raised by ``run`` fails
every item of the batch.

Pure asyncio, no gRPC. Covered by tests/unit/test_micro_batcher.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from serving.errors import DeadlineExpired

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]
RunningLimit = int | None | Callable[[], int | None]


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    deadline: float | None  # event-loop time (loop.time()), None = no deadline


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run: BatchFn[T, R],
        max_wait_s: float,
        max_items: int,
        on_batch: Callable[[int], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
        idle_wait_s: float = 0.0,
        max_running: RunningLimit = None,
    ) -> None:
        """``on_batch(size)`` is called for every batch that runs; ``on_dropped(reason)``
        ("deadline" or "cancelled") for every item dropped before its batch ran.
        ``idle_wait_s``: how long the first item waits for company while no batch runs
        (seconds; 0 = until the next event-loop turn). ``max_running``: most batches
        running at once (None: no limit), or a function returning it at each flush;
        beyond it, items wait until a batch finishes (or ``max_items`` of them are
        pending), whatever ``max_wait_s`` says."""
        if max_wait_s < 0 or max_items < 1 or idle_wait_s < 0:
            raise ValueError("max_wait_s and idle_wait_s must be ≥ 0 and max_items ≥ 1")
        if not callable(max_running):
            _check_limit(max_running)
        self._max_running = max_running
        self._run = run
        self.max_wait_s = max_wait_s
        self.idle_wait_s = idle_wait_s
        self.max_items = max_items
        self._on_batch = on_batch
        self._on_dropped = on_dropped
        self._pending: list[_Pending[T, R]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def max_running(self) -> int | None:
        """Most batches that may run at once now (None: no limit)."""
        limit = self._max_running
        return _check_limit(limit() if callable(limit) else limit)

    @property
    def running(self) -> int:
        """Batches started and not finished."""
        return self._running

    async def submit(self, item: T, deadline: float | None = None) -> R:
        """Wait for ``item``'s result from its batch. ``deadline``: event-loop time after
        which the item is dropped with DeadlineExpired instead of run."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Pending(item, future, deadline))
        if len(self._pending) >= self.max_items:
            self._flush()
        elif self._timer is None:
            if self._running == 0 and self.idle_wait_s == 0:
                self._timer = loop.call_soon(self._flush)
            elif self._running == 0:
                self._timer = loop.call_later(self.idle_wait_s, self._flush)
            else:
                self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        limit = self.max_running
        if limit is not None and self._running >= limit and len(self._pending) < self.max_items:
            return  # the next batch to finish flushes these (``_serve``)
        batch, self._pending = self._pending, []
        if not batch:
            return
        now = asyncio.get_running_loop().time()
        live: list[_Pending[T, R]] = []
        for pending in batch:
            if pending.future.done():  # cancelled by its caller
                self._dropped("cancelled")
            elif pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(DeadlineExpired("deadline passed before serving"))
                self._dropped("deadline")
            else:
                live.append(pending)
        if not live:
            return
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._serve(live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dropped(self, reason: str) -> None:
        if self._on_dropped is not None:
            self._on_dropped(reason)

    async def _serve(self, batch: list[_Pending[T, R]]) -> None:
        try:
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                results = await self._run([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} got {len(results)} results")
            except Exception as exc:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            except BaseException:  # cancelled (shutdown): so are its callers
                for pending in batch:
                    pending.future.cancel()
                raise
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        finally:
            self._running -= 1
            # Items that waited for this batch to finish go now rather than at their timer
            # (without a limit: once no batch runs).
            if self._pending and self._running < (self.max_running or 1):
                self._flush()

    async def drain(self) -> None:
        """Run what is pending and wait for every running batch (graceful shutdown)."""
        if self._pending:
            self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and limit < 1:
        raise ValueError(f"max_running must be ≥ 1 (or None: no limit), got {limit}")
    return limit
