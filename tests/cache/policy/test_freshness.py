"""Freshness lifetime and age (RFC 9111 §4.2.1-§4.2.3): pure."""

from __future__ import annotations

import time

import pytest

from proxy.cache.policy.directives import DELTA_MAX
from proxy.cache.policy.freshness import current_age, date_value, freshness_lifetime, initial_age
from proxy.cache.policy.rules import CacheRules
from tests.cache.policy.samples import DEFAULT, NEAR_MISS_DATE, NOW, TTL, h, http_date


def test_s_maxage_beats_max_age_beats_expires() -> None:
    expires = ("Expires", http_date(NOW + 500))
    date = ("Date", http_date(NOW))
    both = h(("Cache-Control", "max-age=60, s-maxage=120"), expires, date)
    assert freshness_lifetime(both, DEFAULT, NOW) == 120
    max_age = h(("Cache-Control", "max-age=60"), expires, date)
    assert freshness_lifetime(max_age, DEFAULT, NOW) == 60
    assert freshness_lifetime(h(expires, date), DEFAULT, NOW) == 500


def test_expires_is_relative_to_the_date_header_not_local_clock() -> None:
    # Origin clock 1000 s behind ours: Expires - Date still gives 300.
    headers = h(("Date", http_date(NOW - 1000)), ("Expires", http_date(NOW - 700)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 300


def test_expires_without_date_uses_fallback() -> None:
    headers = h(("Expires", http_date(NOW + 90)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 90


@pytest.mark.parametrize("expires", ["0", "-1", "yesterday", ""])
def test_invalid_expires_is_already_expired(expires: str) -> None:
    assert freshness_lifetime(h(("Expires", expires)), TTL, NOW) == 0


def test_expires_in_the_past_is_zero_not_negative() -> None:
    headers = h(("Date", http_date(NOW)), ("Expires", http_date(NOW - 50)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_several_expires_lines_the_first_counts() -> None:
    # §4.2.1: the first occurrence, as for Cache-Control directives.
    headers = h(("Expires", http_date(NOW + 60)), ("Expires", http_date(NOW + 120)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    invalid_first = h(("Expires", "0"), ("Expires", http_date(NOW + 120)))
    assert freshness_lifetime(invalid_first, TTL, NOW) == 0


def test_route_ttl_used_when_origin_gives_nothing() -> None:
    assert freshness_lifetime(h(), CacheRules(ttl=45), NOW) == 45
    # ...but origin freshness wins without force_ttl.
    assert freshness_lifetime(h(("Cache-Control", "max-age=5")), CacheRules(ttl=45), NOW) == 5


def test_force_ttl_overrides_origin_freshness() -> None:
    rules = CacheRules(ttl=45, force_ttl=True)
    headers = h(("Cache-Control", "s-maxage=5, max-age=1"), ("Expires", "0"))
    assert freshness_lifetime(headers, rules, NOW) == 45


def test_force_ttl_without_ttl_is_inert() -> None:
    rules = CacheRules(force_ttl=True)
    assert freshness_lifetime(h(("Cache-Control", "max-age=7")), rules, NOW) == 7


def test_must_understand_no_store_keeps_its_freshness() -> None:
    headers = h(("Cache-Control", "must-understand, no-store, max-age=60"))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 60
    assert freshness_lifetime(h(("Cache-Control", "no-store, max-age=60")), DEFAULT, NOW) == 0


def test_no_cache_is_always_zero_even_with_force_ttl() -> None:
    headers = h(("Cache-Control", "no-cache, max-age=600"))
    assert freshness_lifetime(headers, CacheRules(ttl=60, force_ttl=True), NOW) == 0
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_heuristic_is_a_fraction_of_last_modified_age() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == pytest.approx(100)
    rules = CacheRules(heuristic_fraction=0.5)
    assert freshness_lifetime(headers, rules, NOW) == pytest.approx(500)


def test_heuristic_is_capped() -> None:
    headers = h(("Last-Modified", http_date(NOW - 10 * 86400 * 100)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 86400
    assert freshness_lifetime(headers, CacheRules(heuristic_max=60), NOW) == 60


def test_heuristic_ignores_invalid_last_modified_and_date() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", NEAR_MISS_DATE))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0
    # An invalid Date is ignored too: the time the response arrived stands in (§4.2.3).
    headers = h(("Date", "Tue, 14 Nov 2023 21:13:20"), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == pytest.approx(100)


def test_expires_and_date_near_misses() -> None:
    # Expires that email.utils would read as a future date is invalid, so already expired.
    assert freshness_lifetime(h(("Expires", NEAR_MISS_DATE.replace("UTC", "+0000"))), TTL,
                              NOW - 1000) == 0  # fmt: skip
    asctime = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(NOW + 90))
    assert freshness_lifetime(h(("Expires", asctime)), DEFAULT, NOW) == 90


def test_heuristic_ignores_future_last_modified() -> None:
    headers = h(("Date", http_date(NOW)), ("Last-Modified", http_date(NOW + 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW) == 0


def test_heuristic_only_for_heuristic_statuses_or_public() -> None:
    headers = h(("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(headers, DEFAULT, NOW, status=404) == pytest.approx(100)
    assert freshness_lifetime(headers, DEFAULT, NOW, status=500) == 0
    public = h(("Cache-Control", "public"), ("Last-Modified", http_date(NOW - 1000)))
    assert freshness_lifetime(public, DEFAULT, NOW, status=500) == pytest.approx(100)


def test_no_information_means_zero() -> None:
    assert freshness_lifetime(h(), DEFAULT, NOW) == 0


def test_cdn_cache_control_governs_freshness_and_hides_expires() -> None:
    headers = h(
        ("Cache-Control", "s-maxage=10"),
        ("CDN-Cache-Control", "max-age=300"),
        ("Expires", http_date(NOW + 5)),
    )
    assert freshness_lifetime(headers, DEFAULT, NOW) == 300
    # Only Expires plus a CDN field without freshness: Expires is ignored.
    hidden = h(("CDN-Cache-Control", "public"), ("Expires", http_date(NOW + 5)))
    assert freshness_lifetime(hidden, CacheRules(ttl=42), NOW) == 42


def test_initial_age_adds_response_delay_to_upstream_age() -> None:
    headers = h(("Age", "30"), ("Date", http_date(NOW)))
    assert initial_age(headers, request_time=NOW, response_time=NOW + 2) == 32


def test_initial_age_uses_apparent_age_when_larger() -> None:
    headers = h(("Age", "5"), ("Date", http_date(NOW - 100)))
    assert initial_age(headers, request_time=NOW - 1, response_time=NOW) == 100


AGES = [
    # id, Age field lines, the age value used (§5.1)
    ("plain", ["30"], 30),
    ("zero-padded", ["0030"], 30),
    ("huge", ["9" * 40], DELTA_MAX),
    ("list-first-member", ["10, 40"], 10),
    ("lines-first-line", ["20", "40"], 20),
    ("list-and-lines", ["10, 40", "20"], 10),
    ("empty-members-skipped", [" , 15", "40"], 15),
    ("empty-line-skipped", ["", "25"], 25),
    ("invalid-first-ignores-field", ["abc, 40"], 0),
    ("invalid-first-line", ["x", "40"], 0),
    ("negative", ["-5"], 0),
    ("decimal", ["1.5"], 0),
    ("trailing-garbage", ["10s"], 0),
    ("quoted", ['"10"'], 0),
    ("non-ascii-digits", ["\u0663"], 0),
    ("empty", [""], 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"), [case[1:] for case in AGES], ids=[case[0] for case in AGES]
)
def test_age_value(lines: list[str], expected: int) -> None:
    headers = h(("Date", http_date(NOW)), *(("Age", line) for line in lines))
    assert initial_age(headers, request_time=NOW, response_time=NOW) == expected


def test_missing_date_means_no_apparent_age() -> None:
    assert initial_age(h(), request_time=NOW - 3, response_time=NOW) == 3


def test_date_value_helper() -> None:
    assert date_value(h(("Date", http_date(NOW - 9))), NOW) == NOW - 9
    assert date_value(h(("Date", "garbage")), NOW) == NOW


def test_current_age_adds_resident_time() -> None:
    assert current_age(10.0, response_time=NOW, now=NOW + 50) == 60
    # A clock stepping backwards never makes the entry younger.
    assert current_age(10.0, response_time=NOW, now=NOW - 50) == 10
