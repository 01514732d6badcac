"""evaluation.metrics: Recall/NDCG/MRR/Hit@k against rankings computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import (
    hits_from_lists,
    hits_from_rows,
    mean_metrics,
    metric_names,
    per_user_metrics,
    ranking_metrics,
)
from evaluation.ranking import rank_users, top_k


def test_one_user_two_relevant_items_by_hand() -> None:
    # ranked a b c d e; relevant {b, d} → hits at positions 2 and 4.
    m = ranking_metrics([["a", "b", "c", "d", "e"]], [{"b", "d"}], ks=(1, 3, 5))
    assert m["recall@1"] == 0.0 and m["hit@1"] == 0.0 and m["mrr@1"] == 0.0
    assert m["recall@3"] == pytest.approx(0.5)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["mrr@3"] == pytest.approx(0.5) and m["mrr@5"] == pytest.approx(0.5)
    assert m["hit@3"] == 1.0
    # DCG@3 = 1/log2(3); IDCG@3 = 1 + 1/log2(3) (two relevant items, both could be on top).
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # DCG@5 = 1/log2(3) + 1/log2(5); IDCG@5 = 1 + 1/log2(3).
    assert m["ndcg@5"] == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    )


def test_ideal_dcg_is_cut_at_k_when_more_items_are_relevant() -> None:
    # 3 relevant, k = 2, both top slots relevant → NDCG@2 = 1 but recall@2 = 2/3.
    m = ranking_metrics([["x", "y", "z"]], [{"x", "y", "z"}], ks=(2,))
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)


def test_means_over_users_and_short_lists() -> None:
    ranked = [["a", "b"], ["c"], []]  # answers shorter than k have no hits past their end
    relevant = [{"a"}, {"z"}, {"q"}]
    m = ranking_metrics(ranked, relevant, ks=(10,))
    assert m["recall@10"] == pytest.approx(1 / 3)
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["ndcg@10"] == pytest.approx(1 / 3)
    assert m["hit@10"] == pytest.approx(1 / 3)


def test_mrr_uses_the_first_hit_only() -> None:
    m = ranking_metrics([["a", "b", "c"]], [{"c", "b"}], ks=(3,))
    assert m["mrr@3"] == pytest.approx(0.5)


def test_row_and_list_paths_agree_and_minus_one_is_no_item() -> None:
    relevant = np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float32)
    ranked = np.array([[1, 0, -1], [2, 3, 0]])
    hits = hits_from_rows(ranked, relevant)
    assert hits.tolist() == [[True, False, False], [False, False, True]]
    ids = ["i0", "i1", "i2", "i3"]
    as_lists = [[ids[c] for c in row if c >= 0] for row in ranked]
    rel_sets = [{ids[c] for c in np.flatnonzero(r)} for r in relevant]
    assert (hits_from_lists(as_lists, rel_sets, 3) == hits).all()


def test_per_user_and_slices() -> None:
    hits = np.array([[True, False], [False, False]])
    per_user = per_user_metrics(hits, np.array([1, 2]), ks=(2,))
    assert per_user["recall@2"].tolist() == [1.0, 0.0]
    assert mean_metrics(per_user, np.array([True, False]))["recall@2"] == 1.0
    assert math.isnan(mean_metrics(per_user, np.array([False, False]))["hit@2"])
    with pytest.raises(ValueError, match="relevant"):
        per_user_metrics(hits, np.array([1, 0]), ks=(2,))


def test_metric_names_order() -> None:
    assert metric_names((10,)) == ["recall@10", "ndcg@10", "mrr@10", "hit@10"]


def test_top_k_masks_and_pads() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, -np.inf, 0.2, 0.3]], dtype=np.float32)
    masked = np.array([[0, 1, 0, 0], [1, 0, 0, 0]])
    top = top_k(scores.copy(), masked, 4)
    # Row 0: item 1 masked; tie 2/3 keeps the lower column first. Row 1: 0 masked, 1 is -inf.
    assert top.tolist() == [[2, 3, 0, -1], [3, 2, -1, -1]]


def test_rank_users_in_chunks() -> None:
    scores = np.arange(12, dtype=np.float32).reshape(3, 4)

    def score_fn(rows: np.ndarray) -> np.ndarray:
        return scores[rows]

    ranked = rank_users(score_fn, np.array([2, 0]), np.zeros((2, 4)), 2, chunk=1)
    assert ranked.tolist() == [[3, 2], [3, 2]]
