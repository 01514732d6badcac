"""Stopping a background task for sure.

A cancellation can be swallowed below our code: Python 3.11's ``asyncio.wait_for`` drops
one that arrives in the loop turn its inner future completes (the 3.12 rewrite fixed it),
and redis-py's asyncio client wraps every socket write in ``wait_for``. Seen for real: a
server stopped just after start, while its fresh-segment poll was inside a Redis call,
hung in ``stop()`` on 8 runs of 8, the poller carrying on to its next sleep (a CI run
failed on it). So a background task is cancelled again until it is done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[Any], *, recheck_s: float = 0.05) -> None:
    """Cancel ``task`` and wait until it has finished, cancelling it again every
    ``recheck_s`` seconds while it still runs (a swallowed cancellation). Its result or
    exception is consumed; an exception other than cancellation is logged."""
    task.cancel()
    await asyncio.wait({task}, timeout=recheck_s)
    while not task.done():
        where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack(limit=4))
        log.info(
            "task %s carried on after a cancellation (at %s); cancelling again",
            task.get_name(),
            where,
        )
        task.cancel()
        await asyncio.wait({task}, timeout=recheck_s)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("background task %s failed while stopping: %r", task.get_name(), error)


async def cancel_all(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """``cancel_and_wait`` each task that exists, all at once."""
    await asyncio.gather(*(cancel_and_wait(task) for task in tasks if task is not None))
