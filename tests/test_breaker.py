"""The circuit breaker as a pure state machine over a fake clock."""

from __future__ import annotations

from proxy.breaker import CircuitBreaker, State


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


async def test_admit_now_is_admit_without_waiting_when_closed_and_free() -> None:
    from proxy.origin_guard import OriginGuard
    from proxy.upstream_settings import Upstream

    config = Upstream.model_validate(
        {
            "url": "http://u:1",
            "pool": {"max_connections": 1},
            "circuit_breaker": {"failures": 1, "window": 10, "reset_after": 30},
        }
    )
    now = [0.0]
    guard = OriginGuard("u", "http://u:1", config, clock=lambda: now[0])
    assert guard.admit_now() and guard.gate.in_flight == 1
    assert not guard.admit_now()  # the only slot is taken: admit would queue
    guard.release()
    assert guard.breaker is not None
    guard.breaker.failure()  # open
    assert not guard.admit_now() and guard.gate.in_flight == 0
    now[0] = 31.0  # half-open: only admit may hand out the probe
    assert not guard.admit_now()
    assert await guard.admit(0.1, background=False) is True
