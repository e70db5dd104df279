"""May a stored response be reused now, fresh or stale (RFC 9111 §4.2.4, RFC 5861): pure."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.cache.policy.directives import EMPTY_CACHE_CONTROL, request_cache_control
from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.serving import (
    Freshness,
    lookup_verdict,
    soft_purge_grace,
    stale_if_error_allowed,
)
from tests.cache.policy.samples import DEFAULT, NOW, cc, h, http_date

F = Freshness
NO_REQ = EMPTY_CACHE_CONTROL
SWR_RULES = CacheRules(stale_while_revalidate=30, stale_if_error=300)
VERDICTS = [
    # id, age, lifetime, request Cache-Control, response Cache-Control, rules, expected
    ("fresh", 10, 60, "", "max-age=60", DEFAULT, F.FRESH),
    ("exactly-expired", 60, 60, "", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("stale-no-windows", 70, 60, "", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("resp-no-cache", 0, 0, "", "no-cache", SWR_RULES, F.MUST_REVALIDATE),
    ("req-no-cache-fresh", 10, 60, "no-cache", "max-age=60", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-no-cache-stale", 100, 60, "no-cache", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("req-max-age-ok", 10, 60, "max-age=20", "max-age=60", DEFAULT, F.FRESH),
    ("req-max-age-too-old", 30, 60, "max-age=20", "max-age=60", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-max-age-0", 0.5, 60, "max-age=0", "", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-min-fresh-ok", 10, 60, "min-fresh=30", "", DEFAULT, F.FRESH),
    ("req-min-fresh-short", 40, 60, "min-fresh=30", "", DEFAULT, F.STALE_IF_ERROR_ONLY),
    ("req-min-fresh-no-swr", 70, 60, "min-fresh=1", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("max-stale-within", 70, 60, "max-stale=20", "max-age=60", DEFAULT, F.FRESH),
    ("max-stale-any", 10**6, 60, "max-stale", "max-age=60", DEFAULT, F.FRESH),
    ("max-stale-beyond", 90, 60, "max-stale=20", "max-age=60", DEFAULT, F.MUST_REVALIDATE),
    ("max-stale-beyond-route-sie", 90, 60, "max-stale=20", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("max-stale-vs-must-revalidate", 70, 60, "max-stale=20", "must-revalidate", DEFAULT,
     F.MUST_REVALIDATE),
    ("max-stale-vs-proxy-revalidate", 70, 60, "max-stale=20", "proxy-revalidate", DEFAULT,
     F.MUST_REVALIDATE),
    ("max-stale-vs-s-maxage", 70, 60, "max-stale=20", "s-maxage=60", DEFAULT,
     F.MUST_REVALIDATE),
    ("s-maxage-keeps-route-swr", 70, 60, "", "s-maxage=60", SWR_RULES,
     F.STALE_WHILE_REVALIDATE),
    ("route-swr", 80, 60, "", "max-age=60", SWR_RULES, F.STALE_WHILE_REVALIDATE),
    ("route-swr-expired-then-sie", 95, 60, "", "max-age=60", SWR_RULES, F.STALE_IF_ERROR_ONLY),
    ("origin-swr-larger", 150, 60, "", "max-age=60, stale-while-revalidate=100", SWR_RULES,
     F.STALE_WHILE_REVALIDATE),
    ("swr-vs-must-revalidate", 80, 60, "", "max-age=60, must-revalidate", SWR_RULES,
     F.MUST_REVALIDATE),
    ("swr-vs-proxy-revalidate", 80, 60, "", "proxy-revalidate", SWR_RULES, F.MUST_REVALIDATE),
    ("origin-sie", 500, 60, "", "max-age=60, stale-if-error=1000", DEFAULT,
     F.STALE_IF_ERROR_ONLY),
    ("beyond-all-windows", 10**5, 60, "", "max-age=60", SWR_RULES, F.MUST_REVALIDATE),
    ("req-no-cache-with-swr", 80, 60, "no-cache", "", SWR_RULES, F.STALE_IF_ERROR_ONLY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("age", "lifetime", "req", "response", "rules", "expected"),
    [case[1:] for case in VERDICTS],
    ids=[case[0] for case in VERDICTS],
)
def test_lookup_verdict(
    age: float,
    lifetime: float,
    req: str,
    response: str,
    rules: CacheRules,
    expected: Freshness,
) -> None:
    verdict = lookup_verdict(
        age=age,
        lifetime=lifetime,
        request_cc=cc(req),
        response_cc=cc(response),
        rules=rules,
    )
    assert verdict is expected


def test_lookup_verdict_with_pragma_request() -> None:
    request = request_cache_control(h(("Pragma", "no-cache")))
    verdict = lookup_verdict(
        age=1, lifetime=60, request_cc=request, response_cc=NO_REQ, rules=DEFAULT
    )
    assert verdict is F.STALE_IF_ERROR_ONLY


SIE = [
    # id, age, lifetime, response, rules, request, allowed
    ("fresh", 10, 60, "", DEFAULT, None, True),
    ("stale-no-window", 61, 60, "", DEFAULT, None, False),
    ("route-window", 200, 60, "", CacheRules(stale_if_error=300), None, True),
    ("route-window-exceeded", 400, 60, "", CacheRules(stale_if_error=300), None, False),
    ("origin-window-larger", 400, 60, "stale-if-error=600", CacheRules(stale_if_error=300), None,
     True),
    ("request-window", 100, 60, "", DEFAULT, "stale-if-error=60", True),
    ("request-max-stale", 100, 60, "", DEFAULT, "max-stale=60", True),
    ("request-window-vs-s-maxage", 100, 60, "s-maxage=60", DEFAULT, "stale-if-error=60", False),
    ("route-window-with-s-maxage", 100, 60, "s-maxage=60", CacheRules(stale_if_error=300), None,
     True),
    ("must-revalidate", 100, 60, "must-revalidate", CacheRules(stale_if_error=300), None, False),
    ("proxy-revalidate", 100, 60, "proxy-revalidate", CacheRules(stale_if_error=300), None, False),
    ("no-cache-even-fresh", 0, 0, "no-cache", CacheRules(stale_if_error=300), None, False),
    ("must-revalidate-fresh", 10, 60, "must-revalidate", DEFAULT, None, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("age", "lifetime", "response", "rules", "req", "allowed"),
    [case[1:] for case in SIE],
    ids=[case[0] for case in SIE],
)
def test_stale_if_error_allowed(
    age: float,
    lifetime: float,
    response: str,
    rules: CacheRules,
    req: str | None,
    allowed: bool,
) -> None:
    request_cc = None if req is None else cc(req)
    assert stale_if_error_allowed(age, lifetime, cc(response), rules, request_cc) is allowed


ETAG = h(("ETag", '"v1"'))
GRACE = [
    # id, age at the purge, lifetime, response Cache-Control, response headers, granted
    ("fresh-etag", 10, 60, "max-age=60", ETAG, True),
    ("fresh-last-modified", 10, 60, "", h(("Last-Modified", http_date(NOW - 3600))), True),
    ("no-validator", 10, 60, "max-age=60", h(), False),  # its revalidation is a refetch
    ("invalid-last-modified", 10, 60, "", h(("Last-Modified", "yesterday")), False),
    ("stale-already", 70, 60, "max-age=60", ETAG, False),  # a purge never loosens
    ("no-cache", 0, 0, "no-cache", ETAG, False),
    ("must-revalidate", 10, 60, "max-age=60, must-revalidate", ETAG, False),
    ("proxy-revalidate", 10, 60, "proxy-revalidate", ETAG, False),
    ("s-maxage", 10, 60, "s-maxage=60", ETAG, True),  # blocks only the client's max-stale
]  # fmt: skip


@pytest.mark.parametrize(
    ("age", "lifetime", "response", "headers", "granted"),
    [case[1:] for case in GRACE],
    ids=[case[0] for case in GRACE],
)
def test_a_soft_purge_grants_its_grace_only_where_stale_may_be_served_and_validated(
    age: float, lifetime: float, response: str, headers: CIMultiDict[str], granted: bool
) -> None:
    assert soft_purge_grace(age, lifetime, cc(response), headers) is granted


IN_GRACE = [
    # id, request Cache-Control, response Cache-Control, expected: the entry was made stale
    # 5 s ago by a soft purge (age 65, lifetime 60), its revalidation not yet over
    ("plain", "", "max-age=60", F.SOFT_PURGED),
    ("route-swr-too", "", "max-age=60, stale-while-revalidate=30", F.SOFT_PURGED),
    ("client-no-cache", "no-cache", "max-age=60", F.MUST_REVALIDATE),
    ("client-max-age", "max-age=1", "max-age=60", F.MUST_REVALIDATE),
    ("client-min-fresh", "min-fresh=1", "max-age=60", F.MUST_REVALIDATE),
    ("client-max-stale", "max-stale=10", "max-age=60", F.FRESH),  # the client's own choice
    ("marked-no-cache", "", "no-cache", F.MUST_REVALIDATE),  # every entry marked since
]  # fmt: skip


@pytest.mark.parametrize(
    ("req", "response", "expected"),
    [case[1:] for case in IN_GRACE],
    ids=[case[0] for case in IN_GRACE],
)
def test_the_grace_serves_stale_where_a_stale_while_revalidate_window_would(
    req: str, response: str, expected: Freshness
) -> None:
    verdict = lookup_verdict(
        age=65, lifetime=60, request_cc=cc(req), response_cc=cc(response), rules=DEFAULT, grace=True
    )
    assert verdict is expected


def test_once_the_grace_is_over_the_entry_is_merely_stale() -> None:
    after = lookup_verdict(
        age=65, lifetime=60, request_cc=NO_REQ, response_cc=cc("max-age=60"), rules=SWR_RULES
    )
    assert after is F.STALE_WHILE_REVALIDATE  # within the route's window, as for any entry
    after = lookup_verdict(
        age=95, lifetime=60, request_cc=NO_REQ, response_cc=cc("max-age=60"), rules=SWR_RULES
    )
    assert after is F.STALE_IF_ERROR_ONLY
