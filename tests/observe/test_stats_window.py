"""The rolling window and alert thresholds, directly: a fake clock, no sockets."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import pytest

from proxy.config.alerts import AlertSettings
from proxy.observe.alerts import AlertTracker, evaluate
from proxy.observe.stats_window import BOUNDS, BUCKETS, RollingWindow, Totals, describe, percentile


def latencies(*seconds: float) -> tuple[int, ...]:
    counts = [0] * BUCKETS
    for s in seconds:
        counts[bisect_left(BOUNDS, s)] += 1
    return tuple(counts)


def totals(**kw: Any) -> Totals:
    return Totals(**kw)


def test_buckets_are_exact_decimals_ten_per_decade() -> None:
    assert BOUNDS[0] == 1e-5 and BOUNDS[-1] == 100.0
    assert {0.00025, 0.0005, 0.001, 0.0025, 0.1, 1.0, 10.0} <= set(BOUNDS)
    assert list(BOUNDS) == sorted(BOUNDS) and len(BOUNDS) == 71


def test_percentiles_interpolate_within_a_bucket_and_stay_within_it() -> None:
    assert percentile([0] * BUCKETS, 0.5) is None
    # 99 responses at 0.4 ms, one at 250 ms.
    counts = latencies(*([0.0004] * 99), 0.25)
    p50 = percentile(counts, 0.5)
    assert p50 is not None and 0.0003 < p50 <= 0.0004
    p99 = percentile(counts, 0.99)
    assert p99 is not None and 0.0003 < p99 <= 0.0004  # the 99th of 100 is still fast
    p100 = percentile(counts, 1.0)
    assert p100 is not None and 0.2 < p100 <= 0.25
    # Past the last bound: the bound, not a made-up number.
    assert percentile(latencies(500.0), 0.5) == 100.0


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
    assert 250 < found["high_p99"].value <= 300
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
