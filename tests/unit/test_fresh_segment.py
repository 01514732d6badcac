"""The fresh segment and deny set (serving.fresh_segment), the catalogue keys
(keyspace.catalogue_items) and the item feature checks (serving.new_items): pure logic,
no Redis, no server. The engine tests use the hand-made index of tests/unit/helpers.py."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from keyspace.catalogue_items import (
    DENY_SET,
    ITEMS_REV,
    NEW_ITEMS,
    NewItem,
    decode_fresh_vector,
    decode_new_item,
    encode_fresh_vector,
    encode_new_item,
    fresh_vectors_key,
)
from keyspace.user_vectors import MalformedValue
from serving.errors import InvalidRequest
from serving.fresh_segment import FreshSegment, build_segment, merge_candidates
from serving.index.loaded import LoadedIndex
from serving.new_items import FeatureRule, exports_item_tower, feature_rules, validate_items
from serving.recall_engine import RecallQuery
from tests.unit.helpers import unit_rows
from tests.unit.test_recall_engine import Setup

# --- keys and values ------------------------------------------------------------------------


def test_fresh_vector_value_is_rev_then_float32_bytes() -> None:
    raw = encode_fresh_vector(7, np.array([1.0, -2.0], dtype=np.float32))
    assert raw == b"\x07\x00\x00\x00\x00\x00\x00\x00" + b"\x00\x00\x80?" + b"\x00\x00\x00\xc0"
    rev, vector = decode_fresh_vector(raw, 2)
    assert rev == 7 and vector.tolist() == [1.0, -2.0]
    with pytest.raises(MalformedValue, match="expected 20"):
        decode_fresh_vector(raw, 3)


def test_catalogue_key_formats() -> None:
    assert fresh_vectors_key("m1") == b"recall:items:fresh:m1"
    assert (NEW_ITEMS, DENY_SET, ITEMS_REV) == (
        b"recall:items:new",
        b"recall:items:deny",
        b"recall:items:rev",
    )
    item = NewItem("x", {"genres": "Drama|War", "year": "1995"}, 3, 10.0)
    raw = encode_new_item(item)
    assert raw == b'{"added_at":10.0,"features":{"genres":"Drama|War","year":"1995"},"rev":3}'
    assert decode_new_item("x", raw) == item
    with pytest.raises(MalformedValue):
        decode_new_item("x", b'{"features": 1, "rev": 2}')


# --- merge -----------------------------------------------------------------------------------


def test_merge_is_by_score_distinct_excluding_and_fills_k() -> None:
    index_row = [("a", 0.9), ("b", 0.5), ("c", 0.4), ("d", 0.1)]
    fresh_row = [("n1", 0.7), ("b", 0.6), ("n2", 0.45), ("n3", 0.2)]
    merged = merge_candidates(index_row, fresh_row, frozenset({"n2"}), 4)
    # b appears once, with its best score; n2 is excluded; k=4 is filled from below.
    assert merged == [("a", 0.9), ("n1", 0.7), ("b", 0.6), ("c", 0.4)]


def test_merge_with_a_short_index_row_still_fills_k_from_the_fresh_items() -> None:
    merged = merge_candidates([("a", 0.3)], [("n1", 0.9), ("n2", 0.1)], frozenset(), 3)
    assert merged == [("n1", 0.9), ("a", 0.3), ("n2", 0.1)]


def _segment(vectors: np.ndarray, deny: frozenset[str] = frozenset()) -> FreshSegment:
    ids = tuple(f"new-{i}" for i in range(len(vectors)))
    return FreshSegment("m", "i", ids, vectors.astype(np.float32), deny)


def test_exact_search_matches_brute_force_order() -> None:
    rng = np.random.default_rng(3)
    segment = _segment(unit_rows(rng.normal(size=(30, 8))))
    queries = unit_rows(rng.normal(size=(4, 8)))
    scores, rows = segment.search(queries, 5)
    expected = np.argsort(-(queries @ segment.vectors.T), axis=1)[:, :5]
    assert rows.tolist() == expected.tolist()
    assert all(a >= b for row in scores for a, b in itertools.pairwise(row))
    # Deeper than the segment: every item, best first.
    assert segment.search(queries, 100)[1].shape == (4, 30)


# --- snapshot --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("fresh"))


def test_build_segment_folds_canonical_ids_and_leaves_out_indexed_items(setup: Setup) -> None:
    loaded: LoadedIndex = setup.loaded
    dim = loaded.manifest.dim
    vec = encode_fresh_vector(1, np.ones(dim, dtype=np.float32) / np.sqrt(dim))
    raw = {b"new-1": vec, b"item-3": vec, b"bad": b"\x00" * 12}
    aliases = {"copy-of-7": "item-7"}
    segment = build_segment(loaded, raw, ["copy-of-7"], lambda i: aliases.get(i, i), 10)
    assert segment is not None
    assert segment.ids == ("new-1",)  # item-3 is indexed already; "bad" has another size
    assert segment.deny == frozenset({"item-7"})
    assert build_segment(loaded, {}, [], lambda i: i, 10) is None
    capped = build_segment(loaded, {b"a": vec, b"b": vec}, [], lambda i: i, 1)
    assert capped is not None and capped.ids == ("a",)


def test_engine_merges_fresh_items_and_drops_denied_ones_with_k_filled(setup: Setup) -> None:
    engine = setup.engine()
    user = "user-5"
    query = RecallQuery(user, 10)
    (before,) = asyncio.run(engine.recall([query]))
    top = [i for i, _ in before.candidates]
    vector = setup.user_vectors[user]
    # A fresh item that is exactly the user's vector outscores everything in the index;
    # a far one never shows.
    fresh = np.stack([vector, -vector]).astype(np.float32)
    engine.fresh_segment = FreshSegment(
        setup.loaded.model_version,
        setup.loaded.index_version,
        ("fresh-near", "fresh-far"),
        fresh,
        frozenset({top[0], top[1]}),
    )
    (after,) = asyncio.run(engine.recall([query]))
    ids = [i for i, _ in after.candidates]
    scores = [s for _, s in after.candidates]
    assert ids[0] == "fresh-near"
    assert "fresh-far" not in ids
    assert top[0] not in ids and top[1] not in ids
    assert len(ids) == 10 and len(set(ids)) == 10
    assert all(a >= b for a, b in itertools.pairwise(scores))
    # Excluding the fresh item by id works like any other exclusion.
    (excluded,) = asyncio.run(engine.recall([RecallQuery(user, 10, frozenset({"fresh-near"}))]))
    assert "fresh-near" not in [i for i, _ in excluded.candidates]
    # Denied items leave fallback answers too; a fresh segment of another model is not
    # searched (its vectors are another model's) but its deny set still holds.
    engine.fresh_segment = FreshSegment("other", "x", ("fresh-near",), fresh[:1], frozenset())
    (other,) = asyncio.run(engine.recall([query]))
    assert "fresh-near" not in [i for i, _ in other.candidates]
    popular = setup.loaded.popular[0][0]
    engine.fresh_segment = FreshSegment("m", "i", (), fresh[:0], frozenset({popular}))
    (fallback,) = asyncio.run(engine.recall([RecallQuery("nobody", 5)]))
    assert popular not in [i for i, _ in fallback.candidates]
    assert len(fallback.candidates) == 5
    engine.fresh_segment = None
    (back,) = asyncio.run(engine.recall([query]))
    assert [i for i, _ in back.candidates] == top


# --- feature checks --------------------------------------------------------------------------

MANIFEST = {
    "features": {
        "item": [
            {"column": "genres", "kind": "multi_categorical", "size": 20},
            {"column": "year", "kind": "bucketized", "size": 11, "boundaries": [1990.0]},
            {"column": "content", "kind": "lsh_buckets", "source_columns": ["title", "year"]},
        ]
    }
}


def test_feature_rules_from_the_manifest() -> None:
    rules = feature_rules(MANIFEST)
    assert rules == {
        "genres": FeatureRule("genres", "multi_categorical"),
        "year": FeatureRule("year", "bucketized"),
        "title": FeatureRule("title", "content"),
    }
    assert feature_rules({}) == {}
    assert exports_item_tower({"files": [{"path": "item_tower/saved_model.pb"}]})
    assert not exports_item_tower({"files": [{"path": "user_tower/saved_model.pb"}]})


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (
            {"genres": "Drama", "year": "1995"},
            r"items\[0\] \(item 'n1'\): feature 'title'.*missing",
        ),
        ({"genres": "Drama", "year": "soon", "title": "X"}, "'year' .*finite number, got 'soon'"),
        ({"genres": "|", "year": "1995", "title": "X"}, "'genres' .*empty"),
        ({"genres": "D", "year": "1", "title": "X", "colour": "red"}, "unknown feature 'colour'"),
    ],
)
def test_bad_or_missing_features_name_the_field(features: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_items([("n1", features)], feature_rules(MANIFEST), 10)


def test_item_count_ids_and_repeats_are_checked() -> None:
    good = {"genres": "Drama", "year": "1995", "title": "X"}
    rules = feature_rules(MANIFEST)
    validate_items([("a", good), ("b", good)], rules, 10)
    with pytest.raises(InvalidRequest, match="at most 1 per call"):
        validate_items([("a", good), ("b", good)], rules, 1)
    with pytest.raises(InvalidRequest, match=r"items\[1\]: item_id 'a' appears twice"):
        validate_items([("a", good), ("a", good)], rules, 10)
    with pytest.raises(InvalidRequest, match="item_id is required"):
        validate_items([("", good)], rules, 10)
