"""The content prior: an item's popularity as its content predicts it, one served dimension.

An item with no interactions has no trained id embedding, so the towers rank it by its
features alone, and they were trained with logQ correction, which removes popularity from
their scores on purpose. What a catalogue's content says about how popular an item will be
is then missing, and it is the strongest single signal for cold items (the P3 baselines in
docs/quality.md: content-predicted popularity beats content similarity).

The prior is a ridge regression of ``log(1 + training interactions)`` on the item tower's
own feature inputs, fitted in closed form on the items with interactions after training:

    prior(j) = offset + Σ_f mean_{v ∈ values_f(j)} w_f[v]

i.e. a linear model over each feature's mean-pooled one-hot, exactly the pooling the
tower's feature embeddings use, so the exported item tower computes it for an item added
after training from the same feature indices (``training/export.py``). The weights are
scaled so the prior is z-scored over the trained items (mean 0, standard deviation 1).

Served, the user vector gets one more dimension holding the prior's weight against the
learnt towers' per-user z-scored score (``training/linear_branch.py`` explains the
z-scoring), and the item vector the item's prior: ``s = z_learnt(u, j) + w · prior(j)`` as
one inner product. Only items without interactions carry it (the others' dimension is 0):
for an item with interactions the towers know better than its content does, and on the
temporal split (P2) a prior on every item cost a third of the Recall@10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import LinearOperator, lsqr

from training.features import MISSING, FittedFeature


@dataclass(frozen=True)
class ContentPrior:
    """Fitted weights: ``weights[f]`` [features[f].size] float32 (row 0, missing, is 0);
    ``offset`` the intercept. ``prior(j)`` is z-scored over the trained items."""

    weights: list[np.ndarray]
    offset: float


def pooled_one_hot(
    features: Sequence[FittedFeature], table: Mapping[str, np.ndarray]
) -> csr_matrix:
    """[n_rows, Σ sizes] sparse: per feature, the mean of the row's non-missing values'
    one-hots (an all-missing feature contributes nothing), features side by side."""
    n_rows = len(next(iter(table.values()))) if table else 0
    rows, cols, vals = [], [], []
    start = 0
    for feature in features:
        indices = np.asarray(table[feature.name], dtype=np.int64)  # [n, width]
        present = indices != MISSING
        share = 1.0 / np.maximum(present.sum(axis=1, keepdims=True), 1)
        r, c = np.nonzero(present)
        rows.append(r)
        cols.append(start + indices[r, c])
        vals.append(np.broadcast_to(share, indices.shape)[r, c])
        start += feature.size
    if not rows:
        return csr_matrix((n_rows, 0))
    matrix = csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, start),
    )
    matrix.sum_duplicates()  # a value listed twice counts twice, as in the tower's pooling
    return matrix


def fit_content_prior(
    features: Sequence[FittedFeature],
    table: Mapping[str, np.ndarray],
    counts: np.ndarray,
    trained: np.ndarray,
    l2: float,
) -> ContentPrior | None:
    """Ridge of log(1 + ``counts``) on the pooled one-hots of the ``trained`` rows.

    Args:
        table: feature name → [n_items, width] int32 indices (vocabulary order, 0-based).
        counts: [n_items] training interactions per item.
        trained: [n_items] bool, the items the regression is fitted on.
        l2: ridge weight (the intercept is not penalised).

    Returns:
        The prior, or None when there is nothing to fit it on (no features, fewer than
        two trained items, or a constant prediction).
    """
    x = pooled_one_hot(features, table)
    trained = np.asarray(trained, dtype=bool)
    if x.shape[1] == 0 or trained.sum() < 2:
        return None
    x_fit = x[np.flatnonzero(trained)]
    y = np.log1p(np.asarray(counts, dtype=np.float64)[trained])
    means = np.asarray(x_fit.mean(axis=0)).ravel()
    n, d = x_fit.shape
    # Centred columns without densifying: (X − 1·mᵀ) v and its transpose.
    centred = LinearOperator(
        (n, d),
        matvec=lambda v: x_fit @ v - means @ v,
        rmatvec=lambda u: x_fit.T @ u - means * u.sum(),
        dtype=np.float64,
    )
    w = lsqr(centred, y - y.mean(), damp=float(np.sqrt(l2)), atol=1e-10, btol=1e-10)[0]
    fitted = x_fit @ w - means @ w
    spread = float(fitted.std())
    if spread < 1e-9:
        return None
    w = w / spread
    weights, start = [], 0
    for feature in features:
        block = w[start : start + feature.size].astype(np.float32)
        block[MISSING] = 0.0
        weights.append(block)
        start += feature.size
    return ContentPrior(weights=weights, offset=float(-(means @ w)))


def content_prior_of(prior: ContentPrior, pooled: csr_matrix) -> np.ndarray:
    """[n] prior of rows given as ``pooled_one_hot`` (the reference the towers match)."""
    return np.asarray(pooled @ np.concatenate(prior.weights), dtype=np.float64) + prior.offset
