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


def disable_interrupt_checks() -> None:
    """Stop Faiss from taking the GIL inside searches (process-wide; for servers).

    ``import faiss`` installs a callback that lets Ctrl-C stop a long search: an IVF search
    calls it once per query, and it takes the GIL to look for pending signals. A search that
    runs off the event loop (the engine's search threads) then waits, once per query, until
    the loop thread lets the GIL go, up to the interpreter's switch interval (5 ms). At 1M
    items that waiting was 22 % of the search thread's time (py-spy ``--idle``) and ~1,600
    voluntary context switches a second (bench/README.md). A server never needs Ctrl-C
    inside a search: SIGTERM drains it through asyncio.
    """
    faiss.InterruptCallback.clear_instance()  # type: ignore[attr-defined]
