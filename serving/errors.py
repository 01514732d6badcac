"""One exception hierarchy for serving; ``serving.grpc_errors`` maps it to status codes."""

from __future__ import annotations


class RecallError(Exception):
    """Base class of every error serving raises on purpose."""


class InvalidRequest(RecallError):
    """The caller sent something out of range (→ INVALID_ARGUMENT)."""


class NoIndexLoaded(RecallError):
    """No index is loaded yet, so no request can be served (→ UNAVAILABLE)."""


class BackendUnavailable(RecallError):
    """Redis (or another backend) cannot be reached right now (→ UNAVAILABLE).

    ``reason`` names the failure for metrics and degraded answers: ``redis_error``,
    ``redis_timeout`` or ``circuit_open``.
    """

    def __init__(self, message: str, reason: str = "redis_error") -> None:
        super().__init__(message)
        self.reason = reason


class Overloaded(RecallError):
    """More calls are in flight than the server accepts (→ RESOURCE_EXHAUSTED)."""


class DeadlineExpired(RecallError):
    """The caller's deadline passed before the call was served (→ DEADLINE_EXCEEDED)."""


class IndexVersionNotFound(RecallError):
    """The requested index version is not in the artifact store (→ NOT_FOUND)."""


class IndexLoadError(RecallError):
    """An index artifact failed verification or could not be read (→ FAILED_PRECONDITION)."""


class CorruptUserVector(RecallError):
    """A stored user vector has the wrong size for the serving model (→ DATA_LOSS)."""
