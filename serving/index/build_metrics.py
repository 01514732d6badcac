"""Prometheus metrics of index builds, in a registry of their own.

Index builds run in pipeline workers and the CLI, not in a recall server, so they do not
share the server's default registry. A worker exposes ``REGISTRY`` however it publishes
batch metrics (``prometheus_client.push_to_gateway`` or ``write_to_textfile`` for the
node-exporter textfile collector); names are documented in docs/artifacts.md.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

GPU_FALLBACKS = Counter(
    "recall_index_gpu_fallbacks",  # exposed as recall_index_gpu_fallbacks_total
    "Index builds that had a GPU but built the IVF-PQ on the CPU, by reason: params (the "
    "parameters do not fit Faiss's GPU IVF-PQ) or error (the GPU build raised).",
    ["reason"],
    registry=REGISTRY,
)

GpuFallbackReason = Literal["params", "error"]


def gpu_fallbacks(reason: GpuFallbackReason) -> float:
    """The counter's current value for ``reason`` (tests and the CLI read it)."""
    value = REGISTRY.get_sample_value("recall_index_gpu_fallbacks_total", {"reason": reason})
    return value or 0.0
