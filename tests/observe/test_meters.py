"""The request path's counters (proxy/observe/metrics.py, Meters), as the scrape reads them."""

from __future__ import annotations

from proxy.observe.metrics import Meters


def test_upstream_outcomes_are_counted_under_their_text() -> None:
    meters = Meters([("api", False)])
    for outcome in (200, 200, 503, 999, "error", "timeout", "aborted"):
        meters.upstream("api", outcome, 0.01)
    meters.upstream("nowhere", 204, 0.01)  # a route no meter was made for: unrouted's
    assert meters.by_route["api"].upstream == {
        "200": 2,
        "503": 1,
        "999": 1,
        "error": 1,
        "timeout": 1,
        "aborted": 1,
    }
    assert meters.unrouted.upstream == {"204": 1}
    assert sum(meters.by_route["api"].upstream_durations.counts) == 7
