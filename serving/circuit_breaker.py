"""A circuit breaker for the user-vector reads, so that a dead or hanging Redis costs one
failure now and then instead of a timeout on every call.

States: *closed* (reads go to Redis; ``failures`` consecutive failures open it), *open*
(no reads for ``reset_s``; callers serve degraded answers at once), *half-open* (one probe
read is let through: success closes the breaker, failure opens it for another
``reset_s``). A probe that never reports (its caller was cancelled) is replaced by a new
one after ``probe_timeout_s``.

Pure and single-threaded (the server's event loop); the clock is injectable for tests.
Covered by tests/unit/test_circuit_breaker.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 3,
        reset_s: float = 0.25,
        probe_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0 or probe_timeout_s <= 0:
            raise ValueError("failures must be ≥ 1, reset_s and probe_timeout_s > 0")
        self.failures = failures
        self.reset_s = reset_s
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_started = 0.0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """Whether a read may go to Redis now. In the open state, the first call after
        ``reset_s`` becomes the half-open probe (True); every other call gets False."""
        if self._state is BreakerState.CLOSED:
            return True
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at < self.reset_s:
                return False
        elif now - self._probe_started < self.probe_timeout_s:
            return False  # half-open: one probe at a time
        self._state = BreakerState.HALF_OPEN
        self._probe_started = now
        return True

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._consecutive = 0

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
