"""Property-based fuzzing (Hypothesis) of every request field against a real recall server
with a synthetic index and its own real Redis: each call is answered OK or with a clear
status code (never INTERNAL or UNKNOWN) that carries a message.

~200 examples per property, no deadline (a call's latency is not the property)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recall_cli.local_redis import LocalRedis, free_port
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.config import ServerSettings
from tests.conftest import REPO_VAR
from tests.integration.harness import ServerThread
from tests.integration.synthetic_index import SyntheticIndex, publish_synthetic

pytestmark = pytest.mark.integration

MAX_BATCH = 8
MAX_INTERACTIONS = 16
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass
class Target:
    synth: SyntheticIndex
    recall: recall_pb2_grpc.RecallServiceStub
    admin: recall_pb2_grpc.RecallAdminStub


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server on a small synthetic index and a private Redis (the fuzzed interactions
    write histories and events that no other test should see)."""
    port = free_port()
    directory = REPO_VAR / "test-redis" / f"fuzz-{port}"
    local = LocalRedis(directory, port, persist=False)
    local.start()
    try:
        synth = publish_synthetic(
            tmp_path_factory.mktemp("fuzz"), local.url, users=200, items=600, dim=16
        )
        server_settings = ServerSettings(
            port=0,
            admin_port=0,
            metrics_port=0,
            redis_url=local.url,
            artifact_root=str(synth.artifact_root),
            watch_interval_s=0,
            vector_repair_interval_s=0,
            max_batch=MAX_BATCH,
            max_interactions=MAX_INTERACTIONS,
            max_k=500,
        )
        with (
            ServerThread(server_settings) as server,
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as admin_channel,
        ):
            yield Target(
                synth,
                recall_pb2_grpc.RecallServiceStub(channel),
                recall_pb2_grpc.RecallAdminStub(admin_channel),
            )
    finally:
        local.stop()
        shutil.rmtree(directory, ignore_errors=True)


def assert_clear(call: Callable[[], Any]) -> Any:
    """The reply, or None after a clear error status (not INTERNAL/UNKNOWN, with a
    message); fails the property otherwise."""
    try:
        return call()
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{exc.code().name}: {exc.details()}"
        assert exc.details(), f"{exc.code().name} without a message"
        return None


def ids(known: list[str]) -> st.SearchStrategy[str]:
    """Known ids, ids that look known, and arbitrary unicode (empty and long included)."""
    return st.one_of(
        st.sampled_from(known),
        st.from_regex(r"[ui][0-9]{1,6}", fullmatch=True),
        st.text(max_size=64),
        st.text(min_size=1000, max_size=5000),
    )


USERS = [f"u{i}" for i in range(200)]
ITEMS = [f"i{i}" for i in range(600)]
SMALL_INT = st.one_of(st.integers(-5, 1100), INT32)


def recall_requests() -> st.SearchStrategy[recall_pb2.RecallRequest]:
    return st.builds(
        recall_pb2.RecallRequest,
        user_id=ids(USERS),
        k=SMALL_INT,
        exclude_item_ids=st.lists(ids(ITEMS), max_size=40),
        exclude_seen=st.booleans(),
        nprobe=SMALL_INT,
        refine_factor=st.one_of(st.integers(-2, 80), INT32),
    )


@FUZZ
@given(request=recall_requests())
def test_fuzz_recall(target: Target, request: recall_pb2.RecallRequest) -> None:
    reply = assert_clear(lambda: target.recall.Recall(request, timeout=10))
    if reply is not None:
        ids_back = [c.item_id for c in reply.candidates]
        assert len(ids_back) == len(set(ids_back)) <= request.k
        assert not set(ids_back) & set(request.exclude_item_ids)


@FUZZ
@given(requests=st.lists(recall_requests(), max_size=MAX_BATCH + 3))
def test_fuzz_batch_recall(target: Target, requests: list[recall_pb2.RecallRequest]) -> None:
    batch = recall_pb2.BatchRecallRequest(requests=requests)
    reply = assert_clear(lambda: target.recall.BatchRecall(batch, timeout=10))
    if reply is not None:
        assert len(reply.responses) == len(requests)


interactions = st.builds(
    recall_pb2.Interaction, user_id=ids(USERS), item_id=ids(ITEMS), timestamp=INT64
)


@FUZZ
@given(batch=st.lists(interactions, max_size=MAX_INTERACTIONS + 3))
def test_fuzz_record_interactions(target: Target, batch: list[recall_pb2.Interaction]) -> None:
    request = recall_pb2.RecordInteractionsRequest(interactions=batch)
    reply = assert_clear(lambda: target.recall.RecordInteractions(request, timeout=10))
    if reply is not None:
        assert reply.accepted + reply.unknown_items <= len(batch)


def versions(known: str) -> st.SearchStrategy[str]:
    """Mostly wrong versions (traversal, separators, unicode), sometimes the loaded one."""
    return st.one_of(
        st.just(""),
        st.just(known),
        st.sampled_from(["..", "../models", "/etc", "LATEST", "a/b", "\x00", known + "/.."]),
        st.text(max_size=80),
    )


@FUZZ
@given(data=st.data())
def test_fuzz_load_index_and_status(target: Target, data: st.DataObject) -> None:
    version = data.draw(versions(target.synth.index.index_version))
    request = recall_pb2.LoadIndexRequest(version=version)
    reply = assert_clear(lambda: target.admin.LoadIndex(request, timeout=60))
    if reply is not None:
        assert reply.index_version == target.synth.index.index_version
    status = target.admin.GetStatus(recall_pb2.GetStatusRequest(), timeout=10)
    assert status.index_version == target.synth.index.index_version  # still serving
