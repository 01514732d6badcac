"""The serving process raises the cyclic GC's thresholds before it serves
(serving.server.GC_THRESHOLDS); nothing else in the process is touched."""

from __future__ import annotations

import gc
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from serving import server
from serving.config import ServerSettings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


def test_serve_sets_gc_thresholds_before_running_the_loop(
    restore_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, int, int]] = []

    def fake_run(coro: Coroutine[Any, Any, None]) -> None:
        seen.append(gc.get_threshold())
        coro.close()  # never started: no server, no ports

    monkeypatch.setattr(server.asyncio, "run", fake_run)
    server.serve(ServerSettings(port=0, admin_port=0, metrics_port=0, event_loop="asyncio"))

    assert seen == [server.GC_THRESHOLDS]
    assert server.GC_THRESHOLDS[0] > 700  # the point: fewer young-generation passes
