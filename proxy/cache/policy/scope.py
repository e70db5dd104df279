"""Whose cache a request may use (RFC 9111 §3.5, storing responses to authenticated
requests): everyone's, one user's, or none, and which stored responses it may reuse.
"""

from __future__ import annotations

import enum

from proxy.cache.policy.directives import CacheControl
from proxy.cache.policy.rules import CacheRules
from proxy.http.headers import Headers


class Scope(enum.Enum):
    """Whose cache a request may be served from and stored into."""

    SHARED = "shared"  # everyone's: the shared-cache rules of §3 and §3.5 apply
    USER = "user"  # keyed by the route's credential: `private` and credentials are fine
    PASS = "pass"  # carries a credential the route does not key by: no cache at all
    # A credentialed request on a shared route (`on_credentials: explicit`): served only
    # from entries whose response said they may serve credentialed requests.
    CREDENTIALED = "credentialed"


# The members as module names, for the hit path: Python 3.11's EnumType has a __getattr__, so
# every `Scope.SHARED` runs its lookup hook (~900 instructions; docs/benchmarks.md).
SHARED, USER, PASS, CREDENTIALED = Scope.SHARED, Scope.USER, Scope.PASS, Scope.CREDENTIALED


def has_credentials(request_headers: Headers, rules: CacheRules) -> bool:
    for name in rules.credentials:  # noqa: SIM110 (any() and a generator: twice the cost)
        if name in request_headers:
            return True
    return False


def request_scope(request_headers: Headers, rules: CacheRules) -> Scope:
    """A request is in a user's scope only when it carries the route's credential.

    On a per-user route, a request that identifies its user some other way (a session
    cookie on an Authorization-keyed route, say) would get that user's data under a
    key it shares with others: it bypasses the cache. Without the credential and
    without any other, it is an anonymous request, judged like any request to a
    shared cache. On routes that are not per-user, `on_credentials` decides what a
    credentialed request may do: `lookup` any entry (RFC 9111 allows it), `explicit`
    only entries that explicitly allow it, `pass` none (Varnish's builtin behaviour).
    """
    if rules.user_header is None:
        if rules.on_credentials == "lookup" or not has_credentials(request_headers, rules):
            return SHARED
        return PASS if rules.on_credentials == "pass" else CREDENTIALED
    if any(v.strip() for v in request_headers.getall(rules.user_header, ())):
        return USER
    if has_credentials(request_headers, rules):
        return PASS
    return SHARED


def shareable_with_credentials(cc: CacheControl) -> bool:
    """§3.5: a response the origin explicitly lets a shared cache reuse for requests
    with credentials."""
    return cc.public or cc.s_maxage is not None or cc.must_revalidate


def may_reuse(scope: Scope, cc: CacheControl) -> bool:
    """May a stored response with this Cache-Control be reused for a request in `scope`?"""
    return scope is not CREDENTIALED or shareable_with_credentials(cc)
