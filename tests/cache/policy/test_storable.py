"""May a response be stored (RFC 9111 §3): every rule, with the one that refused. Pure."""

from __future__ import annotations

import pytest

from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.scope import Scope
from proxy.cache.policy.storable import StoreDecision, entry_fields, storability
from tests.cache.policy.samples import AUTH, DEFAULT, NEAR_MISS_DATE, NOW, TTL, h, http_date

# A request carrying the route's credential on a per-user route.
PER_USER = (CacheRules(user_header="Authorization"), Scope.USER)
# A request carrying a credential the per-user route does not key by.
FOREIGN = (CacheRules(ttl=30, user_header="X-Api-Key"), Scope.PASS)
COOKIES = CacheRules(store_set_cookie=True)

STORABILITY = [
    # id, method, status, request headers, response headers, rules, store, reason
    ("plain-max-age", "GET", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, True, "ok"),
    ("head", "HEAD", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("post", "POST", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("lower-get", "get", 200, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "method"),
    ("1xx", "GET", 103, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("206", "GET", 206, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("304", "GET", 304, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("600", "GET", 600, [], [("Cache-Control", "max-age=60")], DEFAULT, False, "status"),
    ("req-no-store", "GET", 200, [("Cache-Control", "no-store")], [("ETag", '"a"')], TTL, False,
     "no-store"),
    ("resp-no-store", "GET", 200, [], [("Cache-Control", "max-age=9, no-store")], TTL, False,
     "no-store"),
    ("no-store-beats-force", "GET", 200, [], [("Cache-Control", "no-store")],
     CacheRules(ttl=60, force_ttl=True), False, "no-store"),
    ("private", "GET", 200, [], [("Cache-Control", "private, max-age=60")], DEFAULT, False,
     "private"),
    ("private-qualified", "GET", 200, [], [("Cache-Control", 'private="X", max-age=60')],
     DEFAULT, False, "private"),
    ("private-beats-force", "GET", 200, [], [("Cache-Control", "private")],
     CacheRules(ttl=60, force_ttl=True), False, "private"),
    ("private-per-user", "GET", 200, [], [("Cache-Control", "private, max-age=60")], PER_USER,
     True, "ok"),
    ("auth-plain", "GET", 200, [AUTH], [("Cache-Control", "max-age=60")], DEFAULT, False,
     "authorization"),
    ("auth-public", "GET", 200, [AUTH], [("Cache-Control", "public, max-age=60")], DEFAULT, True,
     "ok"),
    ("auth-s-maxage", "GET", 200, [AUTH], [("Cache-Control", "s-maxage=60")], DEFAULT, True, "ok"),
    ("auth-must-revalidate", "GET", 200, [AUTH], [("Cache-Control", "must-revalidate")], TTL,
     True, "ok"),
    ("auth-per-user", "GET", 200, [AUTH], [("Cache-Control", "max-age=60")], PER_USER, True, "ok"),
    ("cookie-plain", "GET", 200, [("Cookie", "sid=1")], [("Cache-Control", "max-age=60")],
     DEFAULT, False, "authorization"),
    ("cookie-public", "GET", 200, [("Cookie", "sid=1")], [("Cache-Control", "public, max-age=60")],
     DEFAULT, True, "ok"),
    ("cookie-per-user", "GET", 200, [("Cookie", "sid=1")],
     [("Cache-Control", "private, max-age=9")], PER_USER, True, "ok"),
    ("foreign-credential", "GET", 200, [("Cookie", "sid=1")],
     [("Cache-Control", "public, max-age=60")], FOREIGN, False, "credentials"),
    ("foreign-before-status", "GET", 206, [AUTH], [], FOREIGN, False, "credentials"),
    ("set-cookie", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")],
     DEFAULT, False, "set-cookie"),
    ("set-cookie-per-user", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("Set-Cookie", "s=1")], PER_USER, False, "set-cookie"),
    ("set-cookie-allowed", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("Set-Cookie", "s=1")], COOKIES, True, "ok"),
    ("vary-star", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Vary", "Accept, *")],
     DEFAULT, False, "vary-star"),
    ("vary-fields", "GET", 200, [], [("Cache-Control", "max-age=60"), ("Vary", "Accept")],
     DEFAULT, True, "ok"),
    ("404-heuristic", "GET", 404, [], [("Last-Modified", http_date(NOW - 100))], DEFAULT, True,
     "ok"),
    ("500-plain", "GET", 500, [], [("ETag", '"a"')], TTL, False, "status"),
    ("500-force-ttl", "GET", 500, [], [], CacheRules(ttl=60, force_ttl=True), False, "status"),
    ("500-max-age", "GET", 500, [], [("Cache-Control", "max-age=5")], DEFAULT, True, "ok"),
    ("302-expires", "GET", 302, [], [("Expires", http_date(NOW + 60))], DEFAULT, True, "ok"),
    ("503-public-ttl", "GET", 503, [], [("Cache-Control", "public")], TTL, True, "ok"),
    ("503-public-nothing", "GET", 503, [], [("Cache-Control", "public")], DEFAULT, False,
     "no-freshness"),
    ("200-nothing", "GET", 200, [], [], DEFAULT, False, "no-freshness"),
    ("200-ttl", "GET", 200, [], [], TTL, True, "ok"),
    ("200-etag", "GET", 200, [], [("ETag", '"v1"')], DEFAULT, True, "ok"),
    ("200-last-modified", "GET", 200, [], [("Last-Modified", http_date(NOW))], DEFAULT, True,
     "ok"),
    # §5.3 / RFC 9110 §5.6.7: an invalid Last-Modified is no validator and no heuristic.
    ("200-invalid-last-modified", "GET", 200, [], [("Last-Modified", NEAR_MISS_DATE)], DEFAULT,
     False, "no-freshness"),
    ("200-empty-etag", "GET", 200, [], [("ETag", "")], DEFAULT, False, "no-freshness"),
    ("200-no-cache-etag", "GET", 200, [], [("Cache-Control", "no-cache"), ("ETag", '"v1"')],
     DEFAULT, True, "ok"),
    ("200-no-cache-only", "GET", 200, [], [("Cache-Control", "no-cache")], DEFAULT, False,
     "no-freshness"),
    ("200-route-sie", "GET", 200, [], [], CacheRules(stale_if_error=60), True, "ok"),
    ("200-origin-swr", "GET", 200, [], [("Cache-Control", "stale-while-revalidate=5")], DEFAULT,
     True, "ok"),
    ("cdn-overrides-private", "GET", 200, [], [("Cache-Control", "private"),
     ("CDN-Cache-Control", "max-age=60")], DEFAULT, True, "ok"),
    ("cdn-no-store", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("CDN-Cache-Control", "no-store")], DEFAULT, False, "no-store"),
    ("cdn-ignores-expires", "GET", 500, [], [("Expires", http_date(NOW + 60)),
     ("CDN-Cache-Control", "must-revalidate")], DEFAULT, False, "status"),
    ("cdn-unparsable-no-store", "GET", 200, [], [("Cache-Control", "max-age=60"),
     ("CDN-Cache-Control", "no-store,")], DEFAULT, True, "ok"),
    # §5.2.2.3: must-understand overrides no-store for statuses we implement, and keeps
    # every other status out of the cache.
    ("must-understand-200", "GET", 200, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, True, "ok"),
    ("must-understand-404", "GET", 404, [], [("Cache-Control", "must-understand, no-store")],
     TTL, True, "ok"),
    ("must-understand-308", "GET", 308, [], [("Cache-Control",
     "no-store, must-understand, max-age=60")], DEFAULT, True, "ok"),
    ("must-understand-302", "GET", 302, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, False, "must-understand"),
    ("must-understand-500", "GET", 500, [], [("Cache-Control", "must-understand, max-age=60")],
     DEFAULT, False, "must-understand"),
    ("must-understand-unknown", "GET", 299, [], [("Cache-Control",
     "must-understand, no-store, max-age=60")], DEFAULT, False, "must-understand"),
    ("must-understand-206", "GET", 206, [], [("Cache-Control", "must-understand, max-age=60")],
     DEFAULT, False, "status"),
    ("must-understand-private", "GET", 200, [], [("Cache-Control",
     "must-understand, no-store, private, max-age=60")], DEFAULT, False, "private"),
    ("must-understand-request-no-store", "GET", 200, [("Cache-Control", "no-store")],
     [("Cache-Control", "must-understand, no-store, max-age=60")], DEFAULT, False, "no-store"),
    ("cdn-must-understand", "GET", 200, [], [("Cache-Control", "no-store"),
     ("CDN-Cache-Control", "must-understand, no-store, max-age=60")], DEFAULT, True, "ok"),
    ("req-no-store-fresh-response", "GET", 200, [("Cache-Control", "no-store, max-age=0")],
     [("Cache-Control", "public, max-age=600")], DEFAULT, False, "no-store"),
    ("req-no-store-after-other", "GET", 200, [("Cache-Control", "max-age=5"),
     ("Cache-Control", "No-Store")], [("Cache-Control", "max-age=600")], DEFAULT, False,
     "no-store"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "status", "req", "resp", "rules", "store", "reason"),
    [case[1:] for case in STORABILITY],
    ids=[case[0] for case in STORABILITY],
)
def test_storability_matrix(
    method: str,
    status: int,
    req: list[tuple[str, str]],
    resp: list[tuple[str, str]],
    rules: CacheRules | tuple[CacheRules, Scope],
    store: bool,
    reason: str,
) -> None:
    rules, scope = rules if isinstance(rules, tuple) else (rules, Scope.SHARED)
    decision = storability(method, status, h(*req), h(*resp), rules, scope)
    assert decision == StoreDecision(store, reason)
    assert bool(decision) is store


@pytest.mark.parametrize(
    ("resp", "store", "reason"),
    [
        ([("Cache-Control", "max-age=60")], True, "ok"),
        ([("ETag", '"v1"')], True, "ok"),  # 206 is heuristically cacheable (RFC 9110 §15.1)
        ([("Cache-Control", "must-understand, no-store, max-age=60")], True, "ok"),
        ([("Cache-Control", "private, max-age=60")], False, "private"),
        ([("Cache-Control", "no-store")], False, "no-store"),
        ([], False, "no-freshness"),
    ],
)
def test_a_206_is_storable_only_by_a_cache_that_keeps_parts(
    resp: list[tuple[str, str]], store: bool, reason: str
) -> None:
    """§3.3: a cache that supports Range may store a 206 as it would a 200."""
    assert storability("GET", 206, h(), h(*resp), DEFAULT, parts=True) == StoreDecision(
        store, reason
    )
    assert storability("GET", 206, h(), h(*resp), DEFAULT).reason in ("status", reason)
    assert not storability("GET", 304, h(), h(*resp), DEFAULT, parts=True)


@pytest.mark.parametrize("scope", [Scope.SHARED, Scope.CREDENTIALED])
def test_a_shared_entry_keeps_every_field_but_set_cookie(scope: Scope) -> None:
    headers = h(("Set-Cookie", "a=1"), ("ETag", '"e"'), ("set-cookie", "b=2"), ("X-A", "1"))
    kept = entry_fields(headers, scope)
    assert list(kept.items()) == [("ETag", '"e"'), ("X-A", "1")]
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]  # the client's own are untouched


def test_a_users_own_entry_keeps_its_set_cookie() -> None:
    headers = h(("Set-Cookie", "a=1"), ("ETag", '"e"'))
    assert entry_fields(headers, Scope.USER) is headers


def test_headers_without_set_cookie_are_kept_as_they_are() -> None:
    headers = h(("ETag", '"e"'))
    assert entry_fields(headers, Scope.SHARED) is headers
