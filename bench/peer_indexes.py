"""The indexes `bench.peers` compares, each behind one small interface (``PeerIndex``), all
answering maximum inner product over the same item vectors.

- ``ExactPeer``: Faiss IndexFlatIP, the reference;
- ``ServedIvfPqPeer``: the published IVF-PQ index with the served nprobe and exact re-rank;
- ``HnswPeer``: hnswlib, space="ip";
- ``ScannPeer``: ScaNN tree + anisotropic hashing + exact reorder, dot product;
- ``AnnoyPeer``: Annoy random-projection forest, metric "dot" (its own MIPS reduction);
- ``LshPeer``: Faiss IndexLSH (random-hyperplane signs, Hamming scan of every code), with or
  without an exact inner-product re-rank of k × factor Hamming candidates (IndexRefine);
- ``KdTreePeer``: scikit-learn KDTree on the MIPS → L2 reduction (``mips_to_l2``); exact.

A library that is not installed raises ImportError from ``build`` (the runner prints
"skipped: …"). Ids returned are row numbers of the item matrix, int64, -1 for "none".
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
import tempfile
import time
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.peer_report import mips_to_l2, pad_ids, query_for_l2
from serving.index.loaded import load_index_dir


@dataclass(frozen=True)
class Setting:
    """A search-time configuration: its label in the table and the knobs ``search`` reads."""

    label: str
    knobs: dict[str, int]


class PeerIndex(ABC):
    """One index over items [n, d] float32; search returns ids [q, k] int64 best first."""

    name: str = ""
    batches: bool = True  # False: the library answers one query per call (Annoy)

    def require(self) -> None:
        """Import the library (ImportError when it is missing), before the build is timed:
        a cold import of scikit-learn alone takes seconds."""
        return None

    @abstractmethod
    def build(self, items: np.ndarray, threads: int) -> None:
        """Build over ``items`` on up to ``threads`` threads (after ``require``)."""

    @abstractmethod
    def settings(self, k: int) -> list[Setting]:
        """Search configurations to measure, cheapest first."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        """queries [q, d] float32 → ids [q, k]; one library call when ``batches``."""

    def set_search_threads(self, threads: int) -> None:
        """Threads one search call may use (Faiss peers follow the global OpenMP setting)."""
        self.search_threads = threads

    def size_bytes(self) -> int | None:
        """Serialised index size in bytes, None when the library cannot write it."""
        return None

    def recorded_build_s(self) -> float | None:
        """Build seconds measured earlier (a cached or published index), else None."""
        return None

    def note(self) -> str:
        """What the build row should say besides time and memory (e.g. cached)."""
        return ""


class ExactPeer(PeerIndex):
    name = "exact (IndexFlatIP)"

    def build(self, items: np.ndarray, threads: int) -> None:
        self.index = faiss.IndexFlatIP(items.shape[1])
        self.index.add(items)

    def settings(self, k: int) -> list[Setting]:
        return [Setting("brute force", {})]

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        return np.asarray(self.index.search(queries, k)[1])

    def size_bytes(self) -> int | None:
        return int(self.index.ntotal) * int(self.index.d) * 4


class ServedIvfPqPeer(PeerIndex):
    """The published index as the server searches it (``LoadedIndex.search``). "Build" here
    is loading the published files (what a server does); the build itself happened when the
    dataset was published, and ``build_s`` is that wall time (gate and publish included)."""

    name = "faiss IVF-PQ (served)"

    def __init__(self, index_dir: Path, build_s: float | None) -> None:
        self.index_dir = index_dir
        self.build_s = build_s

    def build(self, items: np.ndarray, threads: int) -> None:
        self.loaded = load_index_dir(self.index_dir)
        if self.loaded.item_count != len(items):
            raise ValueError("the published index does not hold these items")

    def settings(self, k: int) -> list[Setting]:
        m = self.loaded.manifest
        served = (m.nprobe, m.refine_factor)
        wider = (min(m.nlist, 2 * m.nprobe), m.refine_factor)
        out = [Setting(f"nprobe={served[0]} refine×{served[1]} (served)", {"nprobe": served[0]})]
        if wider != served:
            out.append(Setting(f"nprobe={wider[0]} refine×{wider[1]}", {"nprobe": wider[0]}))
        return out

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        return np.asarray(self.loaded.search(queries, k, setting.knobs["nprobe"])[1])

    def size_bytes(self) -> int | None:
        return (self.index_dir / "index.faiss").stat().st_size

    def recorded_build_s(self) -> float | None:
        return self.build_s

    def note(self) -> str:
        return "at publish, gate incl.; RSS Δ = load"


class HnswPeer(PeerIndex):
    """hnswlib M=16, ef_construction=100 (the serving benchmark's peer; cached under
    ``cache`` because a 1M build takes minutes on 2 cores)."""

    name = "hnswlib HNSW"

    def __init__(self, cache: Path, m: int = 16, ef_construction: int = 100) -> None:
        self.cache, self.m, self.efc = cache, m, ef_construction
        self.cached = False

    def require(self) -> None:
        import hnswlib

        self.lib = hnswlib

    def build(self, items: np.ndarray, threads: int) -> None:
        n, dim = items.shape
        self.index = self.lib.Index(space="ip", dim=dim)
        if self.cache.exists():
            self.index.load_index(str(self.cache), max_elements=n)
            self.cached = True
        else:
            self.index.init_index(max_elements=n, M=self.m, ef_construction=self.efc, random_seed=0)
            started = time.perf_counter()
            self.index.add_items(items, np.arange(n), num_threads=threads)
            seconds = time.perf_counter() - started
            self.index.save_index(str(self.cache))
            self._timing().write_text(json.dumps({"seconds": seconds}))

    def _timing(self) -> Path:
        return self.cache.with_suffix(".json")

    def recorded_build_s(self) -> float | None:
        if self.cached and self._timing().exists():
            return float(json.loads(self._timing().read_text())["seconds"])
        return None

    def settings(self, k: int) -> list[Setting]:
        return [Setting(f"M={self.m} ef={ef}", {"ef": ef}) for ef in (k, 4 * k, 16 * k)]

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        self.index.set_ef(setting.knobs["ef"])
        return np.asarray(self.index.knn_query(queries, k=k)[0], dtype=np.int64)

    def set_search_threads(self, threads: int) -> None:
        self.search_threads = threads
        self.index.set_num_threads(threads)

    def size_bytes(self) -> int | None:
        return self.cache.stat().st_size

    def note(self) -> str:
        return "cached: first build's time; RSS Δ = load" if self.cached else ""


def import_scann_pybind() -> Any:
    """ScaNN's pybind searcher without ``scann/__init__``: that file also loads ScaNN's
    TensorFlow op library whenever TensorFlow is importable, and the 1.4.2 op library does
    not link against this project's TensorFlow (undefined absl symbol). The pybind path
    needs no TensorFlow at all."""
    if "scann" not in sys.modules:
        spec = importlib.util.find_spec("scann")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("scann is not installed (`make venv` installs the bench extra)")
        package = types.ModuleType("scann")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["scann"] = package
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


def scann_leaves(n: int) -> int:
    """ScaNN's usual partition count: about 2·sqrt(n) leaves (2000 at 1M, as in its docs)."""
    return max(1, round(2 * np.sqrt(n)))


class ScannPeer(PeerIndex):
    """tree (≈2·sqrt(n) leaves) + score_ah(2 dims/block, anisotropic threshold 0.2) +
    reorder (exact dot product of the pre-reorder candidates), dot product."""

    name = "ScaNN"

    def require(self) -> None:
        self.pybind = import_scann_pybind()

    def build(self, items: np.ndarray, threads: int) -> None:
        n = len(items)
        self.leaves = scann_leaves(n)
        builder = (
            self.pybind.builder(items, 100, "dot_product")
            .tree(
                num_leaves=self.leaves,
                num_leaves_to_search=max(1, self.leaves // 20),
                training_sample_size=min(n, 250_000),
            )
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(1000)
        )
        builder.set_n_training_threads(threads)
        self.searcher = builder.build()

    def settings(self, k: int) -> list[Setting]:
        out = []
        for share in (40, 20, 10, 4):
            leaves = max(1, self.leaves // share)
            for reorder in (2 * k, 10 * k):
                label = f"leaves {leaves}/{self.leaves} reorder {reorder}"
                out.append(Setting(label, {"leaves": leaves, "reorder": reorder}))
        return out

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        threads = getattr(self, "search_threads", 1)
        call = (
            self.searcher.search_batched_parallel if threads > 1 else self.searcher.search_batched
        )
        ids, _ = call(
            queries,
            final_num_neighbors=k,
            pre_reorder_num_neighbors=setting.knobs["reorder"],
            leaves_to_search=setting.knobs["leaves"],
        )
        return np.asarray(ids, dtype=np.int64)

    def size_bytes(self) -> int | None:
        with tempfile.TemporaryDirectory(prefix="recall-bench-scann-") as tmp:
            self.searcher.serialize(tmp)
            return sum(p.stat().st_size for p in Path(tmp).iterdir())


class AnnoyPeer(PeerIndex):
    """Annoy forest of ``n_trees`` trees, metric "dot", built on disk (``on_disk_build``)
    so the index is the mmap-able file a static deployment would ship."""

    batches = False

    def __init__(self, n_trees: int, workdir: Path) -> None:
        self.n_trees = n_trees
        self.name = f"Annoy {n_trees} trees"
        self.path = workdir / f"annoy-{n_trees}.ann"

    def require(self) -> None:
        from annoy import AnnoyIndex

        self.annoy_index = AnnoyIndex

    def build(self, items: np.ndarray, threads: int) -> None:
        self.n = len(items)
        self.index = self.annoy_index(items.shape[1], "dot")
        self.path.unlink(missing_ok=True)
        self.index.on_disk_build(str(self.path))
        for i, row in enumerate(items):
            self.index.add_item(i, row)
        self.index.set_seed(0)
        self.index.build(self.n_trees, n_jobs=threads)

    def settings(self, k: int) -> list[Setting]:
        # Annoy's default search_k is n_trees × k; recall@100 needs far more nodes visited,
        # and more as the catalogue grows.
        budgets = (self.n_trees * k, 10_000, 50_000) + ((200_000,) if self.n > 200_000 else ())
        return [Setting(f"search_k={s}", {"search_k": s}) for s in sorted(set(budgets))]

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        s = setting.knobs["search_k"]
        return pad_ids((self.index.get_nns_by_vector(q, k, search_k=s) for q in queries), k)

    def size_bytes(self) -> int | None:
        return self.path.stat().st_size


class LshPeer(PeerIndex):
    """Faiss IndexLSH: random rotation to ``nbits`` dims, one sign bit each, Hamming scan of
    all n codes. ``rerank``: IndexRefine with IndexFlatIP re-scores k × factor of them
    exactly (then the index also holds the float vectors)."""

    def __init__(self, nbits: int, rerank: bool) -> None:
        self.nbits, self.rerank = nbits, rerank
        self.name = f"faiss IndexLSH {nbits} bits" + (" + re-rank" if rerank else "")

    def build(self, items: np.ndarray, threads: int) -> None:
        dim = items.shape[1]
        self.lsh = faiss.IndexLSH(dim, self.nbits, True, False)
        # IndexLSH ranks by Hamming whatever its metric; IP lets IndexRefine pair it with an
        # exact IndexFlatIP re-rank (IndexRefine requires equal metrics).
        self.lsh.metric_type = faiss.METRIC_INNER_PRODUCT
        self.index: faiss.Index = self.lsh
        if self.rerank:
            self.flat = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexRefine(self.lsh, self.flat)
        self.index.train(items)
        self.index.add(items)

    def settings(self, k: int) -> list[Setting]:
        if not self.rerank:
            return [Setting("Hamming only", {})]
        return [Setting(f"re-rank {f}·k", {"k_factor": f}) for f in (4, 16)]

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        params = None
        if self.rerank:
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = setting.knobs["k_factor"]
        return np.asarray(self.index.search(queries, k, params=params)[1])

    def size_bytes(self) -> int | None:
        return int(faiss.serialize_index(self.index).nbytes)


class KdTreePeer(PeerIndex):
    """scikit-learn KDTree over ``mips_to_l2(items)`` (d + 1 dims), L2, exact answers: its
    cost, not its recall, is what the table shows."""

    def __init__(self, leaf_size: int) -> None:
        self.leaf_size = leaf_size
        self.name = f"sklearn KDTree leaf {leaf_size}"

    def require(self) -> None:
        from sklearn.neighbors import KDTree

        self.kdtree = KDTree

    def build(self, items: np.ndarray, threads: int) -> None:
        augmented, _ = mips_to_l2(items)
        self.tree = self.kdtree(augmented, leaf_size=self.leaf_size)

    def settings(self, k: int) -> list[Setting]:
        return [Setting("MIPS→L2, exact", {})]

    def search(self, queries: np.ndarray, k: int, setting: Setting) -> np.ndarray:
        ids = self.tree.query(query_for_l2(queries), k=k, return_distance=False)
        return np.asarray(ids, dtype=np.int64)

    def size_bytes(self) -> int | None:
        return len(pickle.dumps(self.tree, protocol=pickle.HIGHEST_PROTOCOL))
