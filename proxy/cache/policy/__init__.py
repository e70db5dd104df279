"""RFC 9111 shared-cache decisions, free of I/O and clocks, one module per part of the RFC:

- directives.py    Cache-Control, CDN-Cache-Control, Surrogate-Control and Pragma parsed
                   (§5.2, §5.4, RFC 9213, W3C Edge Architecture)
- rules.py         a route's cache rules as these decisions read them
- scope.py         whose cache a request may use (§3.5, credentials)
- vary.py          which stored variant a request selects (§4.1)
- validation.py    validators, conditional requests, 304s (§4.3)
- freshness.py     freshness lifetime and age (§4.2.1-§4.2.3), shared-store retention
- storable.py      may a response be stored (§3, §5.2.2.3)
- serving.py       may a stored response be reused now, fresh or stale (§4.2.4, RFC 5861),
                   and after a soft purge
- invalidation.py  what an unsafe request makes stale (§4.4)

Each module imports only those listed above it. Every function is pure: callers pass headers,
status codes and times (``now``, ``request_time`` … as float epoch seconds) and act on the
result. The proxy is a *shared* cache, so ``s-maxage``/``proxy-revalidate`` apply and
``private`` responses are only kept when entries are keyed per user.

The names below are the package's one import surface (``policy.storability``, ...): the rest
of the proxy need not know which module holds a decision. Re-exporting costs a hit nothing:
``policy.lookup_verdict`` is one attribute lookup on a module, as it was when this package
was one module, and the functions are the same objects.
"""

from __future__ import annotations

from proxy.cache.policy.directives import (
    DELTA_MAX,
    EMPTY_CACHE_CONTROL,
    MAX_STALE_ANY,
    SURROGATE_FIELDS,
    CacheControl,
    Governed,
    effective_cache_control,
    governing,
    parse_cache_control,
    request_cache_control,
)
from proxy.cache.policy.freshness import (
    HEURISTIC_STATUSES,
    current_age,
    date_value,
    freshness_lifetime,
    initial_age,
    shared_store_ttl,
)
from proxy.cache.policy.invalidation import SAFE_METHODS, invalidation_targets, is_unsafe_method
from proxy.cache.policy.rules import CREDENTIAL_HEADERS, CacheRules
from proxy.cache.policy.scope import (
    Scope,
    has_credentials,
    may_reuse,
    request_scope,
    shareable_with_credentials,
)
from proxy.cache.policy.serving import (
    Freshness,
    lookup_verdict,
    soft_purge_grace,
    stale_if_error_allowed,
    stale_while_unreachable_allowed,
)
from proxy.cache.policy.storable import (
    UNDERSTOOD_STATUSES,
    StoreDecision,
    entry_fields,
    keeps_set_cookie,
    storability,
)
from proxy.cache.policy.validation import (
    conditional_headers,
    has_validator,
    merge_304_headers,
    not_modified_for_client,
)
from proxy.cache.policy.vary import VARY_ABSENT, vary_fields, vary_key
from proxy.http.headers import Headers

__all__ = [
    "CREDENTIAL_HEADERS",
    "DELTA_MAX",
    "EMPTY_CACHE_CONTROL",
    "HEURISTIC_STATUSES",
    "MAX_STALE_ANY",
    "SAFE_METHODS",
    "SURROGATE_FIELDS",
    "UNDERSTOOD_STATUSES",
    "VARY_ABSENT",
    "CacheControl",
    "CacheRules",
    "Freshness",
    "Governed",
    "Headers",
    "Scope",
    "StoreDecision",
    "conditional_headers",
    "current_age",
    "date_value",
    "effective_cache_control",
    "entry_fields",
    "freshness_lifetime",
    "governing",
    "has_credentials",
    "has_validator",
    "initial_age",
    "invalidation_targets",
    "is_unsafe_method",
    "keeps_set_cookie",
    "lookup_verdict",
    "may_reuse",
    "merge_304_headers",
    "not_modified_for_client",
    "parse_cache_control",
    "request_cache_control",
    "request_scope",
    "shareable_with_credentials",
    "shared_store_ttl",
    "soft_purge_grace",
    "stale_if_error_allowed",
    "stale_while_unreachable_allowed",
    "storability",
    "vary_fields",
    "vary_key",
]
