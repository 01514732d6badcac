"""serving.response_encoding: the hand-written RecallResponse bytes parse to exactly the
message the protobuf library builds."""

from __future__ import annotations

import pytest

from serving.api.recall.v1 import recall_pb2
from serving.recall_engine import RecallResult, Source
from serving.response_encoding import encode_recall_response
from serving.server import _response, _response_bytes

LONG_ID = "x" * 300  # length needs a two-byte varint


@pytest.mark.parametrize(
    "result",
    [
        RecallResult([("i1", 0.5), ("i2", -0.25), ("i3", 0.0)], "m1", "x1", Source.USER_VECTOR),
        RecallResult([("é-ü-漢", 1e-3), (LONG_ID, 3.5)], "m", "x", Source.FALLBACK),
        RecallResult([("a", 0.1)], "m", "x", Source.FALLBACK_DEGRADED, "circuit_open"),
        RecallResult([], "", "", Source.USER_VECTOR),
    ],
)
def test_bytes_parse_to_the_library_message(result: RecallResult) -> None:
    parsed = recall_pb2.RecallResponse.FromString(_response_bytes(result))
    assert parsed == _response(result)


def test_the_cached_item_header_is_reused_and_exact() -> None:
    first = encode_recall_response([("same", 0.5)], "m", "x", 1)
    again = encode_recall_response([("same", 0.5)], "m", "x", 1)
    assert first == again
    assert (
        first
        == recall_pb2.RecallResponse(
            candidates=[recall_pb2.Candidate(item_id="same", score=0.5)],
            model_version="m",
            index_version="x",
            source=recall_pb2.SOURCE_USER_VECTOR,
        ).SerializeToString()
    )


def test_cached_version_fields_follow_every_argument() -> None:
    """The encoded model/index/source/reason fields are cached per combination: changing
    any one of them must change the bytes (no stale tail from an earlier call)."""
    calls = [
        ("m1", "x1", recall_pb2.SOURCE_USER_VECTOR, ""),
        ("m1", "x1", recall_pb2.SOURCE_FALLBACK_DEGRADED, "redis_timeout"),
        ("m1", "x1", recall_pb2.SOURCE_FALLBACK_DEGRADED, "circuit_open"),
        ("m1", "x2", recall_pb2.SOURCE_USER_VECTOR, ""),
        ("m2", "x1", recall_pb2.SOURCE_USER_VECTOR, ""),
        ("m1", "x1", recall_pb2.SOURCE_USER_VECTOR, ""),
    ]
    for model, index, source, reason in calls:
        got = encode_recall_response([("i", 0.25)], model, index, source, reason)
        assert recall_pb2.RecallResponse.FromString(got) == recall_pb2.RecallResponse(
            candidates=[recall_pb2.Candidate(item_id="i", score=0.25)],
            model_version=model,
            index_version=index,
            source=source,
            degraded_reason=reason,
        )
