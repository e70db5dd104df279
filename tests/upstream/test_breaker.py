"""The upstream origins' breaker by failure rate, as a pure state machine over a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.shared.breaker import State
from proxy.upstream.breaker import MAX_ENDPOINTS, RateBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rate_breaker(clock: Clock, **settings: Any) -> RateBreaker:
    defaults: dict[str, Any] = {
        "failure_rate": 0.5,
        "min_requests": 20,
        "window": 10,
        "reset_after": 10,
        "probes": 3,
    }
    return RateBreaker(**{**defaults, **settings}, clock=clock)


def traffic(
    breaker: RateBreaker,
    clock: Clock,
    seconds: float,
    per_second: int,
    fails: Callable[[int], bool],
) -> float | None:
    """`per_second` verdicts a second, request i failing when `fails(i)`; the time it opened
    (seconds from the start), or None."""
    step = 1 / per_second
    for i in range(int(seconds * per_second)):
        clock.now += step
        endpoint = f"GET /items/{i % 37}"
        breaker.record(endpoint, fails(i))
        if breaker.state is State.OPEN:
            return (i + 1) * step
    return None


def test_two_percent_of_failures_in_steady_traffic_never_open_it() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    assert traffic(breaker, clock, 120, 100, lambda i: i % 50 == 0) is None
    assert breaker.seen() == (1000, 20)  # the last 10 s


def test_a_full_outage_at_100_per_second_opens_it_within_the_window() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    assert traffic(breaker, clock, 30, 100, lambda i: False) is None
    opened_after = traffic(breaker, clock, 10, 100, lambda i: True)
    # Half of the window's requests must have failed: 5 s after a window of successes.
    assert opened_after is not None and 4.5 <= opened_after <= 5.5
    assert breaker.last_opened[0] >= 900 and breaker.last_opened[1] >= 0.5 * 900
    # From quiet, min_requests failures are enough.
    clock.now += 100
    quiet = rate_breaker(clock)
    assert traffic(quiet, clock, 10, 100, lambda i: True) == pytest.approx(0.2)


def test_fewer_than_min_requests_never_open_it() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    for _ in range(19):
        breaker.record("GET /down", True)
    assert breaker.state is State.CLOSED
    breaker.record("GET /down", True)
    assert breaker.state is State.OPEN  # the only endpoint asked for: its rate is the origin's


def test_one_failing_endpoint_among_responding_ones_never_opens_it() -> None:
    # One client hammers an endpoint that always fails; others' traffic, a request a
    # second, succeeds. The rate over the origin passes 50%, but without that endpoint the
    # origin is healthy: it is the endpoint's trouble, not a reason to deny everyone.
    clock = Clock()
    breaker = rate_breaker(clock)
    for second in range(30):
        breaker.record(f"GET /api/ok/{second % 3}", False)
        for _ in range(10 if second < 10 else 200):
            breaker.record("GET /api/broken", True)
        clock.now += 1
    assert breaker.state is State.CLOSED
    requests, failures = breaker.seen()
    assert failures / requests > 0.99


def test_the_same_path_by_another_method_is_another_endpoint() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    for _ in range(20):
        breaker.record("GET /api/orders", False)
        breaker.record("POST /api/orders", True)
        breaker.record("POST /api/orders", True)
    assert breaker.state is State.CLOSED


def test_failures_spread_over_endpoints_open_it() -> None:
    # An overloaded upstream failing 60% of everything, whatever the endpoint.
    clock = Clock()
    breaker = rate_breaker(clock)
    opened = traffic(breaker, clock, 10, 100, lambda i: i % 5 < 3)
    assert opened is not None and opened < 1
    # Two endpoints, both down, one far busier than the other.
    clock.now += 100
    breaker = rate_breaker(clock)
    for i in range(40):
        breaker.record("GET /busy" if i % 10 else "GET /rare", True)
    assert breaker.state is State.OPEN


def test_failures_older_than_the_window_leave_it() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    for _ in range(15):
        breaker.record("GET /a", True)
    clock.now += 10.5
    for _ in range(15):
        breaker.record("GET /a", True)
    assert breaker.state is State.CLOSED and breaker.seen() == (15, 15)
    for _ in range(5):  # 20 in the window now, all failed
        breaker.record("GET /a", True)
    assert breaker.state is State.OPEN


def test_consecutive_failures_are_off_unless_set() -> None:
    clock = Clock()
    off = rate_breaker(clock, min_requests=1000)
    for _ in range(500):
        off.record("GET /a", True)
    assert off.state is State.CLOSED
    on = rate_breaker(clock, min_requests=1000, consecutive=5)
    for _ in range(4):
        on.record("GET /a", True)
    on.record("GET /b", False)  # a success breaks the row
    for _ in range(4):
        on.record("GET /a", True)
    assert on.state is State.CLOSED
    on.record("GET /a", True)
    assert on.state is State.OPEN


def open_breaker(clock: Clock, endpoints: int = 5) -> RateBreaker:
    breaker = rate_breaker(clock, reset_after=5)
    for i in range(40):
        breaker.record(f"GET /e{i % endpoints}", True)
    assert breaker.state is State.OPEN
    return breaker


def test_half_open_lets_a_few_probes_through_one_per_endpoint() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    assert not breaker.allow("GET /x") and breaker.retry_in() == 5
    clock.now += 5
    assert breaker.allow("GET /broken") and breaker.state is State.HALF_OPEN
    assert not breaker.allow("GET /broken")  # one client's endpoint takes one probe
    assert breaker.allow("GET /a") and breaker.allow("GET /b")
    assert not breaker.allow("GET /c")  # three probes at most
    breaker.record("GET /broken", True, probe=True)
    assert breaker.state is State.HALF_OPEN  # one endpoint failing proves nothing
    breaker.record("GET /a", False, probe=True)
    assert breaker.state is State.CLOSED
    assert breaker.allow("GET /c") and breaker.seen() == (0, 0)  # a fresh window
    breaker.record("GET /b", True, probe=True)  # a late probe counts as any request now
    assert breaker.seen() == (1, 1)


def test_failed_probes_of_several_endpoints_open_it_again() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    clock.now += 5
    for path in ("/a", "/b", "/c"):
        assert breaker.allow(f"GET {path}")
    breaker.record("GET /a", True, probe=True)
    breaker.record("GET /b", True, probe=True)
    assert breaker.state is State.HALF_OPEN
    breaker.record("GET /c", True, probe=True)
    assert breaker.state is State.OPEN and breaker.opened == 2
    assert breaker.retry_in() == 5


def test_an_origin_with_one_endpoint_opens_again_on_its_failed_probe() -> None:
    clock = Clock()
    breaker = open_breaker(clock, endpoints=1)
    clock.now += 5
    assert breaker.allow("GET /graphql")
    breaker.record("GET /graphql", True, probe=True)
    assert breaker.state is State.OPEN


def test_a_half_open_spell_without_a_success_ends_after_reset_after() -> None:
    # Only one endpoint asks, and its probe failed: the others' probes never come.
    clock = Clock()
    breaker = open_breaker(clock)
    clock.now += 5
    assert breaker.allow("GET /only")
    breaker.record("GET /only", True, probe=True)
    clock.now += 4.9
    assert not breaker.allow("GET /only") and breaker.state is State.HALF_OPEN
    clock.now += 0.1
    assert not breaker.allow("GET /only") and breaker.state is State.OPEN
    clock.now += 5
    assert breaker.allow("GET /only")  # a new spell, a new probe
    breaker.record("GET /only", False, probe=True)
    assert breaker.state is State.CLOSED


def test_an_abandoned_probe_lets_its_endpoint_probe_again() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    clock.now += 5
    assert breaker.allow("GET /a")
    assert not breaker.allow("GET /a")
    breaker.abandon("GET /a", probe=True)
    assert breaker.allow("GET /a")
    breaker.record("GET /a", False, probe=True)
    assert breaker.state is State.CLOSED


def test_calls_sent_before_it_opened_decide_nothing() -> None:
    clock = Clock()
    breaker = open_breaker(clock)
    breaker.record("GET /late", False)  # admitted while closed, completed after
    assert breaker.state is State.OPEN
    clock.now += 5
    assert breaker.allow("GET /a")
    breaker.record("GET /late", False)
    assert breaker.state is State.HALF_OPEN


def test_endpoints_counted_apart_are_bounded() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    for i in range(10 * MAX_ENDPOINTS):
        breaker.record(f"GET /u/{i}", False)
        breaker.record(f"GET /f/{i}", True)
        clock.now += 0.0001
    assert len(breaker._others) == MAX_ENDPOINTS and len(breaker._failing) == MAX_ENDPOINTS
    clock.now += 11  # the next failing newcomer sweeps those whose failures are history
    breaker.record("GET /new", True)
    assert list(breaker._failing) == ["GET /new"]


def test_a_full_outage_over_ever_new_paths_opens_it_as_fast() -> None:
    # /items/<id>: every request a path of its own, more than are counted apart.
    clock = Clock()
    breaker = rate_breaker(clock)
    step, n = 0.01, 0
    while breaker.state is State.CLOSED and n < 4000:
        n += 1
        clock.now += step
        breaker.record(f"GET /items/{n}", n > 3000)
    assert breaker.state is State.OPEN and 4.5 <= (n - 3000) * step <= 5.5


def test_an_endpoint_that_starts_failing_is_told_apart_among_many() -> None:
    # Hundreds of distinct healthy paths a second; then one client's endpoint fails.
    clock = Clock()
    breaker = rate_breaker(clock)
    for i in range(3000):
        clock.now += 0.01
        breaker.record(f"GET /items/{i}", False)
        if i >= 2000:
            breaker.record("GET /broken", True)
            breaker.record("GET /broken", True)
    assert breaker.state is State.CLOSED and breaker.seen() == (3000, 2000)


async def test_admit_now_is_admit_without_waiting_when_closed_and_free() -> None:
    from proxy.config.upstream import Upstream
    from proxy.upstream.guard import OriginGuard

    config = Upstream.model_validate(
        {
            "url": "http://u:1",
            "pool": {"max_connections": 1},
            "circuit_breaker": {"min_requests": 1, "window": 10, "reset_after": 30},
        }
    )
    now = [0.0]
    guard = OriginGuard("u", "http://u:1", config, clock=lambda: now[0])
    assert guard.admit_now() and guard.gate.in_flight == 1
    assert not guard.admit_now()  # the only slot is taken: admit would queue
    guard.verdict("GET /", False, True, None)  # open
    guard.release()
    assert not guard.admit_now() and guard.gate.in_flight == 0
    now[0] = 31.0  # half-open: only admit may hand out a probe
    assert not guard.admit_now()
    assert await guard.admit(0.1, background=False, endpoint="GET /") is True
    stats = guard.stats()
    assert (stats.circuit, stats.circuit_opened, stats.failures) == ("half-open", 1, 1)


def test_a_verdict_given_the_time_counts_in_that_bucket_not_the_clocks() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    breaker.record("GET /a", False, now=clock.now + 50)  # the caller's read, 50 s on
    breaker.record("GET /a", True, now=clock.now + 50)
    clock.now += 55  # had they counted at the clock's 1000, they would be out by now
    assert breaker.seen() == (2, 1)
    assert breaker._others == {} and breaker._failing["GET /a"].requests == 2


def test_successes_an_endpoint_had_come_along_when_it_starts_failing() -> None:
    clock = Clock()
    breaker = rate_breaker(clock)
    for _ in range(5):
        breaker.record("GET /a", False)
        clock.now += 3  # over buckets: the oldest leave the endpoint's window
    assert breaker._others["GET /a"].at(int(clock.now)).requests == 3
    breaker.record("GET /a", True)
    window = breaker._failing["GET /a"]
    assert "GET /a" not in breaker._others and (window.requests, window.failures) == (4, 1)
