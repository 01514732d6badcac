"""``RecallResponse`` written straight to protobuf wire bytes, for the hot ``Recall`` path.

Building a message of k ``Candidate`` objects and having gRPC serialize it costs more than
writing the bytes: each candidate's item-id part is the same for every response, so it is
encoded once and cached, and only the 4 score bytes are new per answer. The result parses
to exactly the message ``serving.server._response`` builds (pinned by
tests/unit/test_response_encoding.py); field numbers follow protos/recall/v1/recall.proto.

Answers straight from the index go further (``CandidateWireTable``): every item's candidate
bytes are written once per loaded index into a fixed-width table, and a whole batch of
answers is gathered from it with a few numpy operations, so a candidate costs no Python
at all (no id lookup, tuple, float or bytes object); the ``(item_id, score)`` list is
built only if someone reads it (``EncodedCandidates``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

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
    candidates: Sequence[tuple[str, float]],
    model_version: str,
    index_version: str,
    source: int,
    degraded_reason: str = "",
) -> bytes:
    """Wire bytes of ``RecallResponse(candidates, model_version, index_version, source,
    degraded_reason)``. candidates: (item_id, score), in order (an ``EncodedCandidates``
    brings its bytes along); source: a ``Source`` number."""
    if isinstance(candidates, EncodedCandidates):
        parts = [candidates.wire]
    else:
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


class CandidateWireTable:
    """Every item's ``candidates`` entry, written once per loaded index, so that whole
    answers are gathered with numpy instead of built candidate by candidate in Python.

    Row ``i`` of ``table`` ([items, width] uint8) is internal id ``i``'s entry, zero-padded:
    ``0x0a L 0x15 s s s s 0x0a n <id bytes>``, that is, the candidates tag and length, then
    ``Candidate.score`` (field 2, I32) *before* ``item_id`` (field 1): protobuf fields may
    come in any order, and this one puts the 4 score bytes at the same columns (3..6) for
    every item, so a batch's scores are written with one slice assignment. That needs
    one-byte lengths, so an id of more than ``MAX_ID_BYTES`` UTF-8 bytes has no row
    (``lengths`` 0): answers holding one take the general path.

    Memory: items × (10 + the longest encodable id) bytes, e.g. 16 MB for 1M ids of up to
    7 digits, 42 MB for 32-character ones; built in ~1.2 s per 1M items.
    """

    MAX_ID_BYTES = 55
    """Longest id with a row: width ≤ 64 bytes (and the one-byte lengths hold to 120)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        raws = [item.encode() for item in item_ids]
        fits = [len(raw) <= self.MAX_ID_BYTES for raw in raws]
        self.all_encodable = all(fits)
        # Distinct internal ids name distinct items only if the id map has no repeats
        # (load_index_dir does not check); else answers need select_candidates' dedupe.
        self.distinct = len(set(item_ids)) == len(item_ids)
        self.lengths = np.array(
            [9 + len(raw) if ok else 0 for raw, ok in zip(raws, fits, strict=True)],
            dtype=np.uint8,
        )
        width = int(self.lengths.max()) if len(raws) else 9
        self.table = np.zeros((len(raws), max(9, width)), dtype=np.uint8)
        entries = b"".join(
            bytes((0x0A, 7 + len(raw), 0x15, 0, 0, 0, 0, 0x0A, len(raw))) + raw
            for raw, ok in zip(raws, fits, strict=True)
            if ok
        )
        # Row-major boolean assignment fills each row's first lengths[i] bytes in order.
        self.table[np.arange(self.table.shape[1]) < self.lengths[:, None]] = np.frombuffer(
            entries, dtype=np.uint8
        )

    def encodable(self, ids: np.ndarray) -> bool:
        """Whether every id (internal, ≥ 0) has a row."""
        return bool(ids.size == 0 or self.lengths[ids].min() > 0)

    def encode(self, ids: np.ndarray, scores: np.ndarray, counts: Sequence[int]) -> list[bytes]:
        """The ``candidates`` bytes of consecutive answers: ids [n] int64 (encodable, see
        ``encodable``) and scores [n] float32, answer ``j`` holding the next ``counts[j]``
        of them (sum(counts) == n)."""
        rows = self.table[ids]  # [n, width], a copy
        rows[:, 3:7] = np.ascontiguousarray(scores, dtype="<f4").reshape(-1, 1).view(np.uint8)
        lengths = self.lengths[ids]
        width = rows.shape[1]
        if len(lengths) and int(lengths.min()) == width:
            packed = rows.tobytes()
        else:
            packed = rows[np.arange(width) < lengths[:, None]].tobytes()
        ends = np.cumsum(lengths).tolist()  # byte offset after each candidate
        out = []
        item = begin = 0
        for count in counts:
            item += count
            end = ends[item - 1] if item else 0
            out.append(packed[begin:end])
            begin = end
        return out


class EncodedCandidates(Sequence[tuple[str, float]]):
    """One answer's candidates, best first, already written as ``candidates`` wire bytes
    (``wire``, by ``CandidateWireTable``). Reads as the ``(item_id, score)`` list it stands
    for, which is built on first read: the Recall path only sends the bytes."""

    __slots__ = ("_ids", "_items", "_names", "_scores", "wire")

    def __init__(
        self, wire: bytes, ids: np.ndarray, scores: np.ndarray, names: Sequence[str]
    ) -> None:
        """ids: [n] internal ids, scores: [n] float32, names: internal id → item id."""
        self.wire = wire
        self._ids = ids
        self._scores = scores
        self._names = names
        self._items: list[tuple[str, float]] | None = None

    def _list(self) -> list[tuple[str, float]]:
        if self._items is None:
            names = self._names
            self._items = list(
                zip([names[i] for i in self._ids.tolist()], self._scores.tolist(), strict=True)
            )
        return self._items

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> tuple[str, float]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, float]]: ...

    def __getitem__(self, index: int | slice) -> tuple[str, float] | list[tuple[str, float]]:
        if isinstance(index, slice) or self._items is not None:
            return self._list()[index]
        # One candidate (a fresh segment's merge reads the last score of every row)
        # without building the whole list; an out-of-range index raises IndexError.
        return self._names[int(self._ids[index])], float(self._scores[index])

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedCandidates):
            return self._list() == other._list()
        if isinstance(other, list | tuple):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-equality semantics, like a list

    def __repr__(self) -> str:
        return f"EncodedCandidates({self._list()!r})"
