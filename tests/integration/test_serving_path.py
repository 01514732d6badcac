"""The request path under load, against real recall servers and a real Redis: micro-batching
(answers equal to unbatched ones), backpressure, deadlines, per-request search options,
graceful drain on SIGTERM, and degraded answers while Redis is down.

The index is synthetic (tests/integration/synthetic_index.py, no training), ML-100K-sized."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY

import serving.server
from keyspace.histories import history_key
from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.user_vectors import load_user_vectors
from tests.conftest import REPO_VAR
from tests.integration.harness import RECALL, ServerThread, local_settings
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

pytestmark = pytest.mark.integration

Request = recall_pb2.RecallRequest


@pytest.fixture(scope="module")
def synth(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> SyntheticIndex:
    index = publish_synthetic(tmp_path_factory.mktemp("synth"), redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:  # histories for the seen filter: users u0..u49 saw items i0..i19
        for u in range(50):
            client.delete(history_key(f"u{u}"))
            client.lpush(history_key(f"u{u}"), *[f"i{i}" for i in range(20)])
    finally:
        client.close()
    return index


def settings(synth: SyntheticIndex, redis_url: str, **extra: Any) -> ServerSettings:
    return local_settings(synth.artifact_root, redis_url, **extra)


@dataclass
class Outcome:
    request: recall_pb2.RecallRequest
    code: grpc.StatusCode
    response: recall_pb2.RecallResponse | None
    started: float
    finished: float


async def call_all(
    port: int, requests: list[recall_pb2.RecallRequest], in_flight: int, timeout: float = 10
) -> list[Outcome]:
    """Every request with ``in_flight`` outstanding, outcomes in request order."""
    gate = asyncio.Semaphore(in_flight)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recall_pb2_grpc.RecallServiceStub(channel)

        async def one(request: recall_pb2.RecallRequest) -> Outcome:
            async with gate:
                started = time.monotonic()
                try:
                    response = await stub.Recall(request, timeout=timeout)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    response, code = None, exc.code()
                return Outcome(request, code, response, started, time.monotonic())

        return list(await asyncio.gather(*(one(r) for r in requests)))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def mixed_requests(users: list[str], n: int, seed: int = 0) -> list[recall_pb2.RecallRequest]:
    """Mixed k, exclusions, seen filter, per-request nprobe and unknown users."""
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        user = users[rng.randrange(len(users))] if i % 10 else f"stranger-{i}"
        request = Request(user_id=user, k=rng.choice([10, 100]))
        if i % 3 == 0:
            request.exclude_item_ids.extend(f"i{rng.randrange(200)}" for _ in range(5))
        if i % 4 == 0:
            request.exclude_seen = True
        if i % 5 == 0:
            request.nprobe = rng.choice([1, 4])
        requests.append(request)
    return requests


def test_batched_answers_equal_unbatched_ones_under_concurrency(
    synth: SyntheticIndex, redis_server: LocalRedis
) -> None:
    requests = mixed_requests(synth.user_ids[:100], 600)
    batches_before = metric("recall_batch_size_count")
    batched_calls_before = metric("recall_batch_size_sum")
    with ServerThread(settings(synth, redis_server.url, batching=True)) as on:
        batched = asyncio.run(call_all(on.port, requests, in_flight=32))
    batches = metric("recall_batch_size_count") - batches_before
    calls = metric("recall_batch_size_sum") - batched_calls_before
    with ServerThread(settings(synth, redis_server.url, batching=False)) as off:
        unbatched = asyncio.run(call_all(off.port, requests, in_flight=32))
    assert all(o.code == grpc.StatusCode.OK for o in batched + unbatched)
    for b, u in zip(batched, unbatched, strict=True):
        assert b.response == u.response, b.request
    sources = {o.response.source for o in batched if o.response}
    assert sources == {recall_pb2.SOURCE_USER_VECTOR, recall_pb2.SOURCE_FALLBACK}
    seen = [o for o in batched if o.request.exclude_seen and o.request.user_id in {"u0", "u1"}]
    for o in seen:
        assert o.response is not None
        assert not {c.item_id for c in o.response.candidates} & {f"i{i}" for i in range(20)}
    assert calls == len(requests)
    assert batches < calls, "no two concurrent calls shared a batch"
    print(f"{calls:.0f} calls in {batches:.0f} batches")


def test_searches_in_the_search_threads_answer_as_inline_ones(
    synth: SyntheticIndex, redis_server: LocalRedis
) -> None:
    """Every search in the engine's search threads (RECALL_INLINE_SEARCH_CODES=0, the
    default), one or two batches in flight (the small index counts as cheap unless
    RECALL_CHEAP_SEARCH_CODES=0), two search threads: the same answers as unbatched
    searches on the event loop."""
    requests = mixed_requests(synth.user_ids[:100], 300, seed=1)
    inline_settings = settings(synth, redis_server.url, batching=False, inline_search_codes=10**9)
    with ServerThread(inline_settings) as inline:
        reference = asyncio.run(call_all(inline.port, requests, in_flight=32))
    for running, cheap in ((1, 20_000), (2, 20_000), (2, 0)):
        threaded_settings = settings(
            synth,
            redis_server.url,
            inline_search_codes=0,
            search_threads=2,
            batch_max_running=running,
            cheap_search_codes=cheap,
        )
        with ServerThread(threaded_settings) as threaded:
            answers = asyncio.run(call_all(threaded.port, requests, in_flight=32))
            # What the server chose for the loaded index (the synthetic one is cheap).
            chosen = metric("recall_batch_max_running")
        assert chosen == (1 if cheap else running)
        assert all(o.code == grpc.StatusCode.OK for o in answers + reference)
        for a, r in zip(answers, reference, strict=True):
            assert a.response == r.response, (running, cheap, a.request)


def test_a_starting_server_clears_faiss_interrupt_checks(
    synth: SyntheticIndex, redis_server: LocalRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RecallServer.start`` calls ``disable_interrupt_checks`` (its effect, no per-query
    call into Python during a search, is tests/unit/test_search_gil.py's)."""
    calls: list[int] = []
    monkeypatch.setattr(serving.server, "disable_interrupt_checks", lambda: calls.append(1))
    with ServerThread(settings(synth, redis_server.url)):
        assert calls == [1]


def test_resource_exhausted_beyond_max_in_flight(
    synth: SyntheticIndex, redis_server: LocalRedis
) -> None:
    requests = [Request(user_id=u, k=100) for u in synth.user_ids[:200]]
    with ServerThread(settings(synth, redis_server.url, max_in_flight=2)) as server:
        outcomes = asyncio.run(call_all(server.port, requests, in_flight=64))
    codes = [o.code for o in outcomes]
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert max(o.finished - o.started for o in refused) < 1.0  # refused at once, not queued


def pause_redis(url: str, ms: int) -> None:
    """Redis stops answering every client for ``ms`` (calls wait on it, nothing fails)."""
    client = redis.Redis.from_url(url)
    try:
        client.execute_command("CLIENT", "PAUSE", ms, "ALL")
    finally:
        client.close()


def test_an_expired_call_gets_deadline_exceeded_and_others_are_served(
    synth: SyntheticIndex, redis_server: LocalRedis
) -> None:
    before = metric("recall_requests_total", method="Recall", code="DEADLINE_EXCEEDED")
    with ServerThread(settings(synth, redis_server.url, batch_wait_ms=1)) as server:

        async def scenario() -> tuple[list[Outcome], list[Outcome]]:
            pause_redis(redis_server.url, 400)
            patient = asyncio.ensure_future(
                call_all(server.port, [Request(user_id="u1", k=10)], 1, timeout=5)
            )
            await asyncio.sleep(0.05)
            hasty = [Request(user_id=f"u{i}", k=10) for i in range(2, 6)]
            return await asyncio.gather(patient, call_all(server.port, hasty, 4, timeout=0.1))

        patient, hasty = asyncio.run(scenario())
        time.sleep(0.2)
    assert [o.code for o in patient] == [grpc.StatusCode.OK]
    assert [o.code for o in hasty] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    assert all(o.finished - o.started < 0.3 for o in hasty)
    after = metric("recall_requests_total", method="Recall", code="DEADLINE_EXCEEDED")
    assert after - before == 4  # the server saw them expire (and answered none)


def exact_top(synth: SyntheticIndex, user: str, k: int) -> set[str]:
    users = synth.model.user_vectors(mmap=False)
    items = synth.model.item_vectors()
    scores = items @ users[synth.user_ids.index(user)]
    return {f"i{i}" for i in np.argsort(-scores)[:k]}


def test_per_request_nprobe_and_refine_factor_and_their_bounds(
    synth: SyntheticIndex, redis_server: LocalRedis
) -> None:
    with ServerThread(
        settings(synth, redis_server.url, max_nprobe=32, max_refine_factor=8)
    ) as server:
        client = RecallClient(f"127.0.0.1:{server.port}", retries=0)
        stub = client.recall_stub
        try:
            for bad in (
                Request(user_id="u1", k=10, nprobe=33),
                Request(user_id="u1", k=10, nprobe=-1),
                Request(user_id="u1", k=10, refine_factor=9),
                Request(user_id="u1", k=10, refine_factor=-2),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Recall(bad, timeout=5)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "must be between 1 and" in str(caught.value.details())
            overlap: dict[tuple[int, int], float] = {}
            users = synth.user_ids[:40]
            for nprobe, refine in [(1, 1), (32, 1), (32, 8)]:
                hits = 0
                for user in users:
                    answer = stub.Recall(
                        Request(user_id=user, k=10, nprobe=nprobe, refine_factor=refine), timeout=5
                    )
                    assert answer.source == recall_pb2.SOURCE_USER_VECTOR
                    assert len(answer.candidates) == 10
                    hits += len({c.item_id for c in answer.candidates} & exact_top(synth, user, 10))
                overlap[(nprobe, refine)] = hits / (10 * len(users))
        finally:
            client.close()
    print(f"recall@10 against exact by (nprobe, refine_factor): {overlap}")
    assert overlap[(32, 1)] > overlap[(1, 1)]  # more lists probed, more true neighbours
    if getattr(synth.index, "refine", "none") != "none":  # indexes with exact re-rank
        assert overlap[(32, 8)] >= overlap[(32, 1)]


def test_sigterm_drains_calls_in_flight(synth: SyntheticIndex, redis_server: LocalRedis) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RECALL_PORT": str(port),
        "RECALL_ADMIN_PORT": str(free_port()),
        "RECALL_METRICS_PORT": "0",
        "RECALL_REDIS_URL": redis_server.url,
        "RECALL_ARTIFACT_ROOT": str(synth.artifact_root),
        "RECALL_WATCH_INTERVAL_S": "0",
        "RECALL_GRACE_S": "10",
    }
    server = subprocess.Popen([*RECALL, "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        client = RecallClient(f"127.0.0.1:{port}", retries=0)
        assert client.wait_serving(60), "server did not start"
        client.close()

        async def scenario() -> list[Outcome]:
            pause_redis(redis_server.url, 800)  # the calls below wait on Redis
            calls = asyncio.ensure_future(
                call_all(port, [Request(user_id=f"u{i}", k=10) for i in range(8)], 8)
            )
            await asyncio.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            return await calls

        outcomes = asyncio.run(scenario())
        assert [o.code for o in outcomes] == [grpc.StatusCode.OK] * 8
        assert all(o.response and len(o.response.candidates) == 10 for o in outcomes)
        assert server.wait(15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


class LoadThread:
    """Recall calls from ``in_flight`` workers until stopped, every outcome recorded."""

    def __init__(self, port: int, users: list[str], in_flight: int) -> None:
        self.port, self.users, self.in_flight = port, users, in_flight
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = recall_pb2_grpc.RecallServiceStub(channel)

            async def worker(w: int) -> None:
                i = w
                while not self.stopping.is_set():
                    request = Request(user_id=self.users[i % len(self.users)], k=10)
                    i += self.in_flight
                    started = time.monotonic()
                    try:
                        response = await stub.Recall(request, timeout=5)
                        code = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        response, code = None, exc.code()
                    self.outcomes.append(
                        Outcome(request, code, response, started, time.monotonic())
                    )

            await asyncio.gather(*(worker(w) for w in range(self.in_flight)))

    def __enter__(self) -> LoadThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)


@pytest.fixture()
def own_redis(synth: SyntheticIndex) -> Iterator[LocalRedis]:
    """A Redis of this test's own (it is stopped and restarted), persisting on shutdown."""
    port = free_port()
    directory = REPO_VAR / "test-redis" / f"outage-{port}"
    local = LocalRedis(directory, port, persist=True)
    local.start()
    try:
        load_user_vectors(synth.model, redis.Redis.from_url(local.url))
        yield local
    finally:
        local.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_redis_stopped_under_load_degrades_without_failures_and_recovers_within_1_s(
    synth: SyntheticIndex, own_redis: LocalRedis
) -> None:
    config = settings(synth, own_redis.url, breaker_reset_s=0.25, redis_timeout_s=0.5)
    with ServerThread(config) as server, LoadThread(server.port, synth.user_ids, 16) as load:
        time.sleep(1.0)
        own_redis.stop()  # SHUTDOWN SAVE: the vectors come back with it
        stopped = time.monotonic()
        time.sleep(2.0)
        admin = RecallClient(f"127.0.0.1:{server.port}", f"127.0.0.1:{server.admin_port}")
        try:
            breaker_during = admin.status().redis_breaker_state
            restarting = time.monotonic()  # Redis may answer before start() returns
            own_redis.start()
            back = time.monotonic()
            time.sleep(2.0)
            breaker_after = admin.status().redis_breaker_state
        finally:
            admin.close()
    # GetStatus shows the breaker: open (or probing) while Redis is down, closed once back.
    assert breaker_during in ("open", "half_open"), breaker_during
    assert breaker_after == "closed", breaker_after
    outcomes = load.outcomes
    failed = [o for o in outcomes if o.code != grpc.StatusCode.OK]
    assert not failed, f"{len(failed)} failed calls, e.g. {failed[0].code}"
    during = [
        o.response
        for o in outcomes
        if stopped < o.started and o.finished < restarting and o.response
    ]
    assert during and all(r.source == recall_pb2.SOURCE_FALLBACK_DEGRADED for r in during)
    assert {r.degraded_reason for r in during} <= {"redis_error", "redis_timeout", "circuit_open"}
    assert all(len(r.candidates) == 10 for r in during)
    personal_again = [
        o.finished
        for o in outcomes
        if o.started > back and o.response and o.response.source == recall_pb2.SOURCE_USER_VECTOR
    ]
    assert personal_again, "no personal answer after Redis came back"
    recovered_after = min(personal_again) - back
    late = [
        o
        for o in outcomes
        if o.started > back + 1.0
        and o.response
        and o.response.source != recall_pb2.SOURCE_USER_VECTOR
    ]
    print(
        f"{len(outcomes)} calls, {len(during)} degraded during the outage, "
        f"user vectors again {recovered_after:.3f} s after Redis returned"
    )
    assert recovered_after <= 1.0
    assert not late
