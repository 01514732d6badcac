"""Transport security and call authentication of the recall server's gRPC ports.

- TLS: ``server_credentials`` builds the port credentials from PEM files; with a client CA
  every client must present a certificate that CA signed (mTLS), checked in the handshake.
- Bearer tokens: ``TokenFile`` holds the accepted tokens (one per line, so a new token can
  be added before the old one is removed); ``AuthInterceptor`` makes every call of the
  protected services carry ``authorization: Bearer <token>``. A call without it gets
  UNAUTHENTICATED, a wrong token PERMISSION_DENIED. Where mTLS is on, a verified client
  certificate admits a call that carries no token. Services not named (health,
  reflection) stay open, so probes and tooling need no credentials.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import grpc

from serving.errors import RecallError

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
"""The metadata key of the bearer token (gRPC metadata keys are lower case)."""
BEARER = "bearer"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
TOKEN_RECHECK_S = 1.0
"""How often a token file's mtime/size is looked at again: rotation takes effect within this
long, and a busy recall port pays one ``stat`` per second, not one per call."""


class SecurityConfigError(RecallError, ValueError):
    """A TLS or token file is missing, unreadable or empty (message names it). Raised at
    start or by a client, never inside a call."""


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or SecurityConfigError naming ``what`` and the path."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise SecurityConfigError(f"{what} {path} is not a PEM file")
    return data


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> grpc.ServerCredentials:
    """TLS credentials for a port: the server's certificate chain and key; with
    ``client_ca_file`` client certificates signed by that CA are required (mTLS)."""
    chain = read_pem(cert_file, "TLS certificate")
    key = read_pem(key_file, "TLS key")
    client_ca = read_pem(client_ca_file, "TLS client CA") if client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def parse_tokens(text: str) -> tuple[str, ...]:
    """The tokens of a token file: one per line; blank lines and ``#`` comments ignored."""
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


class TokenFile:
    """The accepted bearer tokens, read from ``path`` and re-read when it changes.

    Invariant: ``tokens()`` is never empty. A file that becomes unreadable or empty after
    start keeps the last good tokens (logged): locking every operator out because of a
    half-written rotation would be worse.
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._tokens = self._read()

    def _read(self) -> tuple[str, ...]:
        try:
            stat = os.stat(self.path)
            tokens = parse_tokens(Path(self.path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityConfigError(f"cannot read token file {self.path}: {exc}") from None
        if not tokens:
            raise SecurityConfigError(f"token file {self.path} holds no token")
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return tokens

    def tokens(self) -> tuple[str, ...]:
        now = self._clock()
        if now - self._checked_at >= TOKEN_RECHECK_S:
            self._checked_at = now
            try:
                stat = os.stat(self.path)
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self._tokens = self._read()
                    log.info("token file %s re-read (%d tokens)", self.path, len(self._tokens))
            except (OSError, SecurityConfigError) as exc:
                log.error("keeping the previous tokens: %s", exc)
        return self._tokens

    def accepts(self, token: str) -> bool:
        """Constant-time comparison against every accepted token."""
        given = token.encode()
        matched = False
        for accepted in self.tokens():
            matched |= hmac.compare_digest(given, accepted.encode())
        return matched


class Verdict(Enum):
    ALLOWED = "allowed"
    MISSING = "missing"
    MALFORMED = "malformed"
    WRONG = "wrong"


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The value of the ``authorization`` metadata entry, or None."""
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return None


def check_token(header: str | None, tokens: TokenFile) -> Verdict:
    """Judge an ``authorization`` header value against the accepted tokens."""
    if header is None:
        return Verdict.MISSING
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != BEARER or not token.strip():
        return Verdict.MALFORMED
    return Verdict.ALLOWED if tokens.accepts(token.strip()) else Verdict.WRONG


@dataclass(frozen=True)
class ServicePolicy:
    """Who may call one gRPC service: a holder of one of ``tokens`` or, when
    ``client_certificates`` (mTLS is on), a client with a verified certificate."""

    tokens: TokenFile | None
    client_certificates: bool


def _denial(verdict: Verdict, service: str) -> tuple[grpc.StatusCode, str]:
    if verdict is Verdict.WRONG:
        return grpc.StatusCode.PERMISSION_DENIED, f"{service}: the bearer token is not accepted"
    if verdict is Verdict.MALFORMED:
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            f"{service}: malformed credentials; send metadata 'authorization: Bearer <token>'",
        )
    how = "metadata 'authorization: Bearer <token>'"
    return grpc.StatusCode.UNAUTHENTICATED, f"{service} requires credentials: {how}"


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Enforces a ``ServicePolicy`` per fully qualified service name (e.g.
    ``recall.v1.RecallAdmin``); services without a policy pass untouched.

    The token is judged from the call's metadata before the handler runs. A call without a
    token on an mTLS port is judged once the handler runs (the peer's certificate is known
    only to the servicer context): admitted when the peer presented a verified certificate.
    """

    def __init__(self, policies: Mapping[str, ServicePolicy]) -> None:
        self.policies = dict(policies)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service = details.method.rsplit("/", 2)[-2] if details.method.count("/") >= 2 else ""
        policy = self.policies.get(service)
        if policy is None:
            return await continuation(details)
        verdict = Verdict.MISSING
        if policy.tokens is not None:
            verdict = check_token(bearer_token(details.invocation_metadata), policy.tokens)
            if verdict is Verdict.ALLOWED:
                return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None  # no such method: gRPC answers UNIMPLEMENTED
        if handler.unary_unary is None:
            # Protected services have unary methods only; anything else is refused outright.
            return _refusing(handler, *_denial(verdict, service))
        behavior: Behavior = handler.unary_unary
        admit_by_certificate = policy.client_certificates and verdict is Verdict.MISSING
        code, message = _denial(verdict, service)

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if admit_by_certificate and context.peer_identities():
                return await behavior(request, context)
            log.warning("refused %s from %s: %s", details.method, context.peer(), code.name)
            await context.abort(code, message)

        return handler._replace(unary_unary=guarded)


def _refusing(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=getattr(handler, "request_deserializer", None),
        response_serializer=getattr(handler, "response_serializer", None),
    )


def interceptors_for(
    policies: Mapping[str, ServicePolicy],
) -> list[grpc.aio.ServerInterceptor]:
    """``[AuthInterceptor]`` when any policy asks for something, else ``[]`` (an open port
    pays nothing per call)."""
    active = {
        name: policy
        for name, policy in policies.items()
        if policy.tokens is not None or policy.client_certificates
    }
    return [AuthInterceptor(active)] if active else []
