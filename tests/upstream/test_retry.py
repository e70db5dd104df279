"""Retry decisions, pure: the budget's sliding window, full-jitter backoff, Retry-After."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st

from proxy.upstream.retry import RetryBudget, backoff_delay, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_retries_stay_within_their_share_of_recent_requests() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0, clock=clock)
    allowed = 0
    for _ in range(100):
        budget.request()
        allowed += budget.try_retry()  # every request fails and wants a retry
        clock.now += 0.05
    assert allowed == 20
    assert budget.denied == 80


def test_the_floor_lets_a_quiet_proxy_retry() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1, clock=clock)
    budget.request()
    assert budget.try_retry()  # 20% of one request is nothing, but the floor allows 10
    for _ in range(9):
        assert budget.try_retry()
    assert not budget.try_retry()


def test_old_traffic_leaves_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10, clock=clock)
    for _ in range(10):
        budget.request()
    for _ in range(5):
        assert budget.try_retry()
    assert not budget.try_retry()
    clock.now += 11  # those requests and retries are history now
    budget.request()
    assert not budget.try_retry()  # 0.5 of 1 request: no retry
    budget.request()
    assert budget.try_retry()


def test_requests_given_the_time_count_in_that_bucket_and_age_out_from_it() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10, clock=clock)
    for step in range(4):  # each in a bucket of its own, from the caller's read of the clock
        budget.request(clock.now + 100 + step)
        budget.request(clock.now + 100 + step)
    budget.request(clock.now)  # behind the latest bucket: counted in the latest
    clock.now += 101.5  # the first bucket (t+100) is still in the window
    assert [budget.try_retry() for _ in range(5)] == [True] * 4 + [False]  # 0.5 of 9
    clock.now += 11  # only the last bucket (t+103) is left: its 3 requests and 4 retries
    assert not budget.try_retry()
    assert (sum(budget._requests), sum(budget._retries)) == (3, 4)


@given(
    retry=st.integers(0, 40),
    base=st.floats(0, 10),
    cap=st.floats(0, 60),
    r=st.floats(0, 1, exclude_max=True),
)
def test_backoff_is_full_jitter_under_the_cap(
    retry: int, base: float, cap: float, r: float
) -> None:
    delay = backoff_delay(retry, base, cap, lambda: r)
    assert 0 <= delay <= min(cap, base * 2**retry) + 1e-9


def test_backoff_grows_exponentially_until_capped() -> None:
    top = [backoff_delay(n, 0.1, 2.0, lambda: 1.0) for n in range(7)]
    assert top == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 120 ", now) == 120.0
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) == 0.0
    for bad in (None, "", "-1", "1.5", "soon"):
        assert retry_after_seconds(bad, now) is None
