"""Per-call Faiss search parameters for the served index shapes (IVF-PQ, optionally wrapped
in an exact re-rank). Search knobs go per call, never into the shared index object."""

from __future__ import annotations

import faiss

from serving.index.params import MAX_REFINE_FACTOR


def is_refined(index: faiss.Index) -> bool:
    """Whether ``index`` re-ranks (an ``IndexRefine``/``IndexRefineFlat``)."""
    return isinstance(index, faiss.IndexRefine)


def search_parameters(
    index: faiss.Index, nprobe: int, k_factor: int | None = None
) -> faiss.SearchParameters:
    """``SearchParametersIVF(nprobe)``, wrapped in ``IndexRefineSearchParameters`` for a
    re-ranking ``index``. ``k_factor`` None keeps the index's own default; values are
    clamped to 1..MAX_REFINE_FACTOR (``nprobe`` to ≥ 1; Faiss caps it at nlist).

    The returned object references its IVF parameters, so keep it alive for the search.
    """
    ivf = faiss.SearchParametersIVF(nprobe=max(1, nprobe))  # type: ignore[call-arg]
    if not is_refined(index):
        return ivf
    factor = index.k_factor if k_factor is None else k_factor  # type: ignore[attr-defined]
    return faiss.IndexRefineSearchParameters(  # type: ignore[call-arg]
        k_factor=float(min(MAX_REFINE_FACTOR, max(1, factor))), base_index_params=ivf
    )
