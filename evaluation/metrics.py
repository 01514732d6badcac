"""Top-k ranking metrics: Recall, NDCG, MRR and Hit at k, per user and averaged.

Definitions (RecBole 1.2.1's ``evaluator/metrics.py``), for a user with relevant set R and
ranked list L (best first), ``hits_i = [L_i ∈ R]``:

- ``recall@k = Σ_{i≤k} hits_i / |R|``
- ``ndcg@k  = Σ_{i≤k} hits_i / log2(i+1)  ÷  Σ_{i≤min(|R|,k)} 1 / log2(i+1)``
- ``mrr@k   = 1 / (rank of the first hit)`` if it is within k, else 0
- ``hit@k   = 1`` if any of the first k is relevant, else 0

Averages are over users with at least one relevant item. Lists shorter than k (a served
answer with fewer candidates) simply have no hits past their end.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

KS = (10, 50, 100)
METRICS = ("recall", "ndcg", "mrr", "hit")


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """``["recall@10", "ndcg@10", "mrr@10", "hit@10", "recall@50", …]``."""
    return [f"{m}@{k}" for k in ks for m in METRICS]


def hits_from_lists(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], depth: int
) -> np.ndarray:
    """[n_users, depth] bool: ``ranked[u][i] in relevant[u]`` (False past a list's end)."""
    hits = np.zeros((len(ranked), depth), dtype=bool)
    for u, (items, rel) in enumerate(zip(ranked, relevant, strict=True)):
        for i, item in enumerate(items[:depth]):
            hits[u, i] = item in rel
    return hits


def hits_from_rows(ranked: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """[n_users, depth] bool from item columns.

    Args:
        ranked: [n_users, depth] int item columns, best first; -1 marks "no item".
        relevant: [n_users, n_items] bool/0-1 relevance of every item for each user.
    """
    picked = np.take_along_axis(relevant.astype(bool), np.clip(ranked, 0, None), axis=1)
    return picked & (ranked >= 0)


def per_user_metrics(
    hits: np.ndarray, n_relevant: np.ndarray, ks: Sequence[int] = KS
) -> dict[str, np.ndarray]:
    """Each metric of :data:`METRICS` at each k, per user.

    Args:
        hits: [n_users, depth] bool, depth ≥ max(ks) (shorter lists: pad with False).
        n_relevant: [n_users] int, |R| per user; every entry must be ≥ 1.
    Returns:
        ``{"recall@10": [n_users] float64, …}``.
    """
    depth = max(ks)
    if hits.shape[1] < depth:
        hits = np.pad(hits, ((0, 0), (0, depth - hits.shape[1])))
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if (n_relevant < 1).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    hits = hits[:, :depth].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, depth + 2))  # position i (1-based) → 1/log2(i+1)
    dcg = np.cumsum(hits * discount, axis=1)
    ideal = np.cumsum(discount)
    cum_hits = np.cumsum(hits, axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), depth)  # 0-based, depth = none
    out: dict[str, np.ndarray] = {}
    for k in ks:
        idcg = ideal[np.minimum(n_relevant, k).astype(np.int64) - 1]
        out[f"recall@{k}"] = cum_hits[:, k - 1] / n_relevant
        out[f"ndcg@{k}"] = dcg[:, k - 1] / idcg
        out[f"mrr@{k}"] = np.where(first < k, 1.0 / (first + 1), 0.0)
        out[f"hit@{k}"] = (cum_hits[:, k - 1] > 0).astype(np.float64)
    return out


def mean_metrics(
    per_user: dict[str, np.ndarray], rows: np.ndarray | None = None
) -> dict[str, float]:
    """Average of each per-user metric over ``rows`` (bool mask or indices; None = all).

    An empty selection gives NaN for every metric.
    """
    out: dict[str, float] = {}
    for name, values in per_user.items():
        picked = values if rows is None else values[rows]
        out[name] = float(picked.mean()) if picked.size else float("nan")
    return out


def ranking_metrics(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Mean metrics of ranked id lists against relevant id sets (one pair per user)."""
    hits = hits_from_lists(ranked, relevant, max(ks))
    n_relevant = np.array([len(r) for r in relevant])
    return mean_metrics(per_user_metrics(hits, n_relevant, ks))
