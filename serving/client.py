"""A small synchronous client for RecallService/RecallAdmin (used by `recall query`/`status`).

Every call has a deadline; only UNAVAILABLE is retried (with backoff), as gRPC advises.
``ClientSecurity`` adds TLS (optionally a client certificate, for mTLS) and bearer tokens
(``authorization: Bearer <token>`` metadata; serving/security.py checks them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc
from serving.security import AUTHORIZATION, SecurityConfigError, parse_tokens, read_pem

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]


def read_token(path: str) -> str:
    """The first token of a token file (the format the server reads: one per line).

    Raises:
        SecurityConfigError: unreadable, or no token in it.
    """
    try:
        tokens = parse_tokens(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityConfigError(f"cannot read token file {path}: {exc}") from None
    if not tokens:
        raise SecurityConfigError(f"token file {path} holds no token")
    return tokens[0]


@dataclass(frozen=True)
class ClientSecurity:
    """How a client authenticates; the default is plaintext without tokens.

    ``tls``: use TLS (implied by ``ca_file`` or a client certificate); without ``ca_file``
    the server's certificate is checked against the system's trust store.
    ``cert_file``/``key_file``: a client certificate (mTLS), both or neither.
    ``server_name``: the name expected in the server's certificate when it differs from
    the host dialled (e.g. dialling an IP address).
    ``token``/``admin_token``: bearer tokens for RecallService/RecallAdmin calls.
    """

    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    token: str | None = None
    admin_token: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise SecurityConfigError(
                "a client certificate needs its key: give both --tls-cert and --tls-key"
            )

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    def channel(self, target: str) -> grpc.Channel:
        """A channel to ``target``: TLS per the fields above, else plaintext.

        Raises:
            SecurityConfigError: a named PEM file cannot be read.
        """
        if not self.uses_tls:
            return grpc.insecure_channel(target)
        root = read_pem(self.ca_file, "TLS CA") if self.ca_file else None
        key = read_pem(self.key_file, "TLS client key") if self.key_file else None
        chain = read_pem(self.cert_file, "TLS client certificate") if self.cert_file else None
        credentials = grpc.ssl_channel_credentials(root, key, chain)
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(target, credentials, options=options)


def _bearer(token: str | None) -> Metadata:
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()


class RecallClient:
    def __init__(
        self,
        target: str,
        admin_target: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        *,
        security: ClientSecurity | None = None,
    ) -> None:
        security = security or ClientSecurity()
        self._channel = security.channel(target)
        self._admin_channel = security.channel(admin_target) if admin_target else None
        self._metadata = _bearer(security.token)
        self._admin_metadata = _bearer(security.admin_token)
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
        return self._call(
            lambda: self.recall_stub.Recall(
                request, timeout=self.timeout_s, metadata=self._metadata
            )
        )

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
            lambda: self.recall_stub.RecordInteractions(
                request, timeout=self.timeout_s, metadata=self._metadata
            )
        )

    def batch_recall(
        self, requests: Sequence[recall_pb2.RecallRequest]
    ) -> recall_pb2.BatchRecallResponse:
        batch = recall_pb2.BatchRecallRequest(requests=list(requests))
        return self._call(
            lambda: self.recall_stub.BatchRecall(
                batch, timeout=self.timeout_s, metadata=self._metadata
            )
        )

    def _admin(self) -> recall_pb2_grpc.RecallAdminStub:
        if self._admin_channel is None:
            raise ValueError("no admin target given")
        return recall_pb2_grpc.RecallAdminStub(self._admin_channel)

    def status(self) -> recall_pb2.GetStatusResponse:
        stub = self._admin()
        return self._call(
            lambda: stub.GetStatus(
                recall_pb2.GetStatusRequest(),
                timeout=self.timeout_s,
                metadata=self._admin_metadata,
            )
        )

    def load_index(self, version: str = "") -> recall_pb2.LoadIndexResponse:
        stub = self._admin()
        request = recall_pb2.LoadIndexRequest(version=version)
        return stub.LoadIndex(
            request, timeout=max(self.timeout_s, 120.0), metadata=self._admin_metadata
        )

    def upsert_items(
        self, items: Sequence[tuple[str, Mapping[str, str]]]
    ) -> recall_pb2.UpsertItemsResponse:
        """Add or replace items (id, feature columns as text) through RecallAdmin."""
        stub = self._admin()
        request = recall_pb2.UpsertItemsRequest(
            items=[recall_pb2.NewItem(item_id=i, features=dict(f)) for i, f in items]
        )
        return self._call(
            lambda: stub.UpsertItems(request, timeout=self.timeout_s, metadata=self._admin_metadata)
        )

    def remove_items(
        self, item_ids: Sequence[str], lift: bool = False
    ) -> recall_pb2.RemoveItemsResponse:
        """Take items down (``lift``: lift an earlier takedown) through RecallAdmin."""
        stub = self._admin()
        request = recall_pb2.RemoveItemsRequest(item_ids=list(item_ids), lift=lift)
        return self._call(
            lambda: stub.RemoveItems(request, timeout=self.timeout_s, metadata=self._admin_metadata)
        )

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
