"""Exact top-k over a score matrix with masked items (the reference every path is held to)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""rows: [n] int64 catalogue user rows → [n, n_items] float32 scores (-inf: never rank)."""


def top_k(scores: np.ndarray, masked: np.ndarray, k: int) -> np.ndarray:
    """[n, k] int64 item columns, best first; masked and -inf items never appear (-1 pads).

    Args:
        scores: [n, n_items] float scores (modified in place: masked entries become -inf).
        masked: [n, n_items] bool/0-1, items the user must not be recommended.
        k: list length (≤ n_items).
    Deterministic: equal scores inside the top k keep the lower column first.
    """
    k = min(k, scores.shape[1])
    scores[masked.astype(bool)] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top[np.take_along_axis(scores, top, axis=1) == -np.inf] = -1
    return top


def rank_users(
    score_fn: ScoreFn, rows: np.ndarray, masked: np.ndarray, k: int, chunk: int = 1024
) -> np.ndarray:
    """[len(rows), k] top-k item columns of ``score_fn`` for catalogue user ``rows``.

    Args:
        masked: [len(rows), n_items] 0/1, the items to mask for each of ``rows``.
    """
    parts = [
        top_k(
            np.array(score_fn(rows[s : s + chunk]), dtype=np.float32),
            masked[s : s + chunk],
            k,
        )
        for s in range(0, len(rows), chunk)
    ]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, k), dtype=np.int64)
