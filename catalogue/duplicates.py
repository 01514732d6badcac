"""Find near-duplicate items of a catalogue table and collapse each group onto one id.

1. Text: the configured text columns, each normalised (``text.normalise_title``), joined.
2. Blocking: the configured attribute columns (default ``year``) must be equal; they are
   part of every bucket key, so remakes (same title, another year) are never compared.
3. Candidates: MinHash + LSH banding (default) or SimHash bit-block buckets.
4. Confirmation: exact shingle Jaccard ≥ ``jaccard_threshold`` (MinHash) or Hamming
   distance ≤ ``max_hamming`` (SimHash); the same numbers in both texts
   (``match_numbers``: "Item 12" is not "Item 123"); optionally a least co-interaction
   overlap.
5. Groups: connected components of the confirmed pairs. Canonical id: the member with the
   most interactions, ties → the smallest id (numerically when ids are numbers).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from catalogue.canonical_map import CanonicalMap, DuplicateGroup
from catalogue.config import DuplicateConfig
from catalogue.minhash import combine_keys, lsh_candidates, minhash_signatures
from catalogue.simhash import BITS, hamming, simhash64, simhash_candidates
from catalogue.text import jaccard, normalise_title, shingle_set, shingles

_NUMBER = re.compile(r"\d+")


def _numbers(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Each text's numbers ("12 3"), and their CRC-32 as a [n] uint64 blocking key."""
    found = [" ".join(_NUMBER.findall(t)) for t in texts]
    return found, np.array([zlib.crc32(f.encode()) for f in found], dtype=np.uint64)


class DuplicateInputError(ValueError):
    """The items table cannot be compared as configured; the message names the column."""


def _texts(items: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    parts = []
    for column in columns:
        values = items[column]
        parts.append(
            [normalise_title(v) if isinstance(v, str) else "" for v in values.tolist()]
            if values.dtype == object or pd.api.types.is_string_dtype(values)
            else [normalise_title(str(v)) if pd.notna(v) else "" for v in values.tolist()]
        )
    return [" ".join(p for p in row if p) for row in zip(*parts, strict=True)]


def _blocks(items: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(block key [n] uint64, present [n] bool: every blocking attribute is set)."""
    n = len(items)
    if not columns:
        return np.zeros(n, dtype=np.uint64), np.ones(n, dtype=bool)
    codes = np.empty((n, len(columns)), dtype=np.int64)
    for c, column in enumerate(columns):
        codes[:, c], _ = pd.factorize(items[column], use_na_sentinel=True)
    present = np.asarray((codes >= 0).all(axis=1), dtype=bool)
    return combine_keys(codes.astype(np.uint64)), present


def _id_order(item_id: str) -> tuple[int, int, str]:
    """Sort key: numeric ids by value first, then other ids as strings."""
    return (0, int(item_id), "") if item_id.isdigit() else (1, 0, item_id)


def _components(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components (row lists, sorted) of an undirected edge list."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for node in parent:
        groups.setdefault(find(node), []).append(node)
    return [sorted(g) for g in groups.values()]


def find_duplicates(
    items: pd.DataFrame,
    config: DuplicateConfig | None = None,
    interactions: pd.DataFrame | None = None,
) -> CanonicalMap:
    """Duplicate groups of ``items`` (one row per item, column ``item_id``).

    ``interactions`` (``user_id``, ``item_id``), when given, choose the canonical id (most
    interactions) and feed the optional co-interaction confirmation.

    Raises:
        DuplicateInputError: a configured column is missing, or item ids repeat.
    """
    config = config or DuplicateConfig()
    if not config.enabled or items.empty:
        return CanonicalMap(method=config.method, config=config.model_dump())
    needed = ["item_id", *config.text_columns, *config.block_columns]
    missing = [c for c in needed if c not in items.columns]
    if missing:
        raise DuplicateInputError(
            f"items table lacks column(s) {missing} needed for duplicate detection; "
            f"found {list(items.columns)}"
        )
    ids = items["item_id"].astype(str).tolist()
    if len(set(ids)) != len(ids):
        raise DuplicateInputError("items table lists an item_id more than once")
    texts = _texts(items, config.text_columns)
    block, present = _blocks(items, config.block_columns)
    eligible = np.array([bool(t) for t in texts]) & (present | config.merge_missing_blocks)
    rows = np.flatnonzero(eligible)
    sub_texts = [texts[r] for r in rows]
    shingled = shingles(sub_texts, config.shingle_size, config.max_text_bytes)
    sub_block = block[rows]
    numbers: list[str] = []
    if config.match_numbers:
        # In the bucket key: pairs with other numbers are not even candidates.
        numbers, number_key = _numbers(sub_texts)
        sub_block = combine_keys(np.column_stack([sub_block, number_key]))

    similarity: np.ndarray
    if config.method == "minhash":
        signatures = minhash_signatures(shingled, config.num_perm, config.seed)
        left, right = lsh_candidates(
            signatures, config.bands, config.rows, sub_block, config.max_bucket_neighbours
        )
        # Only candidate pairs get exact Jaccard: a handful of set operations each.
        k = config.shingle_size
        similarity = np.array(
            [
                jaccard(shingle_set(sub_texts[a], k), shingle_set(sub_texts[b], k))
                for a, b in zip(left.tolist(), right.tolist(), strict=True)
            ],
            dtype=np.float64,
        )
        keep = similarity >= config.jaccard_threshold
    else:
        fingerprints = simhash64(shingled)
        left, right = simhash_candidates(
            fingerprints, config.max_hamming, sub_block, config.max_bucket_neighbours
        )
        distance = hamming(fingerprints[left], fingerprints[right])
        similarity = 1.0 - distance / BITS
        keep = distance <= config.max_hamming
    if config.match_numbers:  # CRC-32 keys may collide; the strings decide
        keep &= np.array(
            [numbers[a] == numbers[b] for a, b in zip(left.tolist(), right.tolist(), strict=True)],
            dtype=bool,
        )
    left, right, similarity = rows[left[keep]], rows[right[keep]], similarity[keep]

    counts: dict[str, int] = {}
    if interactions is not None and len(left):
        involved = {ids[r] for r in np.concatenate([left, right]).tolist()}
        mine = interactions.loc[interactions["item_id"].isin(involved), ["item_id", "user_id"]]
        counts = mine["item_id"].astype(str).value_counts().to_dict()
        if config.min_co_interaction is not None:
            users = {str(k): set(v) for k, v in mine.groupby("item_id")["user_id"]}
            overlap = np.array(
                [
                    jaccard(users.get(ids[a], set()), users.get(ids[b], set()))
                    for a, b in zip(left.tolist(), right.tolist(), strict=True)
                ]
            )
            ok = overlap >= config.min_co_interaction
            left, right, similarity = left[ok], right[ok], similarity[ok]
    pairs = list(zip(left.tolist(), right.tolist(), strict=True))
    components = _components(pairs)
    component_of = {row: c for c, members in enumerate(components) for row in members}
    # The group's similarity is its weakest confirmed link.
    weakest = [1.0] * len(components)
    for (a, _), s in zip(pairs, similarity.tolist(), strict=True):
        c = component_of[a]
        weakest[c] = min(weakest[c], s)
    block_values = [items[column].tolist() for column in config.block_columns]
    groups = []
    label = "+".join(config.text_columns)
    for members, worst in zip(components, weakest, strict=True):
        member_ids = [ids[r] for r in members]
        canonical = min(member_ids, key=lambda i: (-counts.get(i, 0), _id_order(i)))
        others = sorted((i for i in member_ids if i != canonical), key=_id_order)
        if config.method == "minhash":
            measure = f"{label} jaccard {worst:.2f}"
        else:
            measure = f"{label} simhash distance {round((1 - worst) * BITS)}/{BITS}"
        block_text = ", ".join(
            f"{column} {values[members[0]]}"
            for column, values in zip(config.block_columns, block_values, strict=True)
        )
        groups.append(
            DuplicateGroup(
                canonical_id=canonical,
                item_ids=(canonical, *others),
                reason=", ".join(p for p in (measure, block_text) if p),
                similarity=float(worst),
            )
        )
    groups.sort(key=lambda g: _id_order(g.canonical_id))
    settings: dict[str, Any] = config.model_dump()
    return CanonicalMap(tuple(groups), config.method, settings)


def merge_interactions(interactions: pd.DataFrame, canonical: CanonicalMap) -> pd.DataFrame:
    """``interactions`` with every item id replaced by its canonical id (a copy when
    anything changes). A user who saw both copies keeps both rows: two interactions with
    one item, as if they had watched it twice."""
    aliases = canonical.aliases
    if not aliases:
        return interactions
    merged = interactions.copy()
    merged["item_id"] = merged["item_id"].map(aliases).fillna(merged["item_id"])
    return merged


def drop_aliases(items: pd.DataFrame, canonical: CanonicalMap) -> pd.DataFrame:
    """``items`` without the rows of non-canonical ids (the canonical row keeps its
    features)."""
    aliases = canonical.aliases
    if not aliases:
        return items
    return items.loc[~items["item_id"].isin(aliases)].reset_index(drop=True)
