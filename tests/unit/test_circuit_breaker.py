"""serving.circuit_breaker: closed → open after N failures → half-open probe → closed/open."""

from __future__ import annotations

import pytest

from serving.circuit_breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, reset_s=0.25, probe_timeout_s=1.0, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.allow() and b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_half_open_lets_one_probe_through_after_reset() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 0.2
    assert not b.allow()
    clock.now += 0.06
    assert b.allow()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # one probe at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow()


def test_failed_probe_reopens_for_another_period() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 0.3
    assert b.allow()
    b.record_failure()  # one failure is enough in half-open
    assert b.state is BreakerState.OPEN
    clock.now += 0.2
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_a_lost_probe_is_replaced_after_the_probe_timeout() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 0.3
    assert b.allow()  # probe whose caller never reports (cancelled)
    clock.now += 0.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_s=0)
