"""The one place where serving errors become gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from serving import errors
from serving.metrics import LATENCY, REQUESTS

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[errors.RecallError], grpc.StatusCode]] = [
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NoIndexLoaded, grpc.StatusCode.UNAVAILABLE),
    (errors.BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.IndexVersionNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.IndexLoadError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.CorruptUserVector, grpc.StatusCode.DATA_LOSS),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExpired, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_for(exc: errors.RecallError) -> grpc.StatusCode:
    for cls, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def grpc_method(name: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Wrap a servicer method: map RecallError to its status code, anything unexpected to
    INTERNAL (logged with traceback, never shown to the caller), and record metrics.

    A call that gRPC cancels (the client went away or its deadline passed) is counted as
    CANCELLED or DEADLINE_EXCEEDED. Metric children are resolved once per method, not per
    call (a label look-up takes a lock and a dict search).
    """
    latency = LATENCY.labels(name)
    counters: dict[grpc.StatusCode, Any] = {}

    def count(code: grpc.StatusCode) -> None:
        counter = counters.get(code)
        if counter is None:
            counter = counters[code] = REQUESTS.labels(name, code.name)
        counter.inc()

    def decorate(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(fn)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            started = time.perf_counter()
            code, message = grpc.StatusCode.OK, ""
            try:
                return await fn(self, request, context)
            except errors.RecallError as exc:
                code, message = status_for(exc), str(exc)
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception:
                log.exception("%s failed", name)
                code, message = (
                    grpc.StatusCode.INTERNAL,
                    f"internal error in {name}; see server log",
                )
            finally:
                count(code)
                latency.observe(time.perf_counter() - started)
            await context.abort(code, message)
            raise AssertionError("unreachable: context.abort raises")

        return wrapper

    return decorate
