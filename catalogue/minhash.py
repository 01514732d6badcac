"""MinHash signatures and LSH banding, in numpy.

MinHash: for each of ``P`` hash functions h_p, an item's signature value is the minimum of
h_p over its shingles; P(sig_p(A) == sig_p(B)) = Jaccard(A, B), so the share of equal
values estimates the Jaccard similarity without comparing sets.

The hash functions are multiply-shift hashes of the 64-bit shingle codes,
h_p(x) = ((a_p · x + b_p) mod 2^64) >> 32 with odd random a_p: universal, and a handful of
vector operations per function over a whole [items, shingles] matrix.

Banding: the P values are cut into ``bands`` bands of ``rows`` values; two items become a
candidate pair when any band is identical, which happens with probability
1 - (1 - s^rows)^bands for Jaccard s: a steep S-curve around (1/bands)^(1/rows).
"""

from __future__ import annotations

import numpy as np

from catalogue.text import Shingles

_MASK32 = np.uint64(0xFFFFFFFF)


def hash_parameters(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a [num_perm] odd uint64, b [num_perm] uint64) for the multiply-shift hashes."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signatures(
    shingled: Shingles, num_perm: int, seed: int, chunk: int = 4_000_000
) -> np.ndarray:
    """MinHash signatures of each text's shingles.

    Args:
        shingled: flattened shingles of n texts (``text.shingles``).
        chunk: shingles hashed per step (bounds the temporary arrays: 8 bytes each).
    Returns:
        [n, num_perm] uint32. A text without shingles gets 0xFFFFFFFF everywhere
        (callers drop such rows: an empty text is nobody's duplicate).
    """
    a, b = hash_parameters(num_perm, seed)
    offsets, codes = shingled.offsets, shingled.codes
    n = len(offsets) - 1
    out = np.full((n, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    row = 0
    while row < n:
        # Rows [row, end) whose shingles fit one chunk (at least one row per step).
        end = max(row + 1, int(np.searchsorted(offsets, offsets[row] + chunk, side="right")) - 1)
        end = min(end, n)
        lo, hi = offsets[row], offsets[end]
        counts = np.diff(offsets[row : end + 1])
        rows = np.flatnonzero(counts > 0)
        if rows.size:
            block = codes[lo:hi]
            starts = (offsets[row:end][rows] - lo).astype(np.int64)
            for p in range(num_perm):
                hashed = (block * a[p] + b[p]) >> np.uint64(32)
                out[row + rows, p] = np.minimum.reduceat(hashed, starts)
        row = end
    return out


def estimated_jaccard(signatures: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[len(left)] float64: share of equal signature values of each pair (left[i], right[i])."""
    return (signatures[left] == signatures[right]).mean(axis=1)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(a pair with Jaccard ``similarity`` shares at least one of ``bands`` bands of
    ``rows`` values) = 1 - (1 - s^rows)^bands."""
    return float(1.0 - (1.0 - similarity**rows) ** bands)


def combine_keys(columns: np.ndarray) -> np.ndarray:
    """[n, c] unsigned integers → [n] uint64 hash of each row (FNV-style mixing; equal rows
    give equal keys, different rows collide with probability ~2^-64)."""
    key = np.full(columns.shape[0], 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for c in range(columns.shape[1]):
        key = (key ^ columns[:, c].astype(np.uint64)) * prime
        key ^= key >> np.uint64(29)
    return key


def bucket_pairs(keys: np.ndarray, max_neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows with equal ``keys``.

    Rows are sorted by key; each row is paired with up to ``max_neighbours`` following rows
    of its bucket, so a bucket of size m ≤ max_neighbours + 1 yields all m(m-1)/2 pairs and
    a larger one (a degenerate key such as an empty title) stays linear, still connected.

    Returns:
        (left, right) [m] int64 row indices, left < right.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    for offset in range(1, max_neighbours + 1):
        if offset >= len(ordered):
            break
        same = np.flatnonzero(ordered[offset:] == ordered[:-offset])
        if same.size == 0:
            break  # no bucket holds offset + 1 rows, hence none holds more
        a, b = order[same], order[same + offset]
        lefts.append(np.minimum(a, b))
        rights.append(np.maximum(a, b))
    if not lefts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64)


def unique_pairs(left: np.ndarray, right: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (left, right) pairs, sorted; n = number of rows (left, right < n)."""
    if left.size == 0:
        return left, right
    code = np.unique(left.astype(np.int64) * n + right.astype(np.int64))
    return code // n, code % n


def lsh_candidates(
    signatures: np.ndarray,
    bands: int,
    rows: int,
    block: np.ndarray | None = None,
    max_neighbours: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs: equal in at least one band (and, when given, equal ``block`` keys).

    Args:
        signatures: [n, ≥ bands·rows] uint32.
        block: [n] uint64 blocking key (e.g. hashed year); pairs never cross blocks.
    Returns:
        (left, right) distinct pairs, left < right.
    """
    if signatures.shape[1] < bands * rows:
        raise ValueError(
            f"{bands} bands × {rows} rows need {bands * rows} values, "
            f"signatures have {signatures.shape[1]}"
        )
    n = signatures.shape[0]
    lefts, rights = [], []
    for band in range(bands):
        part = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        if block is not None:
            part = np.column_stack([part, block])
        left, right = bucket_pairs(combine_keys(part), max_neighbours)
        lefts.append(left)
        rights.append(right)
    return unique_pairs(np.concatenate(lefts), np.concatenate(rights), n)
