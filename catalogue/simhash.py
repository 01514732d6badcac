"""64-bit SimHash and Hamming distance, in numpy.

Each shingle is hashed to 64 bits; bit j of an item's SimHash is 1 when more of its
shingles have bit j set than unset. Similar shingle sets give fingerprints a small
Hamming distance apart. Candidates come from the pigeonhole rule: two fingerprints within
distance d agree exactly on at least one of d + 1 disjoint bit blocks.
"""

from __future__ import annotations

import itertools

import numpy as np

from catalogue.minhash import bucket_pairs, combine_keys, unique_pairs
from catalogue.text import Shingles

BITS = 64
_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a well-spread 64-bit hash of uint64 ``x`` (elementwise)."""
    z = x + _SPLITMIX_GAMMA
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def simhash64(shingled: Shingles) -> np.ndarray:
    """SimHash of each text's shingles (every shingle occurrence weighs 1).

    Returns:
        [n] uint64 fingerprints (0 for a text without shingles).
    """
    offsets = shingled.offsets
    counts = np.diff(offsets)
    rows = np.flatnonzero(counts > 0)
    out = np.zeros(len(counts), dtype=np.uint64)
    if rows.size == 0:
        return out
    hashed = mix64(shingled.codes)
    starts = offsets[:-1][rows]
    fingerprint = np.zeros(rows.size, dtype=np.uint64)
    one = np.uint64(1)
    for bit in range(BITS):
        # Votes for bit `bit`: set in more than half of the text's shingles.
        ones = np.add.reduceat((hashed >> np.uint64(bit)) & one, starts)
        fingerprint |= (2 * ones > counts[rows]).astype(np.uint64) << np.uint64(bit)
    out[rows] = fingerprint
    return out


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise number of differing bits of uint64 arrays ``a`` and ``b``."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def simhash_candidates(
    fingerprints: np.ndarray,
    max_distance: int,
    block: np.ndarray | None = None,
    max_neighbours: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within ``max_distance`` bits (and equal ``block`` keys when given), found by
    bucketing on each of max_distance + 1 bit blocks, then checking the distance.

    Returns:
        (left, right) distinct pairs, left < right.
    """
    if not 0 <= max_distance < BITS:
        raise ValueError(f"max_distance must be in 0..{BITS - 1}, got {max_distance}")
    pieces = max_distance + 1
    edges = np.linspace(0, BITS, pieces + 1).astype(int)
    lefts, rights = [], []
    for lo, hi in itertools.pairwise(edges.tolist()):
        width = hi - lo
        mask = np.uint64((1 << width) - 1) if width < BITS else np.uint64(2**64 - 1)
        part = ((fingerprints >> np.uint64(lo)) & mask)[:, None]
        if block is not None:
            part = np.column_stack([part, block])
        left, right = bucket_pairs(combine_keys(part), max_neighbours)
        lefts.append(left)
        rights.append(right)
    left, right = unique_pairs(np.concatenate(lefts), np.concatenate(rights), len(fingerprints))
    close = hamming(fingerprints[left], fingerprints[right]) <= max_distance
    return left[close], right[close]
