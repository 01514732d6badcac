"""Searches must not call back into Python once per query (serving.index.search).

``import faiss`` installs an interrupt callback that an IVF search calls once per query; it
takes the GIL and runs pending Python signal handlers. Observed here without timing: a
``SIGPROF`` timer ticks every millisecond of CPU while one search runs on the main thread.
With the callback, the handler runs during the search, about once per tick; without it,
the ticks coalesce into one run after the search returns. (In a server, each of those calls
from a search thread waits for the event loop's thread to let go of the GIL:
bench/README.md.) That a starting server makes the call is checked in
tests/integration/test_serving_path.py.
"""

from __future__ import annotations

import signal

import faiss
import numpy as np
import pytest

from serving.index.search import disable_interrupt_checks

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")


def python_calls_during_a_search() -> int:
    """How many times a Python signal handler ran during (and right after) one IVF search
    of 8,000 queries on the main thread, with a SIGPROF every 1 ms of CPU."""
    rng = np.random.default_rng(0)
    items = rng.standard_normal((20_000, 32)).astype(np.float32)
    index = faiss.index_factory(32, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(items)
    index.add(items)
    index.nprobe = 16
    queries = rng.standard_normal((8_000, 32)).astype(np.float32)
    calls: list[int] = []
    threads = faiss.omp_get_max_threads()
    previous = signal.signal(signal.SIGPROF, lambda *_: calls.append(1))
    faiss.omp_set_num_threads(1)  # the per-query check then runs on this (the main) thread
    try:
        signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
        index.search(queries, 10)
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        return len(calls)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
        faiss.omp_set_num_threads(threads)


def test_disable_interrupt_checks_stops_the_per_query_calls_into_python() -> None:
    try:
        faiss.PythonInterruptCallback.reset()  # as after `import faiss`
        with_checks = python_calls_during_a_search()
        disable_interrupt_checks()
        without = python_calls_during_a_search()
    finally:
        faiss.PythonInterruptCallback.reset()  # leave the process as imported
    assert with_checks >= 10, with_checks  # one per ms of search
    assert without <= 3, without  # the ticks of the whole search, handled once after it
