"""The adaptive limit against model upstreams, over a fake clock."""

from __future__ import annotations

from collections.abc import Callable

from proxy.upstream.adaptive import GradientLimit

BASE = 0.05  # the model upstream's latency with no queueing, seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(
    limiter: GradientLimit, clock: Clock, latency: Callable[[int], float], seconds: float
) -> list[int]:
    """Closed-loop clients, always more than the limit: `limit` requests in flight, each
    taking latency(in flight). The limits seen, one per round trip."""
    seen = []
    end = clock.now + seconds
    while clock.now < end:
        n = limiter.limit
        clock.now += latency(n)
        for _ in range(n):
            limiter.sample(latency(n), n)
        seen.append(limiter.limit)
    return seen


def workers(capacity: int) -> Callable[[int], float]:
    """An upstream with `capacity` workers: beyond them, requests wait their turn."""
    return lambda n: BASE * max(1.0, n / capacity)


def test_slow_start_doubles_up_to_the_maximum_while_latency_holds() -> None:
    clock = Clock()
    limiter = GradientLimit(max_limit=64, min_limit=1, window=0.5, clock=clock)
    seen = drive(limiter, clock, lambda n: BASE, 5)
    assert seen[0] == 1
    assert sorted(set(seen))[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert limiter.limit == 64


def test_the_limit_settles_near_what_the_upstream_can_take() -> None:
    clock = Clock()
    limiter = GradientLimit(max_limit=64, min_limit=1, tolerance=1.5, window=0.5, clock=clock)
    seen = drive(limiter, clock, workers(8), 20)
    settled = seen[len(seen) // 2 :]
    # 8 workers: latency rises past 8 in flight; tolerance 1.5 puts the knee near 12.
    assert min(settled) >= 8 and max(settled) <= 20
    assert limiter.baseline is not None and abs(limiter.baseline - BASE) < BASE * 0.5


def test_the_limit_falls_when_the_upstream_slows_down_and_grows_back_after() -> None:
    clock = Clock()
    limiter = GradientLimit(max_limit=32, min_limit=1, window=0.5, clock=clock)
    drive(limiter, clock, lambda n: BASE, 5)
    assert limiter.limit == 32
    drive(limiter, clock, workers(4), 10)  # a degraded upstream: 4 workers left
    assert limiter.limit <= 10
    drive(limiter, clock, lambda n: BASE, 15)  # recovered
    assert limiter.limit == 32


def test_it_never_leaves_its_bounds() -> None:
    clock = Clock()
    limiter = GradientLimit(max_limit=10, min_limit=3, window=0.1, clock=clock)
    seen = drive(limiter, clock, lambda n: BASE * n * n, 10)  # collapses under any load
    assert min(seen) == 3 and max(seen[len(seen) // 2 :]) <= 6
    seen = drive(limiter, clock, lambda n: BASE, 10)
    assert max(seen) == 10


def test_an_idle_proxy_learns_nothing_about_more_load() -> None:
    # Two requests in flight at a time while the limit is 16: fast responses must not
    # grow the limit towards a load that was never tried ("app-limited").
    clock = Clock()
    limiter = GradientLimit(max_limit=64, min_limit=16, window=0.5, clock=clock)
    for _ in range(1000):
        clock.now += 0.01
        limiter.sample(BASE, 2)
    assert limiter.limit == 16


def test_one_window_can_at_most_halve_the_limit() -> None:
    clock = Clock()
    limiter = GradientLimit(max_limit=64, min_limit=1, window=0.5, clock=clock)
    drive(limiter, clock, lambda n: BASE, 5)
    assert limiter.limit == 64
    clock.now += 0.6
    limiter.sample(BASE * 100, 64)  # one window of timeouts
    assert limiter.limit >= 32
