"""Cache-Status (RFC 9211) as http-sf serialises it, and the hit path's shortcut to it."""

from __future__ import annotations

import math

import http_sf
import pytest
from http_sf import Token
from http_sf.types import ParamsType
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.status import (
    BYPASS,
    HIT,
    MISS,
    SF_INTEGER_MAX,
    CacheOutcome,
    cache_status,
    cache_status_ttl,
)

# Every outcome the cache reports, and the parameters it means, built by hand.
STATUSES: list[tuple[str, ParamsType]] = [
    ("hit", {"hit": True}),
    ("hit; detail=shared", {"hit": True, "detail": Token("shared")}),
    ("hit; detail=stale-while-revalidate",
     {"hit": True, "detail": Token("stale-while-revalidate")}),
    ("fwd=miss", {"fwd": Token("miss")}),
    ("fwd=miss; stored", {"fwd": Token("miss"), "stored": True}),
    ("fwd=miss; collapsed", {"fwd": Token("miss"), "collapsed": True}),
    ("fwd=miss; collapsed; detail=shared",
     {"fwd": Token("miss"), "collapsed": True, "detail": Token("shared")}),
    ("fwd=miss; detail=only-if-cached", {"fwd": Token("miss"), "detail": Token("only-if-cached")}),
    ("fwd=stale; fwd-status=304", {"fwd": Token("stale"), "fwd-status": 304}),
    ("fwd=stale; detail=stale-if-error",
     {"fwd": Token("stale"), "detail": Token("stale-if-error")}),
    ("fwd=bypass", {"fwd": Token("bypass")}),
    ("fwd=bypass; detail=range", {"fwd": Token("bypass"), "detail": Token("range")}),
    ("fwd=bypass; detail=credentials", {"fwd": Token("bypass"), "detail": Token("credentials")}),
]  # fmt: skip

# What storability and the store can tell, reported as `fwd=miss; detail=<reason>`.
REASONS = [
    "method",
    "credentials",
    "status",
    "no-store",
    "must-understand",
    "private",
    "authorization",
    "set-cookie",
    "vary-star",
    "no-freshness",
    "too-large",
]


def serialised(params: ParamsType) -> str:
    return http_sf.ser([(Token("cacheproxy"), params)])


@pytest.mark.parametrize(("status", "params"), STATUSES, ids=[s for s, _ in STATUSES])
def test_cache_status_is_http_sf_serialisation(status: str, params: ParamsType) -> None:
    assert cache_status(status) == serialised(params)


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_is_a_token_detail(reason: str) -> None:
    value = cache_status(f"fwd=miss; detail={reason}")
    assert http_sf.parse(value.encode(), tltype="list") == [
        (Token("cacheproxy"), {"fwd": Token("miss"), "detail": Token(reason)})
    ]


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(STATUSES),
    ttl=st.integers(-SF_INTEGER_MAX, SF_INTEGER_MAX),
    fraction=st.floats(0, 0.999),
)
def test_ttl_shortcut_equals_http_sf(
    case: tuple[str, ParamsType], ttl: int, fraction: float
) -> None:
    status, params = case
    # A ttl of whole seconds towards zero, as the hit path passes lifetime - age.
    seconds = ttl + fraction if ttl >= 0 else ttl - fraction
    if abs(seconds) > SF_INTEGER_MAX:
        seconds = float(ttl)
    expected = serialised({**params, "ttl": int(seconds)})
    assert cache_status_ttl(status, seconds) == expected
    assert http_sf.parse(expected.encode(), tltype="list")  # and it is a valid sf-list


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (47.9, 47),
        (-0.5, 0),
        (-3.2, -3),
        (1e300, SF_INTEGER_MAX),
        (math.inf, SF_INTEGER_MAX),
        (-math.inf, -SF_INTEGER_MAX),
        (math.nan, -SF_INTEGER_MAX),
    ],
)
def test_ttl_is_whole_seconds_within_sf_integer_range(ttl: float, expected: int) -> None:
    assert cache_status_ttl("hit", ttl) == serialised({"hit": True, "ttl": expected})


@pytest.mark.parametrize("params", ["fwd=miss;;", "detail=not a token", "Fwd=miss", "ttl=1.2.3"])
def test_malformed_parameters_fail_loudly(params: str) -> None:
    with pytest.raises(http_sf.StructuredFieldError):
        cache_status(params)


# --- CacheOutcome: one value read by the headers, the metrics and the log ----------------


def test_every_outcome_the_cache_stage_reports_is_well_formed() -> None:
    from proxy.pipeline.cache_stage import outcomes

    made = [v for v in vars(outcomes).values() if isinstance(v, CacheOutcome)]
    assert len(made) >= 12
    for outcome in made:
        assert outcome.label == outcome.x_cache.lower()
        assert outcome.status == cache_status(outcome.params)
        assert outcome.fields() == {"X-Cache": outcome.x_cache, "Cache-Status": outcome.status}
        expected = f"X-Cache: {outcome.x_cache}\r\nCache-Status: {outcome.status};ttl="
        assert outcome.lines_to_ttl == expected


def test_an_outcome_is_made_once_per_distinct_pair() -> None:
    assert CacheOutcome.of("MISS", "fwd=miss; stored") is CacheOutcome.of(
        "MISS", "fwd=miss; stored"
    )
    assert CacheOutcome.of("MISS", "fwd=miss") is MISS
    assert (HIT.label, BYPASS.label) == ("hit", "bypass")


def test_an_outcome_with_ttl_is_cache_status_ttl() -> None:
    stale = CacheOutcome.of("STALE", "hit; detail=stale-while-revalidate")
    assert stale.status_with_ttl(-3.7) == cache_status_ttl(stale.params, -3.7)


def test_an_unknown_x_cache_word_is_refused() -> None:
    with pytest.raises(KeyError):
        CacheOutcome.of("PARTIAL", "hit")
