"""Leave-last-out split and recall@k evaluation of user/item vectors (numpy, exact search)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """``train``: all but each user's last interaction; ``test``: that last one, for users
    with at least two interactions whose held-out item also appears in ``train``."""

    train: pd.DataFrame
    test: pd.DataFrame


def leave_last_out(interactions: pd.DataFrame) -> Split:
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    is_last = ~ordered.duplicated("user_id", keep="last")
    counts = ordered.groupby("user_id")["item_id"].transform("size")
    test_mask = is_last & (counts >= 2)
    train, test = ordered[~test_mask], ordered[test_mask]
    test = test[test["item_id"].isin(set(train["item_id"]))]
    return Split(train=train.reset_index(drop=True), test=test.reset_index(drop=True))


def recall_at_k(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    target_items: np.ndarray,
    seen: list[np.ndarray],
    ks: list[int],
    chunk: int = 1024,
) -> dict[str, float]:
    """Fraction of users whose held-out item is in their exact top-k.

    Args:
        user_vectors: [n_users, dim] one row per evaluated user.
        item_vectors: [n_items, dim].
        target_items: [n_users] row index into ``item_vectors`` of each user's held-out item.
        seen: per user, item row indices from training to exclude from the ranking.
        ks: cut-offs; each must be ≤ n_items.
    Returns:
        ``{"recall@10": 0.12, ...}``.
    """
    metrics = ranking_metrics(user_vectors, item_vectors, target_items, seen, ks, chunk)
    return {f"recall@{k}": metrics[f"recall@{k}"] for k in ks}


def ranking_metrics(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    target_items: np.ndarray,
    seen: list[np.ndarray],
    ks: list[int],
    chunk: int = 1024,
) -> dict[str, float]:
    """Exact-search recall@k and NDCG@k (every k), MRR@min(k), one held-out item per user.

    Args as for ``recall_at_k``. With one relevant item, NDCG@k is 1/log2(rank + 1) when
    the item ranks within k (rank 1 = best) and MRR@k is 1/rank.
    """
    max_k = min(max(ks), item_vectors.shape[0])
    ranks = np.full(len(user_vectors), np.inf)
    for start in range(0, len(user_vectors), chunk):
        scores = user_vectors[start : start + chunk] @ item_vectors.T
        for row, seen_items in enumerate(seen[start : start + chunk]):
            scores[row, seen_items] = -np.inf
        top = np.argpartition(-scores, max_k - 1, axis=1)[:, :max_k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        match = top == target_items[start : start + chunk, None]
        found = match.any(axis=1)
        ranks[start : start + chunk][found] = match.argmax(axis=1)[found] + 1
    n = max(len(user_vectors), 1)
    out: dict[str, float] = {}
    for k in ks:
        within = ranks <= k
        out[f"recall@{k}"] = float(within.sum() / n)
        out[f"ndcg@{k}"] = float((1.0 / np.log2(ranks[within] + 1)).sum() / n)
    k = min(ks)
    out[f"mrr@{k}"] = float((1.0 / ranks[ranks <= k]).sum() / n)
    return out


def popularity_recall_at_k(
    train: pd.DataFrame, test: pd.DataFrame, ks: list[int]
) -> dict[str, float]:
    """recall@k of recommending the most popular unseen items (the baseline to beat)."""
    ranked = train["item_id"].value_counts().index.tolist()
    seen = train.groupby("user_id")["item_id"].agg(set).to_dict()
    max_k = max(ks)
    hits = {k: 0 for k in ks}
    for user, target in zip(test["user_id"], test["item_id"], strict=True):
        user_seen = seen.get(user, set())
        top: list[str] = []
        for item in ranked:
            if item not in user_seen:
                top.append(item)
                if len(top) == max_k:
                    break
        for k in ks:
            hits[k] += target in top[:k]
    n = max(len(test), 1)
    return {f"popularity_recall@{k}": hits[k] / n for k in ks}
