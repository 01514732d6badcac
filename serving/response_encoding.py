"""``RecallResponse`` written straight to protobuf wire bytes, for the hot ``Recall`` path.

Building a message of k ``Candidate`` objects and having gRPC serialize it costs more than
writing the bytes: each candidate's item-id part is the same for every response, so it is
encoded once and cached, and only the 4 score bytes are new per answer. The result parses
to exactly the message ``serving.server._response`` builds (pinned by
tests/unit/test_response_encoding.py); field numbers follow protos/recall/v1/recall.proto.
"""

from __future__ import annotations

import struct

_FLOAT = struct.Struct("<f").pack
_CACHE_LIMIT = 2_000_000
"""Cached candidate headers (one per distinct item id); cleared beyond this (catalogs
change with index swaps)."""
_headers: dict[str, bytes] = {}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(tag: int, value: str) -> bytes:
    raw = value.encode()
    return bytes((tag,)) + _varint(len(raw)) + raw


def _candidate_header(item_id: str) -> bytes:
    """``candidates`` field tag and length, then Candidate.item_id, then the score's tag:
    everything of one candidate except its 4 score bytes."""
    inner = _string_field(0x0A, item_id) + b"\x15"  # item_id = 1 (LEN); score = 2 (I32)
    header = b"\x0a" + _varint(len(inner) + 4) + inner
    if len(_headers) >= _CACHE_LIMIT:
        _headers.clear()
    _headers[item_id] = header
    return header


_tails: dict[tuple[str, str, int, str], bytes] = {}
"""Encoded (model_version, index_version, source, degraded_reason) fields: a handful of
distinct values per index version; cleared beyond 64 (index swaps)."""


def _tail(model_version: str, index_version: str, source: int, degraded_reason: str) -> bytes:
    parts = []
    if model_version:
        parts.append(_string_field(0x12, model_version))
    if index_version:
        parts.append(_string_field(0x1A, index_version))
    if source:
        parts.append(b"\x20" + _varint(source))
    if degraded_reason:
        parts.append(_string_field(0x2A, degraded_reason))
    if len(_tails) >= 64:
        _tails.clear()
    tail = _tails[(model_version, index_version, source, degraded_reason)] = b"".join(parts)
    return tail


def encode_recall_response(
    candidates: list[tuple[str, float]],
    model_version: str,
    index_version: str,
    source: int,
    degraded_reason: str = "",
) -> bytes:
    """Wire bytes of ``RecallResponse(candidates, model_version, index_version, source,
    degraded_reason)``. candidates: (item_id, score), in order; source: a ``Source`` number."""
    get = _headers.get
    parts = [
        (get(item_id) or _candidate_header(item_id)) + _FLOAT(score)
        for item_id, score in candidates
    ]
    parts.append(
        _tails.get((model_version, index_version, source, degraded_reason))
        or _tail(model_version, index_version, source, degraded_reason)
    )
    return b"".join(parts)
