"""The dashboard's history (proxy/observe/ticker.py, History): points at multiples of the
step, per-step differences, bounded to the span."""

from __future__ import annotations

from proxy.observe.metrics import Meters
from proxy.observe.ticker import History, route_counts


def _meters() -> Meters:
    return Meters([("quotes", True), ("orders", False)])


def test_each_step_holds_what_happened_in_it_by_kind() -> None:
    meters, history = _meters(), History(step=5, span=60)
    history.record(1000.0, meters)
    meters.response("quotes", "GET", 200, "hit", 0.001)
    meters.response("quotes", "GET", 200, "miss", 0.05)
    meters.response("orders", "GET", 502, "bypass", 0.01)
    meters.response("orders", "GET", 429, "none", 0.0)
    meters.upstream("orders", "error", 0.01)
    meters.upstream("orders", "timeout", 5.0)
    meters.upstream("quotes", 200, 0.05)
    meters.ratelimit_check("orders", False)
    history.record(1004.9, meters)  # the same step: no point
    history.record(1005.2, meters)
    columns = history.columns()
    assert columns["t"] == [1005.0] and columns["step_seconds"] == 5
    expected = {"requests": [4], "errors_4xx": [1], "errors_5xx": [1], "upstream_errors": [1]}
    expected |= {"upstream_timeouts": [1], "rate_limited": [1], "hits": [1], "misses": [1]}
    assert {k: columns[k] for k in expected} == expected
    meters.response("quotes", "GET", 200, "hit", 0.001)
    history.record(1012.0, meters)
    assert history.columns()["t"] == [1005.0, 1010.0]
    assert history.columns()["requests"] == [4, 1]


def test_it_keeps_the_span_and_no_more() -> None:
    meters, history = _meters(), History(step=5, span=60)
    for i in range(100):
        meters.response("quotes", "GET", 200, "hit", 0.001)
        history.record(1000.0 + 5 * i, meters)
    columns = history.columns()
    assert len(columns["t"]) == 12  # 13 points: 12 steps of 5 s
    assert columns["t"][-1] == 1495.0 and columns["requests"] == [1] * 12


def test_since_finds_the_point_a_window_back() -> None:
    meters, history = _meters(), History(step=5, span=900)
    assert history.since(1000.0, 60) is None
    for i in range(30):
        history.record(1000.0 + 5 * i, meters)
    point = history.since(1146.0, 60)
    assert point is not None and point[0] == 1085.0  # the newest at least 60 s back
    oldest = history.since(1010.0, 60)
    assert oldest is not None and oldest[0] == 1000.0  # not that far yet: the oldest


def test_route_counts_leave_out_a_client_that_broke_off() -> None:
    meters = _meters()
    meters.upstream("orders", "aborted", 0.1)
    meters.upstream("orders", 503, 0.1)
    meters.upstream("orders", 404, 0.1)
    counts = dict(
        zip(
            ("upstream_errors", "upstream_timeouts"),
            route_counts(meters.by_route["orders"])[3:5],
            strict=True,
        )
    )
    assert counts == {"upstream_errors": 1, "upstream_timeouts": 0}
