"""serving.task_cancel: a background task stops even when it swallows a cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from serving.task_cancel import cancel_all, cancel_and_wait


async def _stubborn(swallowed: list[int], ticks: list[int]) -> None:
    """Carries on after its first cancellation, like a poller whose Redis call swallowed
    it; stops at the second."""
    while True:
        try:
            await asyncio.sleep(0.01)
            ticks.append(1)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)


def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_done() -> None:
    async def scenario() -> tuple[asyncio.Task[None], list[int]]:
        swallowed: list[int] = []
        task = asyncio.create_task(_stubborn(swallowed, []))
        await asyncio.sleep(0.02)
        # The bound only turns a regression (a hang) into a failure.
        await asyncio.wait_for(cancel_and_wait(task), 10)
        return task, swallowed

    task, swallowed = asyncio.run(scenario())
    assert swallowed == [1]
    assert task.cancelled()


def test_a_single_cancel_then_await_would_hang_on_the_same_task() -> None:
    """The reason for the helper: what stop() did before never returns here."""

    async def scenario() -> bool:
        task = asyncio.create_task(_stubborn([], []))
        await asyncio.sleep(0.02)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        finished = bool(done)
        await cancel_and_wait(task)
        return finished

    assert asyncio.run(scenario()) is False


def test_a_failed_task_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_all([task, None])

    with caplog.at_level(logging.ERROR, logger="serving.task_cancel"):
        asyncio.run(scenario())
    assert "boom" in caplog.text


def test_cancel_all_stops_every_task() -> None:
    async def scenario() -> list[bool]:
        tasks = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_all(tasks), 10)
        return [t.cancelled() for t in tasks]

    assert asyncio.run(scenario()) == [True, True, True]
