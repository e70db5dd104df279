"""Surrogate-Control (W3C Edge Architecture 1.0; Fastly's reading) between CDN-Cache-Control
(RFC 9213) and Cache-Control: pure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.cache.policy.directives import effective_cache_control, governing
from proxy.cache.policy.freshness import freshness_lifetime, shared_store_ttl
from proxy.cache.policy.serving import Freshness, lookup_verdict
from proxy.cache.policy.storable import StoreDecision, storability
from tests.cache.policy.samples import DEFAULT, NOW, cc, h, http_date


def test_surrogate_max_age_is_the_freshness_whatever_cache_control_tells_browsers() -> None:
    headers = h(("Cache-Control", "max-age=0"), ("Surrogate-Control", "max-age=60"))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    assert storability("GET", 200, h(), headers, DEFAULT) == StoreDecision(True, "ok")


@pytest.mark.parametrize(
    "browser",
    ["no-cache", "must-revalidate, max-age=0", "proxy-revalidate", "s-maxage=5", "max-age=9"],
)
def test_cache_controls_revalidation_and_freshness_are_the_browsers_beside_a_max_age(
    browser: str,
) -> None:
    # Fastly's own example: no-cache for browsers, a long Surrogate-Control max-age for
    # the CDN. A hit must not revalidate every time, nor take s-maxage before it.
    headers = h(("Cache-Control", browser), ("Surrogate-Control", "max-age=60"))
    effective = effective_cache_control(headers)
    assert effective.max_age == 60 and effective.s_maxage is None
    assert not (effective.no_cache or effective.must_revalidate or effective.proxy_revalidate)
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    verdict = lookup_verdict(
        age=10, lifetime=60, request_cc=cc(""), response_cc=effective, rules=DEFAULT
    )
    assert verdict is Freshness.FRESH


def test_without_a_max_age_cache_controls_freshness_and_revalidation_stand() -> None:
    headers = h(
        ("Cache-Control", "no-cache, max-age=30"), ("Surrogate-Control", "stale-if-error=60")
    )
    effective = effective_cache_control(headers)
    assert (effective.no_cache, effective.max_age, effective.stale_if_error) == (True, 30, 60)
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


@pytest.mark.parametrize(("browser", "reason"), [("private", "private"), ("no-store", "no-store")])
def test_private_and_no_store_in_cache_control_still_keep_a_response_out(
    browser: str, reason: str
) -> None:
    # A surrogate field must not make a shared cache of what the origin keeps private.
    headers = h(("Cache-Control", browser), ("Surrogate-Control", "max-age=60"))
    assert storability("GET", 200, h(), headers, DEFAULT) == StoreDecision(False, reason)


@pytest.mark.parametrize("browser", ["max-age=60", "public, s-maxage=60", "must-understand"])
def test_surrogate_no_store_is_not_stored(browser: str) -> None:
    headers = h(("Cache-Control", browser), ("Surrogate-Control", "no-store"))
    assert storability("GET", 200, h(), headers, DEFAULT) == StoreDecision(False, "no-store")
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_surrogate_windows_come_before_cache_controls() -> None:
    headers = h(
        ("Cache-Control", "max-age=5, stale-while-revalidate=1, stale-if-error=2"),
        ("Surrogate-Control", "max-age=60, stale-while-revalidate=30"),
    )
    effective = effective_cache_control(headers)
    assert (effective.stale_while_revalidate, effective.stale_if_error) == (30, 2)
    assert shared_store_ttl(60, 0, headers, DEFAULT) == 60 + 30


def test_expires_is_not_read_once_surrogate_control_gives_a_max_age() -> None:
    expires = (("Expires", http_date(NOW + 500)), ("Date", http_date(NOW)))
    assert freshness_lifetime(h(*expires, ("Surrogate-Control", "max-age=7")), DEFAULT, NOW) == 7
    assert governing(h(*expires, ("Surrogate-Control", "max-age=7")))[1]
    # Without one, Expires is the freshness, as Fastly reads it.
    only_window = h(*expires, ("Surrogate-Control", "stale-if-error=9"))
    assert freshness_lifetime(only_window, DEFAULT, NOW) == 500
    assert not governing(only_window)[1]


CDN_FIRST = [
    # id, CDN-Cache-Control, Surrogate-Control, Cache-Control, lifetime, stored
    ("cdn-max-age", "max-age=30", "max-age=60", "max-age=0", 30, True),
    ("cdn-store-beats-no-store", "max-age=30", "no-store", "no-store", 30, True),
    ("cdn-no-store", "no-store", "max-age=60", "max-age=60", 0, False),
    ("cdn-unparsable-ignored", "max-age=30,", "max-age=60", "max-age=0", 60, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cdn", "surrogate", "plain", "lifetime", "stored"),
    [case[1:] for case in CDN_FIRST],
    ids=[case[0] for case in CDN_FIRST],
)
def test_cdn_cache_control_wins_over_surrogate_control_and_cache_control(
    cdn: str, surrogate: str, plain: str, lifetime: int, stored: bool
) -> None:
    headers = h(
        ("Cache-Control", plain), ("Surrogate-Control", surrogate), ("CDN-Cache-Control", cdn)
    )
    assert freshness_lifetime(headers, DEFAULT, NOW) == lifetime
    assert bool(storability("GET", 200, h(), headers, DEFAULT)) is stored


SURROGATE_VALUES = [
    # id, Surrogate-Control lines, its max-age (None: Cache-Control's max-age=5 stands)
    ("plain", ["max-age=60"], 60),
    ("case-and-spaces", [" MAX-AGE = 60 "], 60),
    ("first-occurrence", ["max-age=10, max-age=20"], 10),
    ("lines-combined", ["content=\"ESI/1.0\"", "max-age=20"], 20),
    ("freshness-extension", ["max-age=60+30"], 60),
    ("quoted", ['max-age="60"'], 60),
    ("targeted-elsewhere", ["max-age=60;edge1"], None),
    ("targeted-flag", ["no-store;edge1, max-age=30"], 30),
    ("targeted-then-ours", ["max-age=60;edge1, max-age=20"], 20),
    ("invalid-is-stale", ["max-age=soon"], 0),
    ("esi-only", ['content="ESI/1.0"'], None),
    ("no-store-remote-not-ours", ["no-store-remote"], None),
    ("empty", [""], None),
    ("unknown-only", ["x-foo=1"], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "max_age"),
    [case[1:] for case in SURROGATE_VALUES],
    ids=[case[0] for case in SURROGATE_VALUES],
)
def test_surrogate_control_values(lines: list[str], max_age: int | None) -> None:
    headers = h(("Cache-Control", "max-age=5"), *(("Surrogate-Control", v) for v in lines))
    effective = effective_cache_control(headers)
    assert effective.max_age == (5 if max_age is None else max_age)
    assert not effective.no_store


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_surrogate_control_never_raises_and_never_unstores_by_itself(lines: list[str]) -> None:
    headers = h(("Cache-Control", "max-age=5"), *(("Surrogate-Control", v) for v in lines))
    effective = effective_cache_control(headers)
    # Only its own no-store (untargeted) takes storage away; nothing makes private public.
    assert not effective.private and not effective.public
    if "no-store" not in ",".join(lines).lower():
        assert not effective.no_store


def test_entries_with_the_same_fields_share_one_result() -> None:
    # One object per entry would be memory max_memory does not count.
    def effective() -> object:
        return effective_cache_control(
            h(("Cache-Control", "no-cache"), ("Surrogate-Control", "max-age=60"))
        )

    assert effective() is effective()
