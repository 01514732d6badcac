"""IVF-PQ parameters chosen from catalog size and vector dimension."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Faiss warns below ~39 training points per centroid; keep every list trainable.
MIN_POINTS_PER_LIST = 39


@dataclass(frozen=True)
class IvfPqParams:
    """``nlist`` inverted lists, PQ with ``m`` sub-quantizers of ``nbits`` bits each,
    ``nprobe`` lists visited per query by default (a per-call search parameter)."""

    nlist: int
    m: int
    nbits: int
    nprobe: int

    @property
    def factory(self) -> str:
        """The Faiss index_factory string, e.g. ``IVF64,PQ16x8``."""
        return f"IVF{self.nlist},PQ{self.m}x{self.nbits}"


def choose_params(n_items: int, dim: int) -> IvfPqParams:
    """Heuristics (see docs/artifacts.md):

    - ``nlist ≈ 4·√n``, capped so each list gets ≥ 39 training points, at least 1;
    - ``m``: the largest divisor of ``dim`` that is ≤ dim/2 and ≤ 64 (2+ dims per code);
    - ``nbits``: 8, or ⌊log2 n⌋ when the catalog is too small to train 256 centroids;
    - ``nprobe ≈ 2·√nlist``, at least 1, at most nlist.
    """
    if n_items < 2:
        raise ValueError(f"an IVF-PQ index needs at least 2 items, got {n_items}")
    if dim < 2:
        raise ValueError(f"vector dimension must be at least 2, got {dim}")
    nlist = max(1, min(round(4 * math.sqrt(n_items)), n_items // MIN_POINTS_PER_LIST))
    m = max(d for d in range(1, min(dim // 2, 64) + 1) if dim % d == 0)
    nbits = min(8, int(math.log2(n_items)))
    nprobe = min(nlist, max(1, round(2 * math.sqrt(nlist))))
    return IvfPqParams(nlist=nlist, m=m, nbits=nbits, nprobe=nprobe)
