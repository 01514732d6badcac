"""A small synchronous client for RecallService/RecallAdmin (used by `recall query`/`status`).

Every call has a deadline; only UNAVAILABLE is retried (with backoff), as gRPC advises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc

T = TypeVar("T")


class RecallClient:
    def __init__(
        self, target: str, admin_target: str | None = None, timeout_s: float = 5.0, retries: int = 2
    ) -> None:
        self._channel = grpc.insecure_channel(target)
        self._admin_channel = grpc.insecure_channel(admin_target) if admin_target else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.recall_stub = recall_pb2_grpc.RecallServiceStub(self._channel)
        self.health_stub = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def recall(
        self, user_id: str, k: int, exclude: Sequence[str] = (), exclude_seen: bool = False
    ) -> recall_pb2.RecallResponse:
        request = recall_pb2.RecallRequest(
            user_id=user_id, k=k, exclude_item_ids=list(exclude), exclude_seen=exclude_seen
        )
        return self._call(lambda: self.recall_stub.Recall(request, timeout=self.timeout_s))

    def record_interactions(
        self, interactions: Sequence[tuple[str, str, int]]
    ) -> recall_pb2.RecordInteractionsReply:
        """Record (user_id, item_id, timestamp seconds; 0 = now) interactions.

        Retried on UNAVAILABLE like every call: the server stores interactions at least
        once, so a retry after a lost reply may record some twice.
        """
        request = recall_pb2.RecordInteractionsRequest(
            interactions=[
                recall_pb2.Interaction(user_id=u, item_id=i, timestamp=t)
                for u, i, t in interactions
            ]
        )
        return self._call(
            lambda: self.recall_stub.RecordInteractions(request, timeout=self.timeout_s)
        )

    def batch_recall(
        self, requests: Sequence[recall_pb2.RecallRequest]
    ) -> recall_pb2.BatchRecallResponse:
        batch = recall_pb2.BatchRecallRequest(requests=list(requests))
        return self._call(lambda: self.recall_stub.BatchRecall(batch, timeout=self.timeout_s))

    def _admin(self) -> recall_pb2_grpc.RecallAdminStub:
        if self._admin_channel is None:
            raise ValueError("no admin target given")
        return recall_pb2_grpc.RecallAdminStub(self._admin_channel)

    def status(self) -> recall_pb2.GetStatusResponse:
        stub = self._admin()
        return self._call(
            lambda: stub.GetStatus(recall_pb2.GetStatusRequest(), timeout=self.timeout_s)
        )

    def load_index(self, version: str = "") -> recall_pb2.LoadIndexResponse:
        stub = self._admin()
        request = recall_pb2.LoadIndexRequest(version=version)
        return stub.LoadIndex(request, timeout=max(self.timeout_s, 120.0))

    def is_serving(self) -> bool:
        try:
            reply = self.health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_serving(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_serving():
                return True
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self._channel.close()
        if self._admin_channel:
            self._admin_channel.close()
