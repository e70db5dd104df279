"""Serving a stored response (RFC 9111 §4.2.4, §4.3.3, §5.2.1; RFC 5861): fresh, stale
while it revalidates, stale only if revalidation fails, or not before it revalidates; and
what a soft purge leaves of an entry.
"""

from __future__ import annotations

import enum

from proxy.cache.policy.directives import CacheControl
from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.validation import has_validator
from proxy.http.headers import Headers


class Freshness(enum.Enum):
    """What a lookup may do with a stored entry.

    FRESH: serve without contacting the origin.
    STALE_WHILE_REVALIDATE: serve now, revalidate in the background.
    STALE_IF_ERROR_ONLY: revalidate first; on origin error/5xx the entry may
        still be served (it may even be fresh, if the client demanded
        validation).
    MUST_REVALIDATE: revalidate; never serve the entry without success.
    SOFT_PURGED: serve now, stale, while the one revalidation a soft purge
        calls for runs in the background (`soft_purge_grace`).
    """

    FRESH = "fresh"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    STALE_IF_ERROR_ONLY = "stale-if-error-only"
    MUST_REVALIDATE = "must-revalidate"
    SOFT_PURGED = "soft-purged"


FRESH = Freshness.FRESH  # a module name for the hit path (see scope.py's SHARED)


def _forbids_stale(response_cc: CacheControl) -> bool:
    # §4.2.4 / §5.2.2.2 / §5.2.2.8: these forbid serving stale at all.
    return response_cc.no_cache or response_cc.must_revalidate or response_cc.proxy_revalidate


def stale_while_unreachable_allowed(response_cc: CacheControl) -> bool:
    """§4.2.4: may a cache cut off from the origin (its circuit open) serve this entry,
    however stale? Yes, unless no-cache, must-revalidate or proxy-revalidate forbid stale
    service at all (the origin's stale-if-error window does not matter then)."""
    return not _forbids_stale(response_cc)


def stale_if_error_allowed(
    age: float,
    lifetime: float,
    response_cc: CacheControl,
    rules: CacheRules,
    request_cc: CacheControl | None = None,
) -> bool:
    """May the entry be served when revalidation failed (§4.3.3, RFC 5861 §4)?

    Fresh entries always may, unless no-cache. Stale ones may within
    max(route, response stale-if-error, client's stale-if-error/max-stale),
    unless must-revalidate / proxy-revalidate. With s-maxage (which implies
    proxy-revalidate, §5.2.2.10) client permissions are ignored, but route
    and origin windows still apply, as at common CDNs.
    """
    if response_cc.no_cache:  # §5.2.2.4: never without successful validation
        return False
    staleness = age - lifetime
    if staleness < 0:
        return True
    if response_cc.must_revalidate or response_cc.proxy_revalidate:
        return False
    window = max(rules.stale_if_error, float(response_cc.stale_if_error or 0))
    if request_cc is not None and response_cc.s_maxage is None:
        # §4.2.4: the client may explicitly permit staleness, too.
        window = max(
            window,
            float(request_cc.stale_if_error or 0),
            float(request_cc.max_stale or 0),
        )
    return staleness < window


def soft_purge_grace(
    age: float, lifetime: float, response_cc: CacheControl, response_headers: Headers
) -> bool:
    """A soft purge ends an entry's freshness at once (its lifetime becomes its age then:
    §4.2, stale is older than the lifetime). Is it also granted the grace, to be served
    stale while its first revalidation runs (`lookup_verdict(grace=True)`)?

    §4.2.4 lets a cache serve stale when configuration permits it, as a purge by the
    operator does; but only an entry that was fresh (a purge never loosens what was
    stale already), that its origin lets be served stale at all (no no-cache,
    must-revalidate, proxy-revalidate), and that has a validator, so that the revalidation
    is a conditional request a 304 answers. Without a validator it would be a refetch of
    the body the operator has just said is out of date: such an entry is merely stale.
    """
    return age < lifetime and not _forbids_stale(response_cc) and has_validator(response_headers)


def lookup_verdict(
    *,
    age: float,
    lifetime: float,
    request_cc: CacheControl,
    response_cc: CacheControl,
    rules: CacheRules,
    grace: bool = False,
) -> Freshness:
    """Decide how a stored entry may be reused for a request (§4.2, §4.2.4, §5.2.1).

    ``lifetime`` comes from freshness_lifetime (response no-cache → 0).
    Stale windows are max(route, origin directive). must-revalidate,
    proxy-revalidate and no-cache forbid stale service; s-maxage only blocks
    the client's max-stale (route/origin windows are explicit permissions).
    ``only-if-cached`` is left to the caller (504 unless it can serve).
    ``grace``: a soft purge's (`soft_purge_grace`), until its revalidation ends: SOFT_PURGED
    wherever a stale-while-revalidate window would be honoured.
    """

    def revalidate() -> Freshness:
        if stale_if_error_allowed(age, lifetime, response_cc, rules, request_cc):
            return Freshness.STALE_IF_ERROR_ONLY
        return Freshness.MUST_REVALIDATE

    # §5.2.2.4: no-cache responses are never used without validation.
    if response_cc.no_cache:
        return Freshness.MUST_REVALIDATE
    # §5.2.1.4 / §5.2.1.1: the client demands validation or a younger entry.
    if request_cc.no_cache or (request_cc.max_age is not None and age > request_cc.max_age):
        return revalidate()
    if age < lifetime:
        # §5.2.1.3: must stay fresh for at least min-fresh more seconds.
        if request_cc.min_fresh is not None and lifetime - age < request_cc.min_fresh:
            return revalidate()
        return Freshness.FRESH

    staleness = age - lifetime
    # §5.2.1.2 + §4.2.4: the client accepts this much staleness, unless the
    # origin forbade stale service to shared caches (s-maxage implies
    # proxy-revalidate, §5.2.2.10).
    if (
        request_cc.max_stale is not None
        and staleness <= request_cc.max_stale
        and not _forbids_stale(response_cc)
        and response_cc.s_maxage is None
    ):
        return Freshness.FRESH
    if _forbids_stale(response_cc):
        return Freshness.MUST_REVALIDATE
    # min-fresh asks for fresh content; serving stale would contradict it.
    if request_cc.min_fresh is None:
        if grace:
            return Freshness.SOFT_PURGED
        window = max(
            rules.stale_while_revalidate,
            float(response_cc.stale_while_revalidate or 0),
        )
        if staleness < window:
            return Freshness.STALE_WHILE_REVALIDATE
    return revalidate()
