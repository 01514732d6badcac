"""Pure parts of the classic-index peer benchmark (bench/peer_report.py): the MIPS → L2
reduction, ragged id lists, recall with padding, the --peers parser and the table."""

from __future__ import annotations

import numpy as np
import pytest

from bench.peer_indexes import scann_leaves
from bench.peer_report import (
    PEER_NAMES,
    BuildCost,
    PeerRow,
    format_table,
    mips_to_l2,
    pad_ids,
    parse_peers,
    percentiles_ms,
    query_for_l2,
)
from serving.index.build import recall_against


def test_mips_to_l2_turns_inner_product_order_into_l2_order() -> None:
    rng = np.random.default_rng(0)
    # Norms deliberately spread (0.1 .. 3): on unit vectors IP and L2 agree anyway.
    items = rng.normal(size=(300, 8)) * rng.uniform(0.1, 3.0, size=(300, 1))
    queries = rng.normal(size=(20, 8)) * 2.5
    augmented, m = mips_to_l2(items)
    q = query_for_l2(queries)
    assert augmented.shape == (300, 9) and q.shape == (20, 9)
    assert m == pytest.approx(np.linalg.norm(items, axis=1).max(), rel=1e-6)
    # Every augmented item lies on the sphere of radius M.
    np.testing.assert_allclose(np.linalg.norm(augmented, axis=1), m, rtol=1e-5)
    by_ip = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    l2 = ((q[:, None, :] - augmented[None, :, :]) ** 2).sum(axis=2)
    by_l2 = np.argsort(l2, axis=1)[:, :10]
    np.testing.assert_array_equal(by_ip, by_l2)
    # Plain L2 on the raw items would rank differently (the reduction is doing the work).
    raw_l2 = ((queries[:, None, :] - items[None, :, :]) ** 2).sum(axis=2)
    assert not np.array_equal(np.argsort(raw_l2, axis=1)[:, :10], by_ip)


def test_mips_to_l2_longest_item_gets_zero_extra_coordinate() -> None:
    items = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    augmented, m = mips_to_l2(items)
    assert m == pytest.approx(5.0)
    np.testing.assert_allclose(augmented[:, 2], [0.0, np.sqrt(24.0), 5.0], rtol=1e-6)


def test_pad_ids_pads_short_lists_with_minus_one_and_cuts_long_ones() -> None:
    out = pad_ids([[4, 2], [1, 2, 3, 9], []], k=3)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[4, 2, -1], [1, 2, 3], [-1, -1, -1]])


def test_recall_of_padded_results_counts_only_real_ids() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = pad_ids([[1, 2], [8, 7, 6, 5]], k=4)
    # First query finds 2 of 4, second all 4 (order does not matter): (2 + 4) / 8.
    assert recall_against(truth, found, 4) == pytest.approx(0.75)
    assert recall_against(truth, found, 2) == pytest.approx(0.5)  # top-2: {1,2} ✓, {5,6} ✗


def test_parse_peers_all_subset_and_unknown() -> None:
    assert parse_peers("all") == list(PEER_NAMES)
    # Table order, exact (the reference) always added, spaces and case tolerated.
    assert parse_peers(" LSH, scann") == ["exact", "scann", "lsh"]
    with pytest.raises(ValueError, match="unknown peer\\(s\\) faiss, nmslib"):
        parse_peers("scann,nmslib,faiss")


def test_percentiles_in_milliseconds() -> None:
    p50, p99 = percentiles_ms([0.001] * 99 + [0.1])
    assert p50 == pytest.approx(1.0)
    assert 1.0 < p99 <= 100.0


def test_format_table_build_columns_only_on_first_row_of_a_build() -> None:
    cost = BuildCost(seconds=12.34, threads=2, rss_mib=100.4, size_mib=None, note="cached")
    rows = [
        PeerRow("Annoy 25 trees", "search_k=2500", 0.5, 0.25, 1.0, 2.0, None, cost),
        PeerRow("Annoy 25 trees", "search_k=10000", 0.9, 0.8, 3.0, 4.0, None, None),
        PeerRow("ScaNN", "leaves 5/10", 1.0, 0.95, 0.02, 0.05, 12.345, None),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].startswith("| peer | setting | recall@10 | recall@100 |")
    assert lines[1] == "|" + "---|" * 10
    assert lines[2] == (
        "| Annoy 25 trees | search_k=2500 | 0.500 | 0.250 | 1.000 | 2.000 | — "
        "| 12.3 (2) cached | 100 | — |"
    )
    assert lines[3].endswith("| 3.000 | 4.000 | — |  |  |  |")
    assert "| 12.3 |" in lines[4]  # batched µs/query when the library batches
    assert all(line.count("|") == 11 for line in lines)


def test_scann_leaves_follow_its_documented_scale() -> None:
    assert scann_leaves(1_000_000) == 2000
    assert scann_leaves(100_000) == 632
    assert scann_leaves(1) == 2
