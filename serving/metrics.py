"""Prometheus metrics of a recall server (names documented in docs/operations.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "recall_requests_total", "gRPC requests by method and status code.", ["method", "code"]
)
LATENCY = Histogram(
    "recall_request_duration_seconds",
    "Server-side request latency by method.",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RESPONSES = Counter("recall_responses_total", "Recall responses by candidate source.", ["source"])
INDEX_ITEMS = Gauge("recall_index_items", "Items in the serving index (0 = none loaded).")
INDEX_LOADED_AT = Gauge(
    "recall_index_loaded_timestamp_seconds", "When the serving index was loaded."
)
INDEX_INFO = Gauge(
    "recall_index_info",
    "1 for the serving index/model version pair.",
    ["index_version", "model_version"],
)
INDEX_LOADS = Counter("recall_index_loads_total", "Index load attempts by result.", ["result"])
INTERACTIONS = Counter(
    "recall_interactions_total",
    "Interactions received by RecordInteractions: accepted (stored) or unknown_item.",
    ["result"],
)
REDIS_WRITE_RETRIES = Counter(
    "recall_redis_write_retries_total", "Redis writes retried after an error (RecordInteractions)."
)
DEGRADED = Counter(
    "recall_degraded_responses_total",
    "Recall responses served degraded (popular items) because Redis failed, by reason: "
    "redis_error, redis_timeout, circuit_open.",
    ["reason"],
)
IN_FLIGHT = Gauge("recall_in_flight_calls", "Recall/BatchRecall calls being served now.")
BATCH_MAX_RUNNING = Gauge(
    "recall_batch_max_running",
    "Most Recall batches served at once for the serving index: 1 while it is cheap to search "
    "(RECALL_CHEAP_SEARCH_CODES), else RECALL_BATCH_MAX_RUNNING; 0 = no limit or no batching.",
)
BATCH_SIZE = Histogram(
    "recall_batch_size",
    "Recall calls coalesced into one Redis round trip and Faiss search (micro-batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_DROPPED = Counter(
    "recall_batch_dropped_total",
    "Recall calls dropped from their batch before it ran: deadline passed or cancelled.",
    ["reason"],
)
USER_VECTORS_COMPLETE = Gauge(
    "recall_user_vectors_complete",
    "1 when the last check found the serving model's user vectors complete in Redis, 0 when "
    "they were missing or incomplete (serving.vector_repair reloads them).",
)
USER_VECTOR_REPAIRS = Counter(
    "recall_user_vector_repairs_total",
    "User-vector repairs by result: repaired (this server reloaded the missing vectors), "
    "busy (another server held the lock), failed (Redis or the model artifact failed).",
    ["result"],
)
# Status codes that mean the server failed the caller (not the caller's own mistake, load
# shedding or its deadline): what a ship's canary check watches (GetStatus.failed_calls).
SERVER_FAULT_CODES = frozenset({"INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS"})


def failed_calls() -> int:
    """Recall/BatchRecall calls this process answered with a SERVER_FAULT_CODES status."""
    total = 0.0
    for metric in REQUESTS.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("method") in ("Recall", "BatchRecall")
                and labels.get("code") in SERVER_FAULT_CODES
            ):
                total += sample.value
    return int(total)


USER_VECTORS_REPAIRED = Counter(
    "recall_user_vectors_repaired_total",
    "User vectors written by repairs (keys that were missing from Redis).",
)
FRESH_ITEMS = Gauge(
    "recall_fresh_segment_items",
    "Fresh items (added with UpsertItems, not yet in the index) this server searches exactly, "
    "as of its last poll of Redis.",
)
DENIED_ITEMS = Gauge(
    "recall_deny_set_items",
    "Items taken down with RemoveItems (the deny set), as of this server's last poll.",
)
CATALOGUE_CHANGES = Counter(
    "recall_catalogue_changes_total",
    "Items changed through RecallAdmin: upserted, removed, lifted.",
    ["change"],
)
