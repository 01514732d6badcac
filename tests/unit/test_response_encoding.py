"""serving.response_encoding: the hand-written RecallResponse bytes parse to exactly the
message the protobuf library builds."""

from __future__ import annotations

import numpy as np
import pytest

from serving.api.recall.v1 import recall_pb2
from serving.recall_engine import RecallResult, Source
from serving.response_encoding import (
    CandidateWireTable,
    EncodedCandidates,
    encode_recall_response,
)
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


# --- CandidateWireTable / EncodedCandidates ------------------------------------------------

MIXED_IDS = ["1", "22", "333", "é-ü-漢", "x" * 55, "y" * 56, LONG_ID, "", "item-00042"]


def _encoded_answers(
    table: CandidateWireTable, names: list[str], ids: np.ndarray, counts: list[int]
) -> list[tuple[EncodedCandidates, list[tuple[str, float]]]]:
    scores = np.random.default_rng(len(ids)).standard_normal(len(ids)).astype(np.float32)
    wires = table.encode(ids, scores, counts)
    out, start = [], 0
    for wire, count in zip(wires, counts, strict=True):
        row_ids, row_scores = ids[start : start + count], scores[start : start + count]
        start += count
        expected = [
            (names[i], s) for i, s in zip(row_ids.tolist(), row_scores.tolist(), strict=True)
        ]
        out.append((EncodedCandidates(wire, row_ids, row_scores, names), expected))
    return out


@pytest.mark.parametrize(
    "names",
    [
        [str(i) for i in range(1, 2000)],  # mixed widths
        [f"{i:04d}" for i in range(2000)],  # one width: no packing mask
        MIXED_IDS,
    ],
)
def test_table_answers_parse_to_the_library_message(names: list[str]) -> None:
    table = CandidateWireTable(names)
    rows = np.flatnonzero(table.lengths > 0)
    rng = np.random.default_rng(0)
    ids = rng.choice(rows, size=min(60, len(rows) * 3)).astype(np.int64)
    cut = sorted(rng.choice(len(ids) + 1, size=3).tolist())
    counts = [cut[0], 0, cut[1] - cut[0], cut[2] - cut[1], len(ids) - cut[2]]
    for candidates, expected in _encoded_answers(table, names, ids, counts):
        assert candidates == expected
        result = RecallResult(candidates, "m", "x", Source.USER_VECTOR)
        parsed = recall_pb2.RecallResponse.FromString(_response_bytes(result))
        assert parsed == _response(RecallResult(expected, "m", "x", Source.USER_VECTOR))
        assert [c.item_id for c in parsed.candidates] == [n for n, _ in expected]


def test_ids_too_long_for_one_byte_lengths_have_no_row() -> None:
    table = CandidateWireTable(MIXED_IDS)
    fits = [len(n.encode()) <= CandidateWireTable.MAX_ID_BYTES for n in MIXED_IDS]
    assert (table.lengths > 0).tolist() == fits
    assert not table.all_encodable
    assert table.encodable(np.array([0, 3, 4]))
    assert not table.encodable(np.array([0, 5]))
    assert table.encodable(np.array([], dtype=np.int64))
    assert CandidateWireTable(["a", "b"]).all_encodable


def test_a_repeated_id_in_the_map_is_flagged() -> None:
    assert CandidateWireTable(["a", "b"]).distinct
    assert not CandidateWireTable(["a", "b", "a"]).distinct


def test_encoded_candidates_read_as_their_list() -> None:
    names = ["a", "b", "c"]
    ids, scores = np.array([2, 0]), np.array([0.5, 0.25], dtype=np.float32)
    [wire] = CandidateWireTable(names).encode(ids, scores, [2])
    got = EncodedCandidates(wire, ids, scores, names)
    assert len(got) == 2
    assert got[0] == ("c", 0.5)
    assert got[-1:] == [("a", 0.25)]
    assert list(got) == [("c", 0.5), ("a", 0.25)]
    expected = [("c", 0.5), ("a", 0.25)]
    assert got == expected
    assert expected == got
    assert got != [("c", 0.5)]
    assert got == EncodedCandidates(wire, ids, scores, names)
    assert "('c', 0.5)" in repr(got)
