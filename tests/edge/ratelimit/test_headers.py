"""The rate-limit headers: the composed RateLimit field is exactly what http-sf writes."""

from __future__ import annotations

import http_sf
from http_sf.types import ParamsType
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.rates import MAX_COUNT, MAX_WINDOW, parse_rate
from proxy.edge.ratelimit.headers import RateHeaders, whole_seconds

RATES = [parse_rate("5/minute"), parse_rate("20/hour"), parse_rate("10/30s")]


@given(
    st.integers(0, len(RATES) - 1),
    st.integers(0, MAX_COUNT),
    st.integers(1, 2 * MAX_WINDOW),
)
def test_the_field_is_the_librarys_serialisation(which: int, remaining: int, reset: int) -> None:
    headers = RateHeaders(RATES)
    rate = RATES[which]
    params: ParamsType = {"r": remaining, "t": reset}
    expected = http_sf.ser([(rate.text, params)])
    pairs = dict(headers.get(which, remaining, reset))
    assert pairs["RateLimit"] == expected
    assert http_sf.parse(expected.encode(), tltype="list") == [
        (rate.text, {"r": remaining, "t": reset})
    ]
    assert pairs["X-RateLimit-Limit"] == str(rate.count)
    assert pairs["X-RateLimit-Remaining"] == str(remaining)
    assert pairs["X-RateLimit-Reset"] == str(reset)
    # Asked again (memoised or not), the same result.
    assert dict(headers.get(which, remaining, reset)) == pairs


@given(
    st.integers(0, len(RATES) - 1),
    st.integers(0, MAX_COUNT),
    st.integers(1, 2 * MAX_WINDOW),
)
def test_the_lines_are_the_fields_on_the_wire(which: int, remaining: int, reset: int) -> None:
    headers = RateHeaders(RATES)
    wire = "".join(f"{k}: {v}\r\n" for k, v in headers.get(which, remaining, reset))
    assert headers.lines(which, remaining, reset) == wire


def test_the_policy_lists_every_limit_once() -> None:
    headers = RateHeaders(RATES)
    assert headers.policy == '"5/minute";q=5;w=60, "20/hour";q=20;w=3600, "10/30s";q=10;w=30'
    assert headers.policy_only == (("RateLimit-Policy", headers.policy),)


def test_whole_seconds_round_up_past_float_noise() -> None:
    assert [whole_seconds(w) for w in (0.0, 0.2, 1.0, 1.0000000001, 1.01, 59.999)] == [
        1, 1, 1, 1, 2, 60,
    ]  # fmt: skip
