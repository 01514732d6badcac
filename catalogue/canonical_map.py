"""The canonical-id map: duplicate groups, each collapsed onto one canonical item id.

Stored in a model artifact as ``duplicates.json`` (docs/artifacts.md)::

    {"schema_id": "recall.duplicates/v1",
     "method": "minhash", "config": {...DuplicateConfig...},
     "groups": [{"canonical_id": "268", "item_ids": ["268", "246"],
                 "reason": "title jaccard 1.00, year 1997", "similarity": 1.0}, ...]}

``item_ids`` lists the canonical id first. Every id belongs to at most one group.
Standard library only: the recall server (no pandas/TensorFlow needed) reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DUPLICATES_FILE = "duplicates.json"
DUPLICATES_SCHEMA = "recall.duplicates/v1"


class CanonicalMapError(ValueError):
    """A duplicates file that is unreadable or breaks the format above."""


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that are one item. ``item_ids``: canonical first, then the others sorted."""

    canonical_id: str
    item_ids: tuple[str, ...]
    reason: str
    similarity: float

    @property
    def aliases(self) -> tuple[str, ...]:
        """The ids folded into ``canonical_id``."""
        return self.item_ids[1:]


@dataclass(frozen=True)
class CanonicalMap:
    """alias id → canonical id for every duplicate group; other ids map to themselves."""

    groups: tuple[DuplicateGroup, ...] = ()
    method: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    _alias_to_canonical: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        mapping: dict[str, str] = {}
        for group in self.groups:
            if not group.item_ids or group.item_ids[0] != group.canonical_id:
                raise CanonicalMapError(
                    f"group {group.item_ids}: the canonical id {group.canonical_id!r} "
                    "must come first"
                )
            for item in group.item_ids:
                if item in mapping:
                    raise CanonicalMapError(f"item {item!r} is in two duplicate groups")
                mapping[item] = group.canonical_id
        # Frozen dataclass: the look-up table is derived once, here.
        object.__setattr__(
            self,
            "_alias_to_canonical",
            {a: c for a, c in mapping.items() if a != c},
        )

    def __len__(self) -> int:
        return len(self.groups)

    def canonical(self, item_id: str) -> str:
        """The canonical id of ``item_id`` (itself when it is in no group)."""
        return self._alias_to_canonical.get(item_id, item_id)

    def canonical_set(self, item_ids: Iterable[str]) -> frozenset[str]:
        """The canonical ids of ``item_ids``."""
        table = self._alias_to_canonical
        if not table:
            return frozenset(item_ids)
        return frozenset(table.get(i, i) for i in item_ids)

    @property
    def aliases(self) -> dict[str, str]:
        """alias → canonical, only ids that are not canonical themselves."""
        return dict(self._alias_to_canonical)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_id": DUPLICATES_SCHEMA,
            "method": self.method,
            "config": dict(self.config),
            "groups": [
                {
                    "canonical_id": g.canonical_id,
                    "item_ids": list(g.item_ids),
                    "reason": g.reason,
                    "similarity": round(g.similarity, 6),
                }
                for g in self.groups
            ],
        }

    @classmethod
    def from_json(cls, payload: Any, source: str = "duplicates") -> CanonicalMap:
        """Parse ``to_json``'s output. Raises CanonicalMapError naming ``source``."""
        try:
            if payload.get("schema_id") != DUPLICATES_SCHEMA:
                raise CanonicalMapError(
                    f"{source}: schema {payload.get('schema_id')!r}, expected {DUPLICATES_SCHEMA}"
                )
            groups = tuple(
                DuplicateGroup(
                    canonical_id=str(g["canonical_id"]),
                    item_ids=tuple(str(i) for i in g["item_ids"]),
                    reason=str(g.get("reason", "")),
                    similarity=float(g.get("similarity", 0.0)),
                )
                for g in payload["groups"]
            )
            method, config = str(payload.get("method", "")), dict(payload.get("config", {}))
        except CanonicalMapError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise CanonicalMapError(f"{source}: malformed duplicates file ({exc})") from exc
        try:
            return cls(groups, method, config)
        except CanonicalMapError as exc:
            raise CanonicalMapError(f"{source}: {exc}") from None


EMPTY_MAP = CanonicalMap()


def write_canonical_map(directory: Path, canonical: CanonicalMap) -> Path:
    """Write ``duplicates.json`` into ``directory``; returns its path."""
    path = directory / DUPLICATES_FILE
    path.write_text(json.dumps(canonical.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def read_canonical_map(directory: Path) -> CanonicalMap:
    """``directory``'s ``duplicates.json``; the empty map when the file is absent (models
    published before duplicate detection). Raises CanonicalMapError when malformed."""
    path = directory / DUPLICATES_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return EMPTY_MAP
    except OSError as exc:
        raise CanonicalMapError(f"{path}: cannot be read ({exc})") from exc
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise CanonicalMapError(f"{path}: not JSON ({exc})") from exc
    return CanonicalMap.from_json(payload, str(path))
