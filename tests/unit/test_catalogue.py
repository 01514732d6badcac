"""catalogue: MinHash, LSH banding, SimHash, title normalisation, duplicate groups (ML-100K
against a labelled list), the canonical map and its file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from artifacts.checksums import MANIFEST_NAME, list_files
from artifacts.errors import ChecksumMismatch
from artifacts.store import ArtifactStore
from catalogue.canonical_map import (
    DUPLICATES_FILE,
    CanonicalMap,
    CanonicalMapError,
    DuplicateGroup,
    read_canonical_map,
    write_canonical_map,
)
from catalogue.config import DuplicateConfig, read_duplicate_config
from catalogue.duplicates import (
    DuplicateInputError,
    drop_aliases,
    find_duplicates,
    merge_interactions,
)
from catalogue.minhash import (
    bucket_pairs,
    candidate_probability,
    estimated_jaccard,
    lsh_candidates,
    minhash_signatures,
)
from catalogue.simhash import hamming, simhash64, simhash_candidates
from catalogue.text import jaccard, normalise_title, shingle_set, shingles
from recall_cli import paths
from serving.model_artifact import CanonicalMaps, fetch_canonical_map
from serving.recall_engine import fallback_candidates, select_candidates
from tests.unit.helpers import write_model_artifact
from training.data import ml100k

# --- text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Ice Storm, The (1997)", "the ice storm"),
        ("Ice Storm, The", "the ice storm"),
        ("The Ice Storm", "the ice storm"),
        ("Femme Nikita, La", "la femme nikita"),
        ("Shall We Dance?", "shall we dance"),
        ("Seven (Se7en)", "seven se7en"),
        ("  Ulee's   Gold ", "ulee s gold"),
    ],
)
def test_normalise_title(raw: str, normalised: str) -> None:
    assert normalise_title(raw) == normalised


def test_shingles_match_shingle_sets() -> None:
    texts = ["abcd", "ab", "", "abcdabcd", "é"]
    flat = shingles(texts, 3, 16)
    assert flat.counts.tolist() == [2, 1, 0, 6, 1]
    for r, text in enumerate(texts):
        mine = flat.codes[flat.offsets[r] : flat.offsets[r + 1]]
        assert len(set(mine.tolist())) == len(shingle_set(text, 3))
    assert flat.codes[0] == int.from_bytes(b"abc", "big")
    assert shingles(["abcdefgh"], 3, 5).counts.tolist() == [3]  # max_bytes truncates


# --- MinHash + banding -------------------------------------------------------------------


def test_minhash_estimate_matches_exact_jaccard_on_a_hand_case() -> None:
    # "abcdefgh" has 6 shingles, "abcdefxy" 6; shared: abc bcd cde def → 4 / 8 = 0.5.
    a, b = "abcdefgh", "abcdefxy"
    exact = jaccard(shingle_set(a, 3), shingle_set(b, 3))
    assert exact == pytest.approx(0.5)
    signatures = minhash_signatures(shingles([a, b], 3, 16), num_perm=2048, seed=3)
    estimate = float(estimated_jaccard(signatures, np.array([0]), np.array([1]))[0])
    # Standard error sqrt(s(1-s)/P) ≈ 0.011: 4 of them is a loose but real bound.
    assert estimate == pytest.approx(exact, abs=0.045)
    # Identical and disjoint texts are exact at any P.
    signatures = minhash_signatures(shingles([a, a, "zzzzqqqq"], 3, 16), num_perm=64, seed=3)
    pair = estimated_jaccard(signatures, np.array([0, 0]), np.array([1, 2]))
    assert pair.tolist() == [1.0, 0.0]


def test_minhash_chunking_does_not_change_signatures() -> None:
    texts = ["the ice storm", "", "ab", "chasing amy", "x" * 40, "money talks"]
    flat = shingles(texts, 3, 96)
    whole = minhash_signatures(flat, num_perm=16, seed=2)
    np.testing.assert_array_equal(minhash_signatures(flat, num_perm=16, seed=2, chunk=5), whole)
    assert (whole[1] == 0xFFFFFFFF).all()  # no shingles


def test_candidate_probability_formula() -> None:
    assert candidate_probability(1.0, 20, 5) == 1.0
    assert candidate_probability(0.0, 20, 5) == 0.0
    assert candidate_probability(0.5, 4, 2) == pytest.approx(1 - (1 - 0.25) ** 4)


def test_banding_candidate_rate_matches_one_minus_one_minus_s_r_to_the_b() -> None:
    """Signatures of pairs whose values agree with probability s: the share of pairs that
    share a band must be 1 - (1 - s^r)^b within sampling error."""
    rng = np.random.default_rng(5)
    bands, rows, pairs = 6, 3, 4000
    for s in (0.3, 0.5, 0.7):
        left = rng.integers(0, 2**32, size=(pairs, bands * rows), dtype=np.uint32)
        right = rng.integers(0, 2**32, size=(pairs, bands * rows), dtype=np.uint32)
        right = np.where(rng.random(left.shape) < s, left, right)
        signatures = np.empty((2 * pairs, bands * rows), dtype=np.uint32)
        signatures[0::2], signatures[1::2] = left, right
        a, b = lsh_candidates(signatures, bands, rows)
        found = set(zip(a.tolist(), b.tolist(), strict=True))
        rate = sum((2 * i, 2 * i + 1) in found for i in range(pairs)) / pairs
        expected = candidate_probability(s, bands, rows)
        assert rate == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / pairs))


def test_blocking_key_keeps_identical_signatures_apart() -> None:
    signatures = np.ones((3, 10), dtype=np.uint32)
    a, b = lsh_candidates(signatures, 5, 2, block=np.array([1, 1, 2], dtype=np.uint64))
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 1)]


def test_bucket_pairs_all_pairs_of_small_buckets_linear_in_large_ones() -> None:
    keys = np.array([7, 3, 7, 7, 3, 9], dtype=np.uint64)
    a, b = bucket_pairs(keys, max_neighbours=8)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 2), (0, 3), (2, 3), (1, 4)}
    big = np.zeros(100, dtype=np.uint64)
    a, b = bucket_pairs(big, max_neighbours=2)
    assert len(a) == 99 + 98  # each row with its next two: linear, still connected


# --- SimHash -----------------------------------------------------------------------------


def test_hamming_distance_hand_cases() -> None:
    a = np.array([0, 0b1011, 2**64 - 1, 0x8000000000000000], dtype=np.uint64)
    b = np.array([0, 0b0110, 0, 0], dtype=np.uint64)
    assert hamming(a, b).tolist() == [0, 3, 64, 1]


def test_simhash_of_equal_texts_is_equal_and_of_similar_texts_close() -> None:
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "the quick brown fox jumps over the lazy dog",
        "the quick brown fox jumped over the lazy dog",
        "completely different words entirely here",
    ]
    f = simhash64(shingles(texts, 3, 64))
    d = hamming(f[[0, 0, 0]], f[[1, 2, 3]])
    assert d[0] == 0
    assert d[1] < d[2]
    assert d[2] > 12  # unrelated texts: ~32 bits differ on average


def test_simhash_candidates_use_the_pigeonhole_blocks() -> None:
    base = np.uint64(0x0123456789ABCDEF)
    fingerprints = np.array(
        [base, base ^ np.uint64(0b101), base ^ np.uint64(0xF0F0), ~base], dtype=np.uint64
    )
    a, b = simhash_candidates(fingerprints, max_distance=3)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 1)]


# --- find_duplicates ---------------------------------------------------------------------


def _table(rows: list[tuple[str, str, int | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "year": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )


def test_find_duplicates_groups_canonical_and_reason() -> None:
    items = _table(
        [
            ("1", "Ice Storm, The", 1997),
            ("2", "The Ice Storm (1997)", 1997),
            ("3", "Cape Fear", 1962),
            ("4", "Cape Fear", 1991),
            ("5", "No Year", None),
            ("6", "No Year", None),
            ("10", "Ice storm, the", 1997),
        ]
    )
    interactions = pd.DataFrame({"user_id": ["a", "b", "c", "a"], "item_id": ["2", "2", "1", "10"]})
    methods: tuple[Literal["minhash", "simhash"], ...] = ("minhash", "simhash")
    for method in methods:
        cm = find_duplicates(items, DuplicateConfig(method=method), interactions)
        assert len(cm) == 1, method
        (group,) = cm.groups
        assert group.canonical_id == "2"  # most interactions
        assert group.item_ids == ("2", "1", "10")  # others by numeric id, not "10" < "2"
        assert group.reason.endswith("year 1997")
        assert cm.canonical("10") == "2" and cm.canonical("3") == "3"
    assert find_duplicates(items).groups[0].reason == "title jaccard 1.00, year 1997"
    # Ties in interactions → the smallest id; missing years merge only when asked to.
    cm = find_duplicates(items, DuplicateConfig(merge_missing_blocks=True))
    assert [g.item_ids for g in cm.groups] == [("1", "2", "10"), ("5", "6")]


def test_different_numbers_are_never_merged() -> None:
    items = _table(
        [
            ("1", "Synthetic item 12", 2000),
            ("2", "Synthetic item 123", 2000),
            ("3", "Item 12", 2000),
        ]
    )
    assert len(find_duplicates(items, DuplicateConfig(match_numbers=False))) == 1  # J = 0.94
    assert len(find_duplicates(items)) == 0


def test_co_interaction_confirmation_rejects_pairs_without_shared_users() -> None:
    items = _table([("1", "Same Film", 2000), ("2", "Same Film", 2000)])
    disjoint = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["1", "2"]})
    shared = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["1", "2", "2"]})
    config = DuplicateConfig(min_co_interaction=0.5)
    assert len(find_duplicates(items, config, disjoint)) == 0
    assert len(find_duplicates(items, config, shared)) == 1


def test_bad_input_and_config_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DuplicateInputError, match=r"lacks column\(s\) \['year'\]"):
        find_duplicates(pd.DataFrame({"item_id": ["1"], "title": ["x"]}))
    bad = tmp_path / "dup.yaml"
    bad.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="duplicates config must be a YAML mapping"):
        read_duplicate_config(bad)
    bad.write_text("bandz: 3\n")
    with pytest.raises(ValueError, match="bandz"):
        read_duplicate_config(bad)
    good = tmp_path / "ok.yaml"
    good.write_text("jaccard_threshold: 0.8\nblock_columns: []\n")
    assert read_duplicate_config(good, {"bands": 10}).num_perm == 50


def test_merge_interactions_and_drop_aliases() -> None:
    cm = CanonicalMap((DuplicateGroup("2", ("2", "1"), "r", 1.0),))
    inter = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["1", "3"]})
    assert merge_interactions(inter, cm)["item_id"].tolist() == ["2", "3"]
    assert inter["item_id"].tolist() == ["1", "3"]  # input untouched
    items = _table([("1", "x", 1), ("2", "x", 1), ("3", "y", 2)])
    assert drop_aliases(items, cm)["item_id"].tolist() == ["2", "3"]


# --- the canonical map file --------------------------------------------------------------


def test_canonical_map_round_trip_and_validation(tmp_path: Path) -> None:
    cm = CanonicalMap(
        (DuplicateGroup("268", ("268", "246"), "title jaccard 1.00, year 1997", 1.0),),
        "minhash",
        {"bands": 20},
    )
    write_canonical_map(tmp_path, cm)
    back = read_canonical_map(tmp_path)
    assert back.groups == cm.groups and back.method == "minhash"
    assert back.canonical_set(["246", "7"]) == frozenset({"268", "7"})
    assert read_canonical_map(tmp_path / "absent").groups == ()
    payload = json.loads((tmp_path / DUPLICATES_FILE).read_text())
    payload["groups"].append({"canonical_id": "9", "item_ids": ["9", "246"]})
    (tmp_path / DUPLICATES_FILE).write_text(json.dumps(payload))
    with pytest.raises(CanonicalMapError, match="'246' is in two duplicate groups"):
        read_canonical_map(tmp_path)
    (tmp_path / DUPLICATES_FILE).write_text('{"schema_id": "other"}')
    with pytest.raises(CanonicalMapError, match=r"expected recall\.duplicates/v1"):
        read_canonical_map(tmp_path)


# --- ML-100K against the labelled list ---------------------------------------------------

# Same normalised title AND same year, found by inspecting the catalogue (items.parquet
# grouped by (title, year)); canonical = the copy with more ratings.
ML100K_DUPLICATES = {
    ("268", "246"),  # Chasing Amy (1997): 255 vs 124 ratings
    ("305", "865"),  # Ice Storm, The (1997)
    ("670", "573"),  # Body Snatchers (1993): 36 vs 33
    ("1645", "1650"),  # Butcher Boy, The (1998): 1 vs 1, smallest id
    ("1234", "1654"),  # Chairman of the Board (1998)
    ("309", "1606"),  # Deceiver (1997)
    ("1257", "1256"),  # Designated Mourner, The (1997): 4 vs 3
    ("329", "348"),  # Desperate Measures (1998)
    ("304", "500"),  # Fly Away Home (1996)
    ("1175", "1617"),  # Hugo Pool (1997)
    ("1395", "1607"),  # Hurricane Streets (1998)
    ("266", "680"),  # Kull the Conqueror (1997)
    ("876", "881"),  # Money Talks (1997)
    ("1477", "1625"),  # Nightwatch (1997)
    ("1429", "1680"),  # Sliding Doors (1998)
    ("1658", "711"),  # Substance of Fire, The (1996): 3 vs 1
    ("878", "1003"),  # That Darn Cat! (1997); 1444 is the 1965 film
    ("303", "297"),  # Ulee's Gold (1997): 134 vs 50
}
ML100K_REMAKES = [
    ("218", "673"),
    ("274", "486"),
    ("1442", "1542"),
    ("251", "1286"),
    ("878", "1444"),
]


@pytest.fixture(scope="module")
def ml100k_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """ML-100K's items and interactions from the pinned recbole wheel (downloaded into
    $RECALL_HOME/cache once; the SHA-256 is checked either way)."""
    wheel = ml100k.download_wheel(paths.cache_dir())
    with zipfile.ZipFile(wheel) as zf:
        raw = {e: zf.read(f"{ml100k._MEMBER_PREFIX}.{e}") for e in ("inter", "item", "user")}
    interactions, items, _ = ml100k.convert(raw["inter"], raw["item"], raw["user"])
    return items, interactions


@pytest.mark.parametrize("method", ["minhash", "simhash"])
def test_ml100k_finds_exactly_the_labelled_18_groups(
    ml100k_tables: tuple[pd.DataFrame, pd.DataFrame], method: Literal["minhash", "simhash"]
) -> None:
    items, interactions = ml100k_tables
    cm = find_duplicates(items, DuplicateConfig(method=method), interactions)
    assert {g.item_ids for g in cm.groups} == ML100K_DUPLICATES  # all found, 0 false merges
    titles = items.set_index("item_id")["title"]
    for a, b in ML100K_REMAKES:
        assert titles[a] == titles[b]
        assert cm.canonical(a) != cm.canonical(b), f"remake {titles[a]} merged"
    assert all(g.reason.startswith("title") and "year 19" in g.reason for g in cm.groups)


# --- serving: the map read from a model artifact, and applied to answers -----------------


def _publish_model_with_map(tmp_path: Path, canonical: CanonicalMap) -> ArtifactStore:
    staging = tmp_path / "staging" / "20260101T000000Z-dup001"
    write_model_artifact(staging, n_items=30, n_users=5, dim=4, model_version=staging.name)
    write_canonical_map(staging, canonical)
    doc = json.loads((staging / MANIFEST_NAME).read_text())
    doc["files"] = list_files(staging)
    (staging / MANIFEST_NAME).write_text(json.dumps(doc))
    store = ArtifactStore(tmp_path / "artifacts")
    store.publish("models", staging.name, staging)
    return store


def test_fetch_canonical_map_checks_the_manifest_checksum(tmp_path: Path) -> None:
    cm = CanonicalMap((DuplicateGroup("item-1", ("item-1", "item-2"), "r", 1.0),))
    store = _publish_model_with_map(tmp_path, cm)
    version = "20260101T000000Z-dup001"
    assert fetch_canonical_map(store, version).aliases == {"item-2": "item-1"}
    assert CanonicalMaps(store).get(version).canonical("item-2") == "item-1"
    path = store.local_dir("models", version) / DUPLICATES_FILE
    path.write_text(path.read_text().replace("item-2", "item-3"))
    with pytest.raises(ChecksumMismatch, match=r"duplicates\.json differs"):
        fetch_canonical_map(store, version)
    # A server keeps answering (without the map) rather than failing every call.
    assert CanonicalMaps(store).get(version).groups == ()
    assert CanonicalMaps(store).get("20260101T000000Z-absent").groups == ()


def test_answers_carry_canonical_ids_once_and_exclusions_cover_both_copies() -> None:
    item_ids = ["a", "b", "b2", "c"]  # b2 is a copy of b
    aliases = {"b2": "b"}
    ids, scores = np.array([2, 1, 0, 3, -1]), np.array([0.9, 0.8, 0.7, 0.6, 0.0])
    assert select_candidates(ids, scores, item_ids, frozenset(), 5, aliases) == [
        ("b", 0.9),
        ("a", 0.7),
        ("c", 0.6),
    ]
    assert select_candidates(ids[:2], scores[:2], item_ids, frozenset(), 5, aliases) == [("b", 0.9)]
    assert select_candidates(ids, scores, item_ids, frozenset({"b"}), 2, aliases) == [
        ("a", 0.7),
        ("c", 0.6),
    ]
    popular = [("b2", 0.5), ("b", 0.3), ("a", 0.2)]
    assert fallback_candidates(popular, frozenset(), 3, aliases) == [("b", 0.5), ("a", 0.2)]
    assert fallback_candidates(popular, frozenset({"b"}), 3, aliases) == [("a", 0.2)]
