"""Storing responses in caches (RFC 9111 §3, §5.2.2.3 must-understand): may this response
be stored, and if not, which rule said no.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import multidict

from proxy.cache.policy.directives import Governed, governing, request_cache_control
from proxy.cache.policy.freshness import HEURISTIC_STATUSES
from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.scope import Scope, has_credentials, shareable_with_credentials
from proxy.cache.policy.validation import has_validator
from proxy.cache.policy.vary import vary_fields
from proxy.http.headers import Headers

# 304 (no body, only updates entries, §4.3.4) is never stored; 206 only as parts (§3.3).
_NEVER_STORED: Final = frozenset({206, 304})
_AS_PARTS: Final = frozenset({304})

# §5.2.2.3 must-understand: the statuses whose own caching rules we implement (those
# RFC 9110 makes heuristically cacheable); with it, any other status is not stored.
UNDERSTOOD_STATUSES: Final = HEURISTIC_STATUSES


@dataclass(frozen=True, slots=True)
class StoreDecision:
    store: bool
    reason: str  # "ok" or the first rule that refused, e.g. "no-store"

    def __bool__(self) -> bool:
        return self.store


_OK: Final = StoreDecision(True, "ok")
# Asked of every response stored: a str name is case-folded on every lookup.
_SET_COOKIE, _EXPIRES = multidict.istr("Set-Cookie"), multidict.istr("Expires")


def _no(reason: str) -> StoreDecision:
    return StoreDecision(False, reason)


def storability(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    rules: CacheRules,
    scope: Scope = Scope.SHARED,
    parts: bool = False,
    governed: Governed | None = None,
) -> StoreDecision:
    """May this response be stored (§3)? ``reason`` names the deciding rule. `parts`: the
    caller stores a 206 as parts of the representation (§3.3), which a cache that does not
    support Range must not store. `governed`: `governing(response_headers)`, when the
    caller has it.

    Reasons: ok, method, credentials, status, no-store, private, authorization,
    set-cookie, vary-star, no-freshness.
    """
    # Only GET is stored. A HEAD response has no body, so it could never
    # serve a GET; HEAD is served from GET entries instead (§4.3.5 covers
    # HEAD-driven header updates, which the caller may do).
    if method != "GET":
        return _no("method")
    if scope is Scope.PASS:
        return _no("credentials")
    if status < 200 or status > 599 or status in (_AS_PARTS if parts else _NEVER_STORED):
        return _no("status")
    # §3: no-store in the request or the response forbids storage.
    if request_cache_control(request_headers).no_store:
        return _no("no-store")
    cc, targeted = governing(response_headers) if governed is None else governed
    # §5.2.2.3: must-understand limits storing to caches that implement the status
    # code's caching rules, and for those it overrides no-store.
    if cc.must_understand:
        if status not in UNDERSTOOD_STATUSES:
            return _no("must-understand")
    elif cc.no_store:
        return _no("no-store")
    # §3 / §5.2.2.7: shared caches must not store private responses — unless
    # the request's key holds its user's credential: a private cache per user.
    user_scoped = scope is Scope.USER
    if cc.private and not user_scoped:
        return _no("private")
    # §3.5: an authenticated request's response is only shareable when the
    # origin says so explicitly. Cookies are credentials too: responses to them
    # are often personalised without saying `private`.
    if (
        not user_scoped
        and has_credentials(request_headers, rules)
        and not shareable_with_credentials(cc)
    ):
        return _no("authorization")
    # Not RFC-mandated, but replaying a Set-Cookie to other users leaks
    # sessions; opt-in only.
    if _SET_COOKIE in response_headers and not rules.store_set_cookie:
        return _no("set-cookie")
    # §4.1: Vary: * never matches, so storing is pointless.
    if vary_fields(response_headers) is None:
        return _no("vary-star")

    explicit = (
        cc.max_age is not None
        or cc.s_maxage is not None
        or (not targeted and _EXPIRES in response_headers)
    )
    # §3: other statuses need explicit freshness or `public`; route ttl
    # (even force_ttl) never makes e.g. a 500 cacheable.
    if status not in HEURISTIC_STATUSES and not (explicit or cc.public):
        return _no("status")
    # Worth storing only if it could ever be served: fresh for a while,
    # revalidatable, or usable as a stale fallback.
    if (
        explicit
        or rules.ttl is not None
        or has_validator(response_headers)
        or rules.stale_if_error > 0
        or rules.stale_while_revalidate > 0
        or cc.stale_if_error
        or cc.stale_while_revalidate
    ):
        return _OK
    return _no("no-freshness")


def keeps_set_cookie(scope: Scope) -> bool:
    """May an entry keep the Set-Cookie of the response that filled it?

    Only a user's own entry (a per-user route, a request with its credential): any other
    entry is served to everyone, and a cookie belongs to the one client it was set for (a
    session, a tracking id). `store_set_cookie` only lets such responses be stored.
    """
    return scope is Scope.USER


def entry_fields(
    response_headers: multidict.CIMultiDict[str], scope: Scope
) -> multidict.CIMultiDict[str]:
    """The fields an entry filled in `scope` keeps: all but Set-Cookie when the entry is
    shared (keeps_set_cookie). The same object when nothing is withheld."""
    if _SET_COOKIE not in response_headers or keeps_set_cookie(scope):
        return response_headers
    kept = multidict.CIMultiDict(response_headers)
    kept.popall("Set-Cookie")
    return kept
