"""The nightly fold-in: an index build takes the catalogue changes from Redis (keys:
``keyspace.catalogue_items``, docs/redis.md).

- Added items (``recall:items:new``) whose vectors under the model being indexed are in
  ``recall:items:fresh:<model>`` (written by ``training.fresh_items.embed_fresh_items``,
  the DAG task before the build) join the index.
- Denied items (``recall:items:deny``, folded into the model's canonical ids) leave the
  index and its popular-items fallback list. The deny set itself stays: a removal holds
  until it is lifted (then the next build includes the item again).
- After the index is promoted (``forget_folded``), the folded items leave
  ``recall:items:new`` (only if their record did not change meanwhile) and the model's
  fresh hash: servers that load the new index find them in it, and their fresh segment
  leaves them out anyway (``serving.fresh_segment.build_segment``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keyspace.catalogue_items import (
    DELETE_IF_UNCHANGED_LUA,
    DENY_SET,
    ITEMS_REV,
    NEW_ITEMS,
    decode_fresh_vector,
    decode_ids,
    decode_new_item,
    fresh_vectors_key,
)
from keyspace.connection import SyncRedis
from keyspace.user_vectors import MalformedValue
from serving.model_artifact import ModelArtifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogueChanges:
    """What one build folds in: ``ids`` [n] with ``vectors`` [n, dim] (the model's item
    tower), the raw ``recall:items:new`` values they came from (for the conditional
    clean-up), and the ``denied`` canonical ids."""

    ids: tuple[str, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    records: tuple[bytes, ...] = ()
    denied: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.ids and not self.denied


def read_changes(client: SyncRedis, model: ModelArtifact) -> CatalogueChanges:
    """The added items embedded with ``model`` (those not embedded yet, or embedded from
    an older record, are skipped and logged: they stay for the next build) and the deny
    set folded into ``model``'s canonical ids."""
    canonical = model.canonical_map()
    denied = frozenset(canonical.canonical(i) for i in decode_ids(client.smembers(DENY_SET)))
    records: dict[bytes, bytes] = client.hgetall(NEW_ITEMS)  # type: ignore[assignment]
    stored: dict[bytes, bytes] = client.hgetall(fresh_vectors_key(model.model_version))  # type: ignore[assignment]
    ids, vectors, raws, waiting = [], [], [], 0
    for raw_id in sorted(records):
        item_id = raw_id.decode()
        try:
            item = decode_new_item(item_id, records[raw_id])
            raw_vector = stored.get(raw_id)
            if raw_vector is None:
                waiting += 1
                continue
            rev, vector = decode_fresh_vector(raw_vector, model.embedding_dim)
        except MalformedValue as exc:
            log.warning("fresh item %s not folded in: %s", item_id, exc)
            continue
        if rev != item.rev:
            waiting += 1
            continue
        ids.append(item_id)  # a new id, not one of the model's duplicate groups
        vectors.append(vector)
        raws.append(records[raw_id])
    if waiting:
        log.warning(
            "%d added item(s) have no vector of model %s yet; they stay fresh until the next build",
            waiting,
            model.model_version,
        )
    matrix = np.stack(vectors) if vectors else np.zeros((0, model.embedding_dim), dtype=np.float32)
    return CatalogueChanges(tuple(ids), matrix, tuple(raws), denied)


@dataclass(frozen=True)
class FoldedModel(ModelArtifact):
    """``model`` as the index builder reads it, with the catalogue changes applied: denied
    items left out (vectors, ids, popular list), added items appended (an added id the
    model already has replaces its vector)."""

    changes: CatalogueChanges = field(default_factory=CatalogueChanges)

    def _rows(self) -> tuple[list[str], list[int]]:
        added = set(self.changes.ids)
        base = ModelArtifact.item_ids(self)
        keep = [r for r, i in enumerate(base) if i not in self.changes.denied and i not in added]
        return [base[r] for r in keep], keep

    def item_ids(self) -> list[str]:
        ids, _ = self._rows()
        extra = [i for i in self.changes.ids if i not in self.changes.denied]
        return ids + extra

    def item_vectors(self) -> np.ndarray:
        _, keep = self._rows()
        base = ModelArtifact.item_vectors(self)[keep]
        extra_rows = [r for r, i in enumerate(self.changes.ids) if i not in self.changes.denied]
        if not extra_rows:
            return np.ascontiguousarray(base, dtype=np.float32)
        return np.concatenate([base, self.changes.vectors[extra_rows]]).astype(np.float32)

    def popular_items(self) -> list[dict[str, Any]]:
        return [
            p
            for p in ModelArtifact.popular_items(self)
            if str(p["item_id"]) not in self.changes.denied
        ]


def fold(model: ModelArtifact, changes: CatalogueChanges) -> ModelArtifact:
    """``model`` unchanged when there is nothing to fold, else a FoldedModel."""
    if changes.empty:
        return model
    log.info(
        "folding %d fresh item(s) in and %d denied item(s) out of model %s's index",
        len(changes.ids),
        len(changes.denied),
        model.model_version,
    )
    return FoldedModel(path=model.path, manifest=model.manifest, changes=changes)


def forget_folded(client: SyncRedis, model_version: str, changes: CatalogueChanges) -> int:
    """After the index holding ``changes`` is promoted: drop its added items from
    ``recall:items:new`` (each only if unchanged since the build read it) and from the
    model's fresh hash, then bump the rev. Returns the records removed."""
    if not changes.ids:
        return 0
    args: list[bytes] = []
    for item_id, raw in zip(changes.ids, changes.records, strict=True):
        args += [item_id.encode(), raw]
    removed = int(client.eval(DELETE_IF_UNCHANGED_LUA, 1, NEW_ITEMS, *args))
    client.hdel(fresh_vectors_key(model_version), *[i.encode() for i in changes.ids])
    client.incr(ITEMS_REV)
    log.info("%d folded item(s) left the fresh segment", removed)
    return removed


def index_item_ids(index_dir: Any) -> set[str]:
    """The external ids of an index artifact directory (its item_ids.json)."""
    return {str(i) for i in json.loads((index_dir / "item_ids.json").read_text())}
