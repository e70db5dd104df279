"""The count breaker that guards Redis, as a pure state machine over a fake clock."""

from __future__ import annotations

from proxy.shared.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_enough_failures_within_the_window() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window=10, reset_after=5, clock=clock)
    for _ in range(2):
        breaker.failure()
    assert breaker.allow() and breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN
    assert not breaker.allow()


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window=10, reset_after=5, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 11
    breaker.failure()
    assert breaker.state is State.CLOSED


def test_success_while_closed_keeps_counting_recent_failures() -> None:
    # Intermittent failures still add up: a flapping dependency gets a rest too.
    clock = Clock()
    breaker = CircuitBreaker(failures=2, window=10, reset_after=5, clock=clock)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is State.OPEN


def test_one_probe_after_reset_then_close_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, window=10, reset_after=5, clock=clock)
    breaker.failure()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the probe
    assert breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # only one at a time
    breaker.success()
    assert breaker.state is State.CLOSED
    assert breaker.allow() and breaker.allow()


def test_failed_probe_opens_again_for_a_full_reset_period() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, window=10, reset_after=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is State.OPEN
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_retry_in_counts_down_to_the_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, window=10, reset_after=30, clock=clock)
    assert breaker.retry_in() == 0
    breaker.failure()
    assert breaker.retry_in() == 30
    clock.now += 12
    assert breaker.retry_in() == 18
    clock.now += 18
    assert breaker.retry_in() == 0
    assert breaker.opened == 1


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    # A probe whose client went away decides nothing; the circuit must not stay half-open.
    clock = Clock()
    breaker = CircuitBreaker(failures=1, window=10, reset_after=5, clock=clock)
    breaker.failure()
    clock.now += 5
    assert breaker.allow()
    assert not breaker.allow()
    breaker.abandon()
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED
