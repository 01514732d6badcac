"""Pure helpers of the classic-index peer comparison (bench/peers.py): the MIPS → L2
reduction a KD-tree needs, ragged result lists → id matrices, latency percentiles, the
``--peers`` parser and the result table. numpy only, so unit tests cover all of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Every peer `bench.peers` knows, in the order its table prints them. "exact" (IndexFlatIP)
# is the reference the recall columns are measured against; it always runs.
PEER_NAMES = ("exact", "ivfpq", "hnsw", "scann", "annoy", "lsh", "kdtree")


@dataclass(frozen=True)
class BuildCost:
    """One index build. ``rss_mib``: growth of this process's resident memory across the
    build (MiB; includes allocator slack, excludes memory returned before the end);
    ``size_mib``: the index as its library serialises it (MiB), None when not written."""

    seconds: float | None
    threads: int
    rss_mib: float | None
    size_mib: float | None
    note: str = ""


@dataclass(frozen=True)
class PeerRow:
    """One search configuration of one index. Latencies: ``single_*`` are wall time per call
    of one query (ms); ``batched_us`` is the CPU time of one call with all queries per query
    (µs), None where the library has no batch API. Recall: |found ∩ exact| / k, averaged."""

    peer: str
    setting: str
    recall_10: float
    recall_100: float
    single_p50_ms: float
    single_p99_ms: float
    batched_us: float | None
    build: BuildCost | None  # set on the first row of each build, None on the others


def parse_peers(text: str) -> list[str]:
    """``"all"`` or a comma-separated subset of PEER_NAMES → the subset in table order
    (exact always included). Raises ValueError naming the unknown names."""
    asked = {p.strip().lower() for p in text.split(",") if p.strip()}
    if "all" in asked:
        return list(PEER_NAMES)
    unknown = sorted(asked - set(PEER_NAMES))
    if unknown:
        raise ValueError(
            f"unknown peer(s) {', '.join(unknown)}; choose from all, {', '.join(PEER_NAMES)}"
        )
    asked.add("exact")
    return [p for p in PEER_NAMES if p in asked]


def mips_to_l2(items: np.ndarray) -> tuple[np.ndarray, float]:
    """The MIPS → nearest-neighbour (L2) reduction (Bachrach et al. 2014): append
    sqrt(M² − ‖x‖²) to every item, M = max ‖x‖. Then ‖(q, 0) − (x, ·)‖² = ‖q‖² + M² − 2 q·x,
    so for any query the L2 order of the augmented items is the inner-product order.

    items: [n, d] → ([n, d + 1] float32, M)."""
    x = np.asarray(items, dtype=np.float64)
    norms2 = np.einsum("ij,ij->i", x, x)
    m2 = float(norms2.max()) if len(x) else 0.0
    # Clamp at 0: rounding can make M² − ‖x‖² a tiny negative for the longest item.
    extra = np.sqrt(np.maximum(m2 - norms2, 0.0))
    return np.hstack([x, extra[:, None]]).astype(np.float32), float(np.sqrt(m2))


def query_for_l2(queries: np.ndarray) -> np.ndarray:
    """Queries for items reduced by ``mips_to_l2``: a zero appended. [q, d] → [q, d + 1]."""
    q = np.asarray(queries, dtype=np.float32)
    return np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)])


def pad_ids(results: Iterable[Sequence[int]], k: int) -> np.ndarray:
    """Ragged per-query id lists (Annoy can return fewer than k) → [q, k] int64, padded
    with -1 (which `recall_against` never counts) and cut at k."""
    rows = [list(r)[:k] for r in results]
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of per-call wall times given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _opt(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def format_table(rows: Sequence[PeerRow]) -> str:
    """The markdown table bench/README.md holds: one line per search configuration; build
    columns only on the first line of each build."""
    head = (
        "| peer | setting | recall@10 | recall@100 | 1-query p50 ms | 1-query p99 ms "
        "| batched CPU µs/query | build s (threads) | RSS Δ MiB | index MiB |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        b = r.build
        build = ["", "", ""]
        if b is not None:
            secs = _opt(b.seconds, ".1f") + f" ({b.threads})" + (f" {b.note}" if b.note else "")
            build = [secs, _opt(b.rss_mib, ".0f"), _opt(b.size_mib, ".0f")]
        lines.append(
            f"| {r.peer} | {r.setting} | {r.recall_10:.3f} | {r.recall_100:.3f} "
            f"| {r.single_p50_ms:.3f} | {r.single_p99_ms:.3f} | {_opt(r.batched_us, '.1f')} "
            f"| {' | '.join(build)} |"
        )
    return "\n".join(lines)
