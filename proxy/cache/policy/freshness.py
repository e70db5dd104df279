"""Freshness (RFC 9111 §4.2.1-§4.2.3): how long a response stays fresh (explicitly, by the
route's ttl, or heuristically, §4.2.2), how old it is, and how long a shared store keeps it.
"""

from __future__ import annotations

from typing import Final

from multidict import istr

from proxy.cache.policy.directives import (
    Governed,
    delta_seconds,
    effective_cache_control,
    governing,
)
from proxy.cache.policy.rules import CacheRules
from proxy.cache.policy.validation import first_date, has_validator
from proxy.http.dates import parse_http_date
from proxy.http.headers import Headers

# §4.2.2 / RFC 9110 §15.1 heuristically cacheable statuses (206: stored only as parts,
# storable.storability).
HEURISTIC_STATUSES: Final = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# Read from every response stored: a str name is case-folded on every lookup.
_DATE, _AGE, _EXPIRES = istr("Date"), istr("Age"), istr("Expires")
_LAST_MODIFIED = istr("Last-Modified")


def date_value(headers: Headers, default: float) -> float:
    """§4.2.3 date_value: the Date header, or ``default`` (response_time)."""
    parsed = first_date(headers, _DATE)
    return default if parsed is None else parsed


def freshness_lifetime(
    response_headers: Headers,
    rules: CacheRules,
    date: float,
    *,
    status: int = 200,
    governed: Governed | None = None,
) -> float:
    """Seconds the response stays fresh (§4.2.1).

    ``date`` is used when the response has no valid Date header (pass the
    response_time). ``status`` gates heuristic freshness (§4.2.2). ``governed``:
    `governing(response_headers)`, when the caller has it.
    Precedence: no-cache → 0; force_ttl; s-maxage; max-age; Expires - Date;
    route ttl; heuristic; 0.
    """
    cc, targeted = governing(response_headers) if governed is None else governed
    # §5.2.2.4: no-cache means "revalidate every time", even with force_ttl.
    # (must-understand overrides no-store where storability allowed it at all.)
    if cc.no_cache or (cc.no_store and not cc.must_understand):
        return 0.0
    if rules.force_ttl and rules.ttl is not None:
        return max(0.0, rules.ttl)
    # §4.2.1: a shared cache prefers s-maxage over max-age over Expires.
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    if not targeted:
        expires = response_headers.get(_EXPIRES)
        if expires is not None:
            # §4.2.1: the first line counts; §5.3: an invalid date (e.g. "0") means
            # already expired.
            exp = parse_http_date(expires)
            if exp is None:
                return 0.0
            return max(0.0, exp - date_value(response_headers, date))
    if rules.ttl is not None:
        return max(0.0, rules.ttl)
    # §4.2.2: heuristics only for heuristically cacheable statuses or public.
    if status in HEURISTIC_STATUSES or cc.public:
        last_modified = first_date(response_headers, _LAST_MODIFIED)
        if last_modified is not None:
            since = date_value(response_headers, date) - last_modified
            return min(rules.heuristic_max, max(0.0, since * rules.heuristic_fraction))
    return 0.0


def _age_value(headers: Headers) -> float:
    """Upstream Age (§5.1): the first member of the (combined) field value counts, the
    rest are discarded; when that one is not delta-seconds the field is ignored (0)."""
    for line in headers.getall(_AGE, ()):
        for member in line.split(","):
            member = member.strip(" \t")
            if member:  # empty list elements are not members (RFC 9110 §5.6.1)
                return float(delta_seconds(member) or 0)
    return 0.0


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """§4.2.3 corrected_initial_age at the moment the response arrived."""
    # max() written out: asked of every response stored, and a builtin's call costs more.
    apparent_age = response_time - date_value(response_headers, response_time)
    if not apparent_age > 0.0:
        apparent_age = 0.0
    response_delay = response_time - request_time
    corrected_age_value = _age_value(response_headers) + (
        response_delay if response_delay > 0.0 else 0.0
    )
    return corrected_age_value if corrected_age_value > apparent_age else apparent_age


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """§4.2.3 current_age; a clock stepping backwards never makes it younger."""
    elapsed = now - response_time  # max() written out: a builtin's call costs more
    return initial_age + elapsed if elapsed > 0.0 else initial_age


# A stale entry with a validator is worth keeping in a shared store for a 304 later
# (§4.3): as long as it was fresh, at least this long, at most a day.
_REVALIDATION_KEEP_MIN: Final = 60.0
_REVALIDATION_KEEP_MAX: Final = 86400.0


def shared_store_ttl(
    lifetime: float, age: float, response_headers: Headers, rules: CacheRules
) -> float:
    """Seconds a shared store (Redis) keeps an entry: while it is fresh, then while a
    stale copy may still be served (stale-while-revalidate, stale-if-error) or
    revalidated with its ETag/Last-Modified. Never less than one second."""
    cc = effective_cache_control(response_headers)
    stale = max(
        rules.stale_while_revalidate,
        rules.stale_if_error,
        float(cc.stale_while_revalidate or 0),
        float(cc.stale_if_error or 0),
    )
    if has_validator(response_headers):
        keep = min(max(lifetime, _REVALIDATION_KEEP_MIN), _REVALIDATION_KEEP_MAX)
        stale = max(stale, keep)
    return max(1.0, lifetime - age + stale)
