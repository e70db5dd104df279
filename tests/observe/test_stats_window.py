"""The rolling window and alert thresholds, directly: a fake clock, no sockets."""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_left
from typing import Any

import pytest

from proxy.config.alerts import AlertSettings
from proxy.observe.alerts import AlertTracker, evaluate
from proxy.observe.metrics import Histogram
from proxy.observe.stats_window import (
    BOUNDS,
    BUCKETS,
    GAMMA,
    PROM_BOUNDS,
    RELATIVE_ERROR,
    RollingWindow,
    Totals,
    describe,
    percentile,
)


def latencies(*seconds: float) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for s in seconds:
        counts[bisect_left(BOUNDS, s)] += 1
    return tuple(counts)


def totals(**kw: Any) -> Totals:
    return Totals(**kw)


def test_buckets_are_log_spaced_one_percent_apart_with_the_prometheus_bounds_exact() -> None:
    assert BOUNDS[0] == 1e-5 and BOUNDS[-1] == 100.0
    assert set(PROM_BOUNDS) <= set(BOUNDS)
    assert list(BOUNDS) == sorted(set(BOUNDS))
    assert max(hi / lo for lo, hi in itertools.pairwise(BOUNDS)) <= GAMMA * (1 + 1e-12)
    assert len(BOUNDS) == 822  # 806 log-spaced, 15 Prometheus bounds, 100 s


def _exact(ordered: list[float], q: float) -> float:
    """The nearest-rank q-quantile: the ceil(q n)-th smallest."""
    return ordered[max(1, math.ceil(round(q * len(ordered), 6))) - 1]


def _off(estimate: float | None, exact: float) -> float:
    assert estimate is not None
    return abs(estimate - exact) / exact


_LIMIT = RELATIVE_ERROR * (1 + 1e-9)  # 1%, give or take floating-point rounding


def _samples(name: str, rng: random.Random) -> list[float]:
    n = 10_000
    if name == "uniform up to 2.02 s":
        return [rng.uniform(0.001, 2.0) for _ in range(n - 1)] + [2.02]
    if name == "lognormal around 1 ms, max 2.02 s":
        return [min(rng.lognormvariate(math.log(0.001), 1.0), 2.0) for _ in range(n - 1)] + [2.02]
    if name == "hits and a slow upstream":
        hits = [rng.uniform(0.0001, 0.0008) for _ in range(9_000)]
        return hits + [rng.uniform(0.2, 2.02) for _ in range(999)] + [2.02]
    if name == "on and beside bucket edges":
        edges = [BOUNDS[i] for i in rng.choices(range(1, len(BOUNDS) - 1), k=n // 3)]
        above = [b * (1 + 1e-12) for b in edges]
        below = [b * (1 - 1e-12) for b in edges]
        return [*edges, *above, *below, 2.02]
    if name == "exponential, 50 ms mean":
        return [1e-5 + rng.expovariate(20.0) for _ in range(n)]
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "uniform up to 2.02 s",
        "lognormal around 1 ms, max 2.02 s",
        "hits and a slow upstream",
        "on and beside bucket edges",
        "exponential, 50 ms mean",
    ],
)
def test_percentiles_are_within_one_percent_of_the_exact_ones(name: str) -> None:
    samples = _samples(name, random.Random(name))
    counts = latencies(*samples)
    ordered = sorted(samples)
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        assert _off(percentile(counts, q), _exact(ordered, q)) <= _LIMIT, (name, q)
    if ordered[-1] == 2.02:  # the case: p99 was reported as 2.45 s
        top = percentile(counts, 1.0)
        assert top is not None and 2.0 <= top <= 2.02 * 1.01


def test_percentiles_of_few_and_of_out_of_range_times() -> None:
    assert percentile([0] * BUCKETS, 0.5) is None
    # 99 responses at 0.4 ms, one at 250 ms: the 99th of 100 is still fast.
    counts = latencies(*([0.0004] * 99), 0.25)
    for q, exact in ((0.5, 0.0004), (0.99, 0.0004), (1.0, 0.25)):
        assert _off(percentile(counts, q), exact) <= _LIMIT
    assert percentile(latencies(0.0004), 0.0) == percentile(latencies(0.0004), 0.5)
    # Out of range: the range's ends, not made-up numbers.
    assert percentile(latencies(500.0), 0.5) == 100.0
    assert percentile(latencies(1e-7), 0.5) == 1e-5


def test_prometheus_buckets_count_exactly_what_was_at_most_their_bound() -> None:
    rng = random.Random(7)
    samples = [b * f for b in PROM_BOUNDS for f in (1 - 1e-12, 1.0, 1 + 1e-12)]
    samples += [rng.lognormvariate(math.log(0.01), 2.0) for _ in range(5_000)]
    hist = Histogram()
    for s in samples:
        hist.observe(s)
    coarse = hist.coarse()
    assert sum(coarse) == len(samples)
    for k, le in enumerate(PROM_BOUNDS):
        assert sum(coarse[: k + 1]) == sum(1 for s in samples if s <= le), le


def test_seven_hits_and_three_misses_are_a_hit_rate_of_point_seven() -> None:
    delta = totals(
        requests=10,
        hits=7,
        misses=3,
        cached=7,
        cached_seconds=7 * 0.0005,
        uncached=3,
        uncached_seconds=3 * 0.2,
        latency=latencies(*([0.0005] * 7), 0.2, 0.2, 0.2),
    )
    d = describe(delta, 10.0)
    assert (d["hits"], d["misses"], d["hit_rate"]) == (7, 3, 0.7)
    assert d["requests_per_second"] == 1.0
    rt, raw = d["response_times"], d["raw_counts"]
    assert isinstance(rt, dict) and isinstance(raw, dict)
    assert (rt["avg_cached_ms"], rt["avg_uncached_ms"], rt["speedup"]) == (0.5, 200.0, 400.0)
    assert raw["cached"] == 7 and sum(raw["latency_buckets"]) == 10
    assert describe(Totals(), 0.0)["hit_rate"] is None  # nothing yet is not 0%


def test_the_window_is_the_difference_to_the_snapshot_that_old() -> None:
    window = RollingWindow(span=60, start=Totals(), now=1000.0)
    for second in range(1, 121):  # two minutes, 10 requests a second
        window.push(1000.0 + second, totals(requests=10 * second))
    assert len(window) == 62  # bounded: one per second of the span, plus the edges
    now = 1120.0
    current = totals(requests=1200)
    delta, covered = window.over(now, current, 60)
    assert (delta.requests, covered) == (600, 60.0)
    delta, covered = window.over(now + 0.5, totals(requests=1205), 10)
    assert (delta.requests, covered) == (105, 10.5)  # from the snapshot at 1110
    # Longer than kept: as far back as kept.
    delta, covered = window.over(now, current, 3600)
    assert covered == 60.0


def test_an_hour_long_window_is_thinned_to_a_bounded_number_of_snapshots() -> None:
    window = RollingWindow(span=3600, start=Totals(), now=0.0)
    for second in range(1, 7201):  # two hours, 10 requests a second
        window.push(float(second), totals(requests=10 * second))
    assert len(window) <= 62 + 122  # not 3,600
    now, current = 7200.0, totals(requests=72_000)
    delta, covered = window.over(now, current, 60)
    assert (delta.requests, covered) == (600, 60.0)  # the last minute: exact
    delta, covered = window.over(now, current, 3600)
    assert 3600 <= covered <= 3600 + 3600 / 120 and delta.requests == 10 * covered
    delta, covered = window.over(now, current, 1800)
    assert 1800 <= covered <= 1800 + 3600 / 120 and delta.requests == 10 * covered


def test_a_young_window_covers_what_there_is() -> None:
    window = RollingWindow(span=60, start=Totals(), now=0.0)
    delta, covered = window.over(3.0, totals(requests=9), 60)
    assert (delta.requests, covered) == (9, 3.0)
    with pytest.raises(ValueError):
        RollingWindow(span=0, start=Totals(), now=0.0)


def test_alerts_need_enough_traffic_and_name_the_measured_value() -> None:
    settings = AlertSettings(min_hit_rate=0.7, max_p99_ms=100, max_error_rate=0.05, min_requests=10)
    quiet = describe(totals(requests=3, misses=3, uncached=3, uncached_seconds=3.0), 60)
    assert evaluate(settings, quiet) == []  # three misses after a quiet spell: no alert
    bad = describe(
        totals(
            requests=40,
            hits=10,
            misses=30,
            errors=4,
            uncached=30,
            uncached_seconds=30 * 0.3,
            latency=latencies(*([0.3] * 40)),
        ),
        60,
    )
    found = {a.name: a for a in evaluate(settings, bad)}
    assert set(found) == {"low_hit_rate", "high_p99", "high_error_rate"}
    assert (found["low_hit_rate"].value, found["low_hit_rate"].threshold) == (0.25, 0.7)
    assert found["high_error_rate"].value == 0.1
    assert abs(found["high_p99"].value - 300) <= 3  # 300 ms, within 1%
    assert evaluate(AlertSettings(), bad) == []  # nothing configured, nothing raised


def test_the_tracker_keeps_since_when_and_reports_raised_and_cleared() -> None:
    settings = AlertSettings(min_hit_rate=0.7, min_requests=1)
    tracker = AlertTracker()
    low = describe(totals(requests=10, hits=1, misses=9), 60)
    good = describe(totals(requests=10, hits=9, misses=1), 60)
    (raised,) = tracker.update(evaluate(settings, low), now=100.0)
    assert raised.raised and raised.alert.name == "low_hit_rate" and raised.since == 100.0
    assert tracker.update(evaluate(settings, low), now=101.0) == []  # still holds: no news
    assert tracker.active["low_hit_rate"].since == 100.0
    (cleared,) = tracker.update(evaluate(settings, good), now=130.0)
    assert not cleared.raised and cleared.since == 100.0
    assert tracker.active == {}
