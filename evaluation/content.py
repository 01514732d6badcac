"""P3 (cold items) baselines: what a catalogue's content alone predicts.

The content vector of an item is the L2-normalised bag of its ``genres`` values, its
decade (``year // 10``) and its title words: the issue's definition, for ML-100K-shaped
item tables (absent columns are skipped).

- **Random:** seeded uniform scores.
- **Content-kNN:** cosine of the item's content vector with the mean content vector of the
  user's training items.
- **Content-predicted popularity:** ridge regression of log(1 + training interactions) on
  the content vector, fitted on the warm items (those with training interactions); the
  same scores for every user.
- **Content-kNN + content-popularity:** both, z-scored over the items the user may be
  recommended, summed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from evaluation.catalog import Catalog

RIDGE_ALPHA = 1.0
"""L2 weight of the content-popularity ridge regression (content vectors have unit norm)."""
_WORD = re.compile(r"[a-z0-9]+")


def _tokens(row: pd.Series) -> set[str]:
    out: set[str] = set()
    genres = row.get("genres")
    if isinstance(genres, str):
        out |= {f"g={g}" for g in genres.split("|") if g}
    elif genres is not None and not isinstance(genres, float):
        out |= {f"g={g}" for g in genres}
    year = row.get("year")
    if year is not None and not pd.isna(year):
        out.add(f"decade={int(year) // 10}")
    title = row.get("title")
    if isinstance(title, str):
        out |= {f"w={w}" for w in _WORD.findall(title.lower())}
    return out


def content_matrix(items: pd.DataFrame | None, catalog: Catalog) -> np.ndarray:
    """[n_items, n_tokens] float32 unit-norm content vectors in catalogue column order
    (all-zero rows for items absent from ``items``)."""
    if items is None:
        return np.zeros((catalog.n_items, 1), dtype=np.float32)
    by_id = (
        items.assign(item_id=items["item_id"].astype(str))
        .drop_duplicates("item_id")
        .set_index("item_id")
    )
    rows = [_tokens(by_id.loc[i]) if i in by_id.index else set() for i in catalog.item_ids]
    vocabulary = {t: j for j, t in enumerate(sorted(set().union(*rows)))}
    out = np.zeros((catalog.n_items, max(len(vocabulary), 1)), dtype=np.float32)
    for r, tokens in enumerate(rows):
        out[r, [vocabulary[t] for t in tokens]] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def ridge_popularity(
    content: np.ndarray, counts: np.ndarray, alpha: float = RIDGE_ALPHA
) -> np.ndarray:
    """[n_items] predicted log(1 + count) from content, fitted on items with count > 0."""
    warm = counts > 0
    x = np.hstack([content, np.ones((len(content), 1), dtype=content.dtype)]).astype(np.float64)
    y = np.log1p(counts[warm].astype(np.float64))
    gram = x[warm].T @ x[warm] + alpha * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, x[warm].T @ y)
    return (x @ weights).astype(np.float32)


def _zscore(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Row-wise z-scores over the ``allowed`` (True) entries; others become 0."""
    count = np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    mean = np.where(allowed, scores, 0).sum(axis=1, keepdims=True) / count
    var = np.where(allowed, (scores - mean) ** 2, 0).sum(axis=1, keepdims=True) / count
    return np.where(allowed, (scores - mean) / np.sqrt(np.maximum(var, 1e-12)), 0)


@dataclass(frozen=True)
class RandomScorer:
    n_items: int
    seed: int

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(rows[0]) if len(rows) else 0])
        return rng.random((len(rows), self.n_items), dtype=np.float32)


@dataclass(frozen=True)
class ContentKnnScorer:
    """``x`` [n_users, n_items] training matrix, ``content`` [n_items, n_tokens]."""

    x: np.ndarray
    content: np.ndarray

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        profile = self.x[rows] @ self.content
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
        return np.asarray(profile @ self.content.T, dtype=np.float32)


@dataclass(frozen=True)
class ContentPopScorer:
    predicted: np.ndarray  # [n_items]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.predicted, (len(rows), len(self.predicted))).astype(np.float32)


@dataclass(frozen=True)
class SumScorer:
    """Content-kNN and content-popularity, each z-scored over the user's rankable items."""

    knn: ContentKnnScorer
    pop: ContentPopScorer
    masked: np.ndarray  # [n_users_under_test, n_items] 0/1, rows aligned with ``row_of``
    row_of: dict[int, int]  # catalogue user row → row of ``masked``

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        allowed = self.masked[[self.row_of[int(r)] for r in rows]] == 0
        return np.asarray(
            _zscore(self.knn(rows), allowed) + _zscore(self.pop(rows), allowed), dtype=np.float32
        )
