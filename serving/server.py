"""The recall server process: RecallService (+ health, reflection) on one port,
RecallAdmin on another, Prometheus metrics over HTTP, and an index watcher for hot swap."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from artifacts.errors import ArtifactError
from artifacts.signing import trusted_keys_from
from artifacts.store import ArtifactStore
from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.circuit_breaker import CircuitBreaker
from serving.config import ServerSettings
from serving.errors import (
    DeadlineExpired,
    IndexLoadError,
    InvalidRequest,
    NoIndexLoaded,
    Overloaded,
    RecallError,
)
from serving.fresh_segment import FreshSegment, FreshSegmentPoller
from serving.grpc_errors import grpc_method
from serving.index.artifact import INDEX_KIND
from serving.index.loaded import LoadedIndex
from serving.index.search import disable_interrupt_checks
from serving.index_holder import IndexHolder
from serving.interactions import Interaction, InteractionRecorder
from serving.metrics import (
    BATCH_DROPPED,
    BATCH_MAX_RUNNING,
    BATCH_SIZE,
    CATALOGUE_CHANGES,
    DEGRADED,
    DENIED_ITEMS,
    FRESH_ITEMS,
    IN_FLIGHT,
    INDEX_INFO,
    INDEX_ITEMS,
    INDEX_LOADED_AT,
    INDEX_LOADS,
    RESPONSES,
    failed_calls,
)
from serving.micro_batcher import MicroBatcher
from serving.new_items import (
    read_feature_rules,
    set_denied,
    store_items,
    validate_ids,
    validate_items,
)
from serving.recall_engine import (
    RecallEngine,
    RecallQuery,
    RecallResult,
    Source,
)
from serving.response_encoding import encode_recall_response
from serving.security import (
    LOOPBACK_HOSTS,
    ServicePolicy,
    TokenFile,
    interceptors_for,
    server_credentials,
)
from serving.task_cancel import cancel_all
from serving.user_vectors import UserVectorStore
from serving.vector_repair import VectorRepairer
from serving.workers import WorkerPeers, WorkerRole, merge_status, supervise

log = logging.getLogger(__name__)

RECALL_SERVICE = recall_pb2.DESCRIPTOR.services_by_name["RecallService"].full_name
ADMIN_SERVICE = recall_pb2.DESCRIPTOR.services_by_name["RecallAdmin"].full_name
_SOURCE_TO_PROTO = {
    Source.USER_VECTOR: recall_pb2.SOURCE_USER_VECTOR,
    Source.FALLBACK: recall_pb2.SOURCE_FALLBACK,
    Source.FALLBACK_DEGRADED: recall_pb2.SOURCE_FALLBACK_DEGRADED,
}
# Metric children resolved once (a labels() look-up per call takes a lock and a dict search).
_RESPONSES_BY_SOURCE = {source: RESPONSES.labels(source.value) for source in Source}
_DEGRADED_BY_REASON = {
    reason: DEGRADED.labels(reason) for reason in ("redis_error", "redis_timeout", "circuit_open")
}


def _query(request: recall_pb2.RecallRequest) -> RecallQuery:
    return RecallQuery(
        request.user_id,
        request.k,
        frozenset(request.exclude_item_ids),
        request.exclude_seen,
        request.nprobe or None,
        request.refine_factor or None,
    )


def _count(result: RecallResult) -> None:
    _RESPONSES_BY_SOURCE[result.source].inc()
    if result.degraded_reason:
        degraded = _DEGRADED_BY_REASON.get(result.degraded_reason)
        (degraded or DEGRADED.labels(result.degraded_reason)).inc()


def _response(result: RecallResult) -> recall_pb2.RecallResponse:
    """The message (BatchRecall); Recall sends ``_response_bytes``, which parse the same."""
    _count(result)
    response = recall_pb2.RecallResponse(
        model_version=result.model_version,
        index_version=result.index_version,
        source=_SOURCE_TO_PROTO[result.source],
        degraded_reason=result.degraded_reason,
    )
    add = response.candidates.add  # ~1.5x faster than a list of Candidate messages
    for item_id, score in result.candidates:
        add(item_id=item_id, score=score)
    return response


def _response_bytes(result: RecallResult) -> bytes:
    _count(result)
    return encode_recall_response(
        result.candidates,
        result.model_version,
        result.index_version,
        _SOURCE_TO_PROTO[result.source],
        result.degraded_reason,
    )


def _serialized(response: bytes) -> bytes:
    return response


def add_recall_service(servicer: RecallServicer, server: grpc.aio.Server) -> None:
    """``recall_pb2_grpc.add_RecallServiceServicer_to_server``, except that ``Recall``
    returns its response already serialized (``serving.response_encoding``)."""
    handlers = {
        "Recall": grpc.unary_unary_rpc_method_handler(
            servicer.Recall,
            request_deserializer=recall_pb2.RecallRequest.FromString,
            response_serializer=_serialized,
        ),
        "BatchRecall": grpc.unary_unary_rpc_method_handler(
            servicer.BatchRecall,
            request_deserializer=recall_pb2.BatchRecallRequest.FromString,
            response_serializer=recall_pb2.BatchRecallResponse.SerializeToString,
        ),
        "RecordInteractions": grpc.unary_unary_rpc_method_handler(
            servicer.RecordInteractions,
            request_deserializer=recall_pb2.RecordInteractionsRequest.FromString,
            response_serializer=recall_pb2.RecordInteractionsReply.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(RECALL_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(RECALL_SERVICE, handlers)


class RecallServicer(recall_pb2_grpc.RecallServiceServicer):
    """``batcher`` None: every Recall call is served on its own (RECALL_BATCHING=off)."""

    def __init__(
        self,
        engine: RecallEngine,
        recorder: InteractionRecorder,
        max_batch: int,
        *,
        batcher: MicroBatcher[RecallQuery, RecallResult] | None = None,
        max_in_flight: int = 1_000_000,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.max_batch = max_batch
        self.batcher = batcher
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def _admit(self) -> None:
        """Backpressure: refuse at once rather than queue without bound."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(
                f"server overloaded: {self.in_flight} calls in flight "
                f"(RECALL_MAX_IN_FLIGHT={self.max_in_flight}); retry later or elsewhere"
            )

    @grpc_method("Recall")
    async def Recall(
        self, request: recall_pb2.RecallRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The serialized RecallResponse (see ``add_recall_service``)."""
        query = _query(request)
        self.engine.validate(query)
        self._admit()
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExpired("deadline passed before serving")
            if self.batcher is not None:
                deadline = (
                    None if remaining is None else asyncio.get_running_loop().time() + remaining
                )
                result = await self.batcher.submit(query, deadline)
            else:
                (answer,) = await self.engine.recall_each([query])
                if isinstance(answer, RecallError):
                    raise answer
                result = answer
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()
        return _response_bytes(result)

    @grpc_method("BatchRecall")
    async def BatchRecall(
        self, request: recall_pb2.BatchRecallRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.BatchRecallResponse:
        if len(request.requests) > self.max_batch:
            raise InvalidRequest(
                f"at most {self.max_batch} requests per batch, got {len(request.requests)}"
            )
        self._admit()
        self.in_flight += 1
        IN_FLIGHT.inc()
        try:
            results = await self.engine.recall([_query(r) for r in request.requests])
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()
        return recall_pb2.BatchRecallResponse(responses=[_response(r) for r in results])

    @grpc_method("RecordInteractions")
    async def RecordInteractions(
        self, request: recall_pb2.RecordInteractionsRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.RecordInteractionsReply:
        outcome = await self.recorder.record(
            [Interaction(i.user_id, i.item_id, i.timestamp) for i in request.interactions]
        )
        return recall_pb2.RecordInteractionsReply(
            accepted=outcome.accepted,
            unknown_items=outcome.unknown_items,
            unknown_item_ids=outcome.unknown_item_ids,
        )


class AdminServicer(recall_pb2_grpc.RecallAdminServicer):
    """``fan_out``: with ``server.peers`` set (worker 0 of several, serving/workers.py),
    LoadIndex and GetStatus also act on the host's other workers; False on the private
    per-worker sockets, which answer for their own process only."""

    def __init__(self, server: RecallServer, *, fan_out: bool = True) -> None:
        self.server = server
        self.fan_out = fan_out

    @grpc_method("GetStatus")
    async def GetStatus(
        self, request: recall_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.GetStatusResponse:
        loaded = self.server.holder.current_or_none()
        healthy, detail = await self.server.vectors.ping()
        response = recall_pb2.GetStatusResponse(
            redis_healthy=healthy,
            redis_detail=detail,
            recall_port=self.server.port,
            failed_calls=failed_calls(),
            redis_breaker_state=self.server.breaker.state.value,
            fresh_segment_size=self.server.fresh.fresh_count,
            deny_set_size=self.server.fresh.deny_count,
        )
        if loaded is not None:
            response.index_version = loaded.index_version
            response.model_version = loaded.model_version
            response.item_count = loaded.item_count
            response.loaded_at_unix = loaded.loaded_at
            response.factory = loaded.manifest.factory
            response.nprobe = self.server.settings.nprobe or loaded.manifest.nprobe
            if healthy:
                meta = await self.server.vectors.meta(loaded.model_version)
                count = meta.get("count") if meta else None
                response.user_vectors_loaded = meta is not None
                response.user_vector_count = count if isinstance(count, int) else 0
        if self.fan_out and self.server.peers is not None:
            merge_status(response, await self.server.peers.statuses())
        return response

    @grpc_method("LoadIndex")
    async def LoadIndex(
        self, request: recall_pb2.LoadIndexRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.LoadIndexResponse:
        loaded, previous = await self.server.load_index(request.version or None)
        if self.fan_out and self.server.peers is not None:
            await self.server.peers.load_index(loaded.index_version)
        return recall_pb2.LoadIndexResponse(
            index_version=loaded.index_version,
            model_version=loaded.model_version,
            item_count=loaded.item_count,
            previous_index_version=previous.index_version if previous else "",
        )

    @grpc_method("UpsertItems")
    async def UpsertItems(
        self, request: recall_pb2.UpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.UpsertItemsResponse:
        items = [(i.item_id, dict(i.features)) for i in request.items]
        loaded = self.server.holder.current_or_none()
        if loaded is None:
            raise NoIndexLoaded("no index loaded: items are checked against its model's features")
        rules = await asyncio.to_thread(read_feature_rules, self.server.store, loaded.model_version)
        validate_items(items, rules, self.server.settings.max_upsert_items)
        stored = await store_items(self.server.vectors.client, items)
        CATALOGUE_CHANGES.labels("upserted").inc(stored)
        log.info("upserted %d item(s) checked against model %s", stored, loaded.model_version)
        return recall_pb2.UpsertItemsResponse(upserted=stored, model_version=loaded.model_version)

    @grpc_method("RemoveItems")
    async def RemoveItems(
        self, request: recall_pb2.RemoveItemsRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.RemoveItemsResponse:
        ids = list(request.item_ids)
        validate_ids(ids, self.server.settings.max_upsert_items)
        changed, size = await set_denied(self.server.vectors.client, ids, request.lift)
        CATALOGUE_CHANGES.labels("lifted" if request.lift else "removed").inc(changed)
        log.info(
            "%s %d item(s); deny set holds %d",
            "lifted" if request.lift else "removed",
            changed,
            size,
        )
        return recall_pb2.RemoveItemsResponse(changed=changed, deny_set_size=size)


def _set_catalogue_gauges(fresh: int, denied: int) -> None:
    FRESH_ITEMS.set(fresh)
    DENIED_ITEMS.set(denied)


def _bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> int:
    """Bind ``host:port`` (0 = any free port), with TLS when ``credentials`` are given; the
    bound port. OSError if it is taken."""
    try:
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError as exc:  # grpc reports a failed bind this way
        raise OSError(f"cannot listen on {host}:{port} (in use by another process?)") from exc
    if port and bound != port:
        raise OSError(f"cannot listen on {host}:{port}")
    return int(bound)


def _freeze_heap() -> None:
    """Move every object alive now (modules, the index's id map and fallback list: millions
    of objects at 1M items) out of the cyclic GC's reach. Without this each full collection
    walks them all: measured 4 gen-2 pauses of up to 140 ms in 10 s of load on the demo
    index, which were the p99. Frozen objects are still freed by reference counting when
    a swapped-out index is dropped."""
    gc.collect()
    gc.freeze()


class RecallServer:
    """Owns both gRPC servers, the index holder, the Redis client and the watcher task.

    ``await start()`` binds the ports (``port``/``admin_port`` then hold the real ones,
    useful when the settings ask for port 0) and tries one initial index load; the health
    service says NOT_SERVING until an index is loaded.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store = ArtifactStore(
            settings.artifact_root,
            cache_dir=settings.cache_dir,
            trusted_keys=trusted_keys_from(settings.trusted_keys_dir),
        )
        self.holder = IndexHolder(self.store)
        self.vectors = UserVectorStore.from_url(
            settings.redis_url,
            settings.redis_timeout_s,
            settings.redis_health_check_s,
            multi_key_reads=settings.redis_multi_key_reads,
            security=settings.redis_security(),
        )
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures,
            reset_s=settings.breaker_reset_s,
            probe_timeout_s=max(settings.breaker_reset_s, 4 * settings.redis_timeout_s),
        )
        self.engine = RecallEngine(
            self.holder,
            self.vectors,
            settings.max_k,
            settings.nprobe,
            max_nprobe=settings.max_nprobe,
            max_refine_factor=settings.max_refine_factor,
            breaker=self.breaker,
            failure_mode=settings.redis_failure_mode,
            inline_search_codes=settings.inline_search_codes,
            cheap_search_codes=settings.cheap_search_codes,
            search_threads=settings.search_threads,
            faiss_threads=settings.faiss_threads,
        )
        self.batcher: MicroBatcher[RecallQuery, RecallResult] | None = None
        if settings.batching:
            self.batcher = MicroBatcher(
                self.engine.recall_each,
                max_wait_s=settings.batch_wait_ms / 1000,
                max_items=settings.batch_max,
                on_batch=BATCH_SIZE.observe,
                on_dropped=lambda reason: BATCH_DROPPED.labels(reason).inc(),
                idle_wait_s=settings.batch_idle_wait_ms / 1000,
                max_running=self._batch_max_running,
            )
        self.recorder = InteractionRecorder(
            self.holder,
            self.vectors.client,
            max_per_call=settings.max_interactions,
            history_cap=settings.history_max_items,
            events_maxlen=settings.events_maxlen,
            retry_s=settings.redis_retry_s,
            canonical_maps=self.engine.canonical_maps,
        )
        self.repairer = VectorRepairer.from_url(
            self.store, settings.redis_url, security=settings.redis_security()
        )
        self.fresh = FreshSegmentPoller(
            self.vectors.client,
            self.holder.current_or_none,
            self.engine.canonical_maps,
            self._publish_fresh,
            max_items=settings.fresh_max_items,
            on_sizes=_set_catalogue_gauges,
        )
        self._fresh_task: asyncio.Task[None] | None = None
        self.port = 0
        self.admin_port = 0
        self._watcher: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None
        self.peers: WorkerPeers | None = None  # the host's other workers (worker 0 only)

    async def start(self) -> None:
        faiss.omp_set_num_threads(self.settings.faiss_threads)
        disable_interrupt_checks()  # searches in the search threads would wait for the GIL
        # gRPC aio objects bind to the running event loop, so they are made here.
        self.health = health.aio.HealthServicer()
        # gRPC enables SO_REUSEPORT by default: a second server on a busy port would start
        # "successfully" and silently share traffic. Refuse that instead.
        options = [("grpc.so_reuseport", 0)]
        # Workers of one host (RECALL_WORKERS > 1) share the recall port on purpose; their
        # supervisor has already refused a foreign server on it (serving/workers.py).
        shared = [("grpc.so_reuseport", 1)] if self.settings.workers > 1 else options
        self.server = grpc.aio.server(
            options=shared, interceptors=interceptors_for(self._recall_policies())
        )
        self.admin = grpc.aio.server(
            options=options, interceptors=interceptors_for(self._admin_policies())
        )
        servicer = RecallServicer(
            self.engine,
            self.recorder,
            self.settings.max_batch,
            batcher=self.batcher,
            max_in_flight=self.settings.max_in_flight,
        )
        # A cheap search runs on the loop when its calls are all this server is serving.
        self.engine.calls_in_flight = lambda: servicer.in_flight
        add_recall_service(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [RECALL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        recall_pb2_grpc.add_RecallAdminServicer_to_server(AdminServicer(self), self.admin)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.admin)
        reflection.enable_server_reflection(
            [ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], self.admin
        )
        host = self.settings.host
        credentials = self._credentials()
        self.port = _bind(self.server, host, self.settings.port, credentials)
        self.admin_port = _bind(self.admin, host, self.settings.admin_port, credentials)
        await self._set_serving(False)
        await self.server.start()
        await self.admin.start()
        log.info("recall service on %s:%d, admin on %s:%d", host, self.port, host, self.admin_port)
        try:
            # A restarted server must honour an operator's pin as the watcher does.
            first = self.settings.index_version or await asyncio.to_thread(self._wanted_index)
            await self.load_index(first)
        except RecallError as exc:
            log.warning("no index loaded at start: %s", exc)
        if self.settings.watch_interval_s > 0 and not self.settings.index_version:
            self._watcher = asyncio.create_task(self._watch_latest())
        self._fresh_task = asyncio.create_task(self.fresh.run(self.settings.fresh_poll_s))
        if self.settings.vector_repair_interval_s > 0:
            self._repair = asyncio.create_task(
                self.repairer.run(self._serving_model, self.settings.vector_repair_interval_s)
            )

    def _batch_max_running(self) -> int | None:
        """The batcher's limit now: one batch while the loaded index is cheap to search
        (RECALL_CHEAP_SEARCH_CODES), else RECALL_BATCH_MAX_RUNNING (0: no limit)."""
        if self.engine.searches_are_cheap():
            return 1
        return self.settings.batch_max_running or None

    def _publish_fresh(self, segment: FreshSegment | None) -> None:
        self.engine.fresh_segment = segment

    def _credentials(self) -> grpc.ServerCredentials | None:
        """TLS (mTLS with a client CA) for both ports, or None: plaintext."""
        s = self.settings
        if not (s.tls_cert_file and s.tls_key_file):
            return None
        return server_credentials(s.tls_cert_file, s.tls_key_file, s.tls_client_ca_file)

    def _recall_policies(self) -> dict[str, ServicePolicy]:
        """RecallService needs a token only when RECALL_SERVICE_TOKEN_FILE is set (mTLS
        already refuses clients without a certificate in the handshake)."""
        if not self.settings.service_token_file:
            return {}
        tokens = TokenFile(self.settings.service_token_file)
        return {RECALL_SERVICE: ServicePolicy(tokens, bool(self.settings.tls_client_ca_file))}

    def _admin_policies(self) -> dict[str, ServicePolicy]:
        """RecallAdmin: the admin token and/or a verified client certificate (mTLS)."""
        s = self.settings
        tokens = TokenFile(s.admin_token_file) if s.admin_token_file else None
        mtls = bool(s.tls_client_ca_file)
        if tokens is None and not mtls and s.host not in LOOPBACK_HOSTS:
            log.warning(
                "RecallAdmin accepts every caller on %s:%d (no RECALL_ADMIN_TOKEN_FILE, no "
                "mTLS): anyone who reaches the port can load an index",
                s.host,
                s.admin_port,
            )
        return {ADMIN_SERVICE: ServicePolicy(tokens, mtls)}

    def _serving_model(self) -> str | None:
        loaded = self.holder.current_or_none()
        return loaded.model_version if loaded else None

    async def load_index(self, version: str | None) -> tuple[LoadedIndex, LoadedIndex | None]:
        try:
            loaded, previous = await self.holder.load(version)
        except RecallError:
            INDEX_LOADS.labels("failure").inc()
            raise
        INDEX_LOADS.labels("success").inc()
        INDEX_ITEMS.set(loaded.item_count)
        INDEX_LOADED_AT.set(loaded.loaded_at)
        BATCH_MAX_RUNNING.set((self.batcher and self.batcher.max_running) or 0)
        INDEX_INFO.clear()
        INDEX_INFO.labels(loaded.index_version, loaded.model_version).set(1)
        _freeze_heap()
        await self._set_serving(True)
        return loaded, previous

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", RECALL_SERVICE):
            await self.health.set(service, status)

    def _wanted_index(self) -> str:
        """The index version this server should serve: the store's ``indexes/PIN`` while
        an operator holds one (`recall release pin|rollback`), else ``indexes/LATEST``.
        Blocking (store I/O). Raises RecallError subclasses, like ``IndexHolder.resolve``."""
        try:
            held = self.store.pinned(INDEX_KIND)
        except ArtifactError as exc:
            raise IndexLoadError(str(exc)) from exc
        return self.holder.resolve(held.version if held else None)

    async def _watch_latest(self) -> None:
        """Hot-swap when the store's target moves: a newly promoted LATEST, or a pin set or
        removed (a rollback must hold across polls). Edge-triggered: a version loaded over
        RecallAdmin (a ship's canary) is left alone until the target moves again, so push
        (serving.fleet) and pull never fight. A failed load keeps the old index."""
        loaded = self.holder.current_or_none()
        seen: str | None = loaded.index_version if loaded else None
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            try:
                wanted = await asyncio.to_thread(self._wanted_index)
                if wanted == seen:
                    continue
                seen = wanted  # tried once per move: a broken version is not retried
                current = self.holder.current_or_none()
                if current is None or current.index_version != wanted:
                    await self.load_index(wanted)
            except RecallError as exc:
                log.error("index watcher: %s (still serving the previous index)", exc)
            except Exception:
                log.exception("index watcher failed; retrying")

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: health says NOT_SERVING, new calls are refused, calls in flight get
        up to ``grace`` seconds to finish (their batches keep running), then Redis closes."""
        grace = self.settings.grace_s if grace is None else grace
        await cancel_all((self._watcher, self._repair, self._fresh_task))
        self.repairer.close()
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(self.server.stop(grace), self.admin.stop(grace))
        if self.batcher is not None:
            await self.batcher.drain()
        self.engine.close()
        await self.vectors.close()


def serve(settings: ServerSettings, role: WorkerRole | None = None) -> None:
    """Run ``run_forever`` on the configured event loop (asyncio by default; uvloop if
    asked for and installed). With ``settings.workers`` > 1 and no ``role``: supervise
    that many worker processes (serving/workers.py) and exit with their status."""
    if settings.workers > 1 and role is None:
        status = supervise(settings)
        if status:
            raise SystemExit(status)
        return
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; using the asyncio event loop")
        else:
            uvloop.run(run_forever(settings, role))
            return
    asyncio.run(run_forever(settings, role))


async def _private_admin(server: RecallServer, address: str) -> grpc.aio.Server:
    """RecallAdmin of this worker alone on its private Unix socket (no fan-out), for
    worker 0's fan-out and for operators who want one worker's view."""
    private = grpc.aio.server()
    recall_pb2_grpc.add_RecallAdminServicer_to_server(AdminServicer(server, fan_out=False), private)
    private.add_insecure_port(address)
    await private.start()
    return private


async def run_forever(settings: ServerSettings, role: WorkerRole | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop gracefully. ``role``: this process is one
    worker of several (serving/workers.py)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    server = RecallServer(settings)
    if role is not None and role.peers:
        server.peers = WorkerPeers(role.peers)
    await server.start()
    private = await _private_admin(server, role.private_admin) if role is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await stop.wait()
    log.info("stopping after %.0f s", time.monotonic() - started)
    if private is not None:
        await private.stop(0)
    await server.stop()
    if server.peers is not None:
        await server.peers.close()
