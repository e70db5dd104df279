"""RFC 9111 shared-cache decisions, free of I/O and clocks.

Every function here is pure: callers pass headers, status codes and times
(``now``, ``request_time`` … as float epoch seconds) and act on the result.
The proxy is a *shared* cache, so ``s-maxage``/``proxy-revalidate`` apply and
``private`` responses are only kept when entries are keyed per user.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final, TypeAlias
from urllib.parse import urljoin, urlsplit

import http_sf
import multidict

from proxy.http.dates import parse_http_date

Headers: TypeAlias = multidict.CIMultiDictProxy[str] | multidict.CIMultiDict[str]

# §9.2.1 of RFC 9110: only these are "safe"; everything else invalidates.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# §4.2.2 / RFC 9110 §15.1 heuristically cacheable statuses, minus 206: we do
# not store partial content (no range-merging support).
HEURISTIC_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# 206 (partial), 304 (no body, only updates entries, §4.3.4) are never stored.
_NEVER_STORED: Final = frozenset({206, 304})
# §5.2.2.3 must-understand: the statuses whose own caching rules we implement (those
# RFC 9110 makes heuristically cacheable); with it, any other status is not stored.
UNDERSTOOD_STATUSES: Final = HEURISTIC_STATUSES

# §1.2.2: delta-seconds too large to represent are capped at 2**31.
DELTA_MAX: Final = 2**31
# Request "max-stale" without a value: any staleness is acceptable (§5.2.1.2).
MAX_STALE_ANY: Final = 2**62
# Placeholder for a Vary'd request header that is absent (§4.1: an absent
# field only matches an absent field, never an empty one). NUL cannot appear
# in a real field value.
VARY_ABSENT: Final = "\x00"


def is_unsafe_method(method: str) -> bool:
    """Whether ``method`` triggers invalidation (§4.4)."""
    return method not in SAFE_METHODS


# ---------------------------------------------------------------------------
# Cache-Control parsing (§5.2)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    only_if_cached: bool = False
    no_transform: bool = False
    immutable: bool = False
    must_understand: bool = False


EMPTY_CACHE_CONTROL: Final = CacheControl()

# Parse results are immutable, so identical header values share one result;
# only short values are memoised so hostile request headers can't bloat it.
_MEMO_MAX_LEN: Final = 256


def parse_cache_control(values: Iterable[str]) -> CacheControl:
    """Parse one or more Cache-Control field values; never raises.

    - names are case-insensitive; args may be tokens or quoted-strings (§5.2);
      ``max-age="60"`` is ``max-age=60`` (§5.2: recipients accept both forms);
    - a directive given more than once: the first occurrence counts, across all
      field lines, and later ones are ignored (§4.2.1), whatever their values;
    - an invalid ``max-age``/``s-maxage`` (``max-age=10a``, ``=1.5``, ``=-1``, no
      value) is invalid freshness information: 0, stale (§4.2.1); an invalid
      stale-while-revalidate / stale-if-error / max-stale / min-fresh is ignored;
    - qualified ``no-cache="f"`` / ``private="f"`` count as unqualified;
    - unknown directives are ignored (§5.2.3).
    """
    if isinstance(values, str):  # a bare value, not a list of them
        values = (values,)
    try:
        key = tuple(v for v in values if isinstance(v, str))
    except TypeError:
        return EMPTY_CACHE_CONTROL
    if not key:
        return EMPTY_CACHE_CONTROL
    if sum(map(len, key)) <= _MEMO_MAX_LEN:
        return _parse_memo(key)
    return _parse(key)


@functools.lru_cache(maxsize=1024)
def _parse_memo(values: tuple[str, ...]) -> CacheControl:
    return _parse(values)


def _parse(values: tuple[str, ...]) -> CacheControl:
    return _from_directives(pair for value in values for pair in _directives(value))


# Directives that are on when present; an argument, if any, is not looked at.
_FLAGS: Final = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "only-if-cached": "only_if_cached",
    "no-transform": "no_transform",
    "immutable": "immutable",
    "must-understand": "must_understand",
}
# Freshness: an invalid value means stale (§4.2.1).
_FRESHNESS: Final = {"max-age": "max_age", "s-maxage": "s_maxage"}
# Stale windows and a client's min-fresh: an invalid value is ignored.
_WINDOWS: Final = {
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
    "min-fresh": "min_fresh",
}
# Directives whose argument is delta-seconds (RFC 9213 §2.1: only an Integer will do).
_NUMERIC: Final = frozenset({*_FRESHNESS, *_WINDOWS, "max-stale"})


def _from_directives(directives: Iterable[tuple[str, str | None]]) -> CacheControl:
    """CacheControl from (lower-cased name, argument or None) pairs, the first of each
    name counting (§4.2.1)."""
    found: dict[str, bool | int] = {}
    seen: set[str] = set()
    for name, arg in directives:
        if name in seen:
            continue
        seen.add(name)
        if name in _FLAGS:
            found[_FLAGS[name]] = True
        elif name in _FRESHNESS:
            found[_FRESHNESS[name]] = _delta(arg) or 0
        elif name in _WINDOWS:
            value = _delta(arg)
            if value is not None:
                found[_WINDOWS[name]] = value
        elif name == "max-stale":
            # §5.2.1.2: no argument means "any staleness".
            value = MAX_STALE_ANY if arg is None else _delta(arg)
            if value is not None:
                found["max_stale"] = value
    return CacheControl(**found) if found else EMPTY_CACHE_CONTROL  # type: ignore[arg-type]


def _delta(arg: str | None) -> int | None:
    """delta-seconds (§1.2.2): 1*DIGIT, capped at 2**31; else None."""
    if not arg or not (arg.isascii() and arg.isdigit()):
        return None
    digits = arg.lstrip("0")
    if len(digits) > 10:  # also keeps int() clear of its digit limit
        return DELTA_MAX
    return min(int(digits or "0"), DELTA_MAX)


def _directives(value: str) -> Iterator[tuple[str, str | None]]:
    """Yield (lower-cased name, argument or None) pairs of one field value."""
    if '"' not in value:
        # Fast path: no quoted-strings, so commas only separate directives.
        for part in value.split(","):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if name:
                yield name, (arg.strip() if sep else None)
        return

    # Slow path: quoted-strings may contain commas and backslash escapes.
    i, n = 0, len(value)
    while i < n:
        j = i
        while j < n and value[j] not in ",=":
            j += 1
        name = value[i:j].strip().lower()
        arg: str | None = None
        if j < n and value[j] == "=":
            j += 1
            while j < n and value[j] in " \t":
                j += 1
            if j < n and value[j] == '"':
                j += 1
                buf: list[str] = []
                while j < n and value[j] != '"':
                    if value[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(value[j])
                    j += 1
                arg = "".join(buf)
                # Skip anything between the closing quote and the next comma.
                k = value.find(",", j)
                j = n if k < 0 else k
            else:
                k = value.find(",", j)
                end = n if k < 0 else k
                arg = value[j:end].strip()
                j = end
        if name:
            yield name, arg
        i = j + 1


def _governing(headers: Headers) -> tuple[CacheControl, bool]:
    """The directives that govern us, and whether a targeted field did.

    RFC 9213 §2.2: the first targeted field (for us CDN-Cache-Control) that is
    present, non-empty and parses replaces Cache-Control *and* Expires for this cache.
    """
    if _CDN_CACHE_CONTROL not in headers:  # most responses: asked without making lists
        return parse_cache_control(headers.getall(_CACHE_CONTROL, ())), False
    cc = _targeted(headers.getall(_CDN_CACHE_CONTROL))
    if cc is None:
        return parse_cache_control(headers.getall(_CACHE_CONTROL, ())), False
    if not cc.no_transform:
        # no-transform constrains every intermediary, not just caches, so it is
        # still honoured from Cache-Control.
        plain = parse_cache_control(headers.getall("Cache-Control", ()))
        if plain.no_transform:
            cc = replace(cc, no_transform=True)
    return cc, True


def _targeted(lines: list[str]) -> CacheControl | None:
    """A targeted field's directives, or None when it must be ignored (RFC 9213 §2.1:
    empty, or not a Structured Fields Dictionary)."""
    lines = [line for line in lines if line.strip(" \t")]
    if not lines:
        return None
    value = ", ".join(lines)  # RFC 9651 §4.2: field lines combine with commas
    if len(value) <= _MEMO_MAX_LEN:
        return _parse_targeted_memo(value)
    return _parse_targeted(value)


@functools.lru_cache(maxsize=256)
def _parse_targeted_memo(value: str) -> CacheControl | None:
    return _parse_targeted(value)


def _parse_targeted(value: str) -> CacheControl | None:
    try:
        members = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except (UnicodeEncodeError, http_sf.StructuredFieldError):
        return None
    if not members:
        return None
    assert isinstance(members, dict)
    return _from_directives(_sf_directives(members))


def _sf_directives(members: http_sf.DictionaryType) -> Iterator[tuple[str, str | None]]:
    """(name, argument) pairs of a parsed targeted field, as RFC 9213 §2.1 maps them.

    Boolean true: no argument; Integer and Token: the argument; String: the
    quoted-string argument, but not for a number (``max-age="60"`` would be consumed
    against its inferred type, so it counts as invalid). Boolean false: the directive
    is off. Any other type is an invalid argument. Parameters are ignored. In a
    Dictionary a repeated key's last value wins (RFC 9651 §4.2.2).
    """
    for name, member in members.items():
        value = member[0] if isinstance(member, tuple) else member
        if value is True:
            yield name, None
        elif value is False:
            continue
        elif type(value) is int or isinstance(value, http_sf.Token):
            yield name, str(value)
        elif type(value) is str and name not in _NUMERIC:
            yield name, value
        else:
            yield name, ""  # not delta-seconds, nor anything else we read


def effective_cache_control(headers: Headers) -> CacheControl:
    """Response directives this (CDN-class) cache obeys.

    CDN-Cache-Control, when present, non-empty and a valid Structured Field,
    governs storage and freshness instead of Cache-Control (RFC 9213); only
    ``no-transform`` is still taken from Cache-Control. Response ``Pragma`` is
    ignored (§5.4).
    """
    return _governing(headers)[0]


# Header names asked of every request, case-folded once (multidict folds a str each time).
_CACHE_CONTROL, _PRAGMA = multidict.istr("Cache-Control"), multidict.istr("Pragma")
_CDN_CACHE_CONTROL = multidict.istr("CDN-Cache-Control")


def request_cache_control(request_headers: Headers) -> CacheControl:
    """Request directives; ``Pragma: no-cache`` counts only without
    Cache-Control (§5.4)."""
    if _CACHE_CONTROL in request_headers:  # most requests have neither: no lists made
        return parse_cache_control(request_headers.getall(_CACHE_CONTROL))
    if _PRAGMA not in request_headers:
        return EMPTY_CACHE_CONTROL
    for pragma in request_headers.getall(_PRAGMA, ()):
        for token in pragma.split(","):
            if token.strip().lower() == "no-cache":
                return _PRAGMA_NO_CACHE
    return EMPTY_CACHE_CONTROL


_PRAGMA_NO_CACHE: Final = CacheControl(no_cache=True)


# ---------------------------------------------------------------------------
# Route rules and storability (§3)
# ---------------------------------------------------------------------------


# Request headers that always carry credentials. RFC 9111 §3.5 names Authorization;
# cookies identify a user just as well, and APIs personalise by them without `private`.
CREDENTIAL_HEADERS: Final = (multidict.istr("Authorization"), multidict.istr("Cookie"))


@dataclass(frozen=True, slots=True)
class CacheRules:
    """Per-route cache configuration, already resolved."""

    ttl: float | None = None  # freshness when the origin gives none
    force_ttl: bool = False  # ttl beats origin freshness (not no-store/private/no-cache)
    stale_while_revalidate: float = 0.0  # max()'d with the origin's directive
    stale_if_error: float = 0.0  # max()'d with the origin's directive
    store_set_cookie: bool = False
    # Per-user routes: the request header whose value scopes entries to one user.
    user_header: str | None = None
    # Request headers that identify a user (CREDENTIAL_HEADERS and any configured).
    credentials: tuple[str, ...] = CREDENTIAL_HEADERS
    # Credentialed requests on shared routes: "explicit" | "lookup" | "pass" (request_scope).
    on_credentials: str = "explicit"
    heuristic_fraction: float = 0.1  # §4.2.2 (10% of Date - Last-Modified)
    heuristic_max: float = 86400.0


class Scope(enum.Enum):
    """Whose cache a request may be answered from and stored into."""

    SHARED = "shared"  # everyone's: the shared-cache rules of §3 and §3.5 apply
    USER = "user"  # keyed by the route's credential: `private` and credentials are fine
    PASS = "pass"  # carries a credential the route does not key by: no cache at all
    # A credentialed request on a shared route (`on_credentials: explicit`): answered only
    # from entries whose response said they may serve credentialed requests.
    CREDENTIALED = "credentialed"


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
            return Scope.SHARED
        return Scope.PASS if rules.on_credentials == "pass" else Scope.CREDENTIALED
    if any(v.strip() for v in request_headers.getall(rules.user_header, ())):
        return Scope.USER
    if has_credentials(request_headers, rules):
        return Scope.PASS
    return Scope.SHARED


def shareable_with_credentials(cc: CacheControl) -> bool:
    """§3.5: a response the origin explicitly lets a shared cache reuse for requests
    with credentials."""
    return cc.public or cc.s_maxage is not None or cc.must_revalidate


def may_answer(scope: Scope, cc: CacheControl) -> bool:
    """May a stored response with this Cache-Control answer a request in `scope`?"""
    return scope is not Scope.CREDENTIALED or shareable_with_credentials(cc)


@dataclass(frozen=True, slots=True)
class StoreDecision:
    store: bool
    reason: str  # "ok" or the first rule that refused, e.g. "no-store"

    def __bool__(self) -> bool:
        return self.store


_OK: Final = StoreDecision(True, "ok")


def _no(reason: str) -> StoreDecision:
    return StoreDecision(False, reason)


def storability(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    rules: CacheRules,
    scope: Scope = Scope.SHARED,
) -> StoreDecision:
    """May this response be stored (§3)? ``reason`` names the deciding rule.

    Reasons: ok, method, credentials, status, no-store, private, authorization,
    set-cookie, vary-star, no-freshness.
    """
    # Only GET is stored. A HEAD response has no body, so it could never
    # answer a GET; HEAD is served from GET entries instead (§4.3.5 covers
    # HEAD-driven header updates, which the caller may do).
    if method != "GET":
        return _no("method")
    if scope is Scope.PASS:
        return _no("credentials")
    if status < 200 or status > 599 or status in _NEVER_STORED:
        return _no("status")
    # §3: no-store in the request or the response forbids storage.
    if request_cache_control(request_headers).no_store:
        return _no("no-store")
    cc, targeted = _governing(response_headers)
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
    if "Set-Cookie" in response_headers and not rules.store_set_cookie:
        return _no("set-cookie")
    # §4.1: Vary: * never matches, so storing is pointless.
    if vary_fields(response_headers) is None:
        return _no("vary-star")

    explicit = (
        cc.max_age is not None
        or cc.s_maxage is not None
        or (not targeted and "Expires" in response_headers)
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


# ---------------------------------------------------------------------------
# Freshness lifetime (§4.2.1, §4.2.2) and age (§4.2.3)
# ---------------------------------------------------------------------------


def _first_date(headers: Headers, name: str) -> float | None:
    value = headers.get(name)
    return None if value is None else parse_http_date(value)


def date_value(headers: Headers, default: float) -> float:
    """§4.2.3 date_value: the Date header, or ``default`` (response_time)."""
    parsed = _first_date(headers, "Date")
    return default if parsed is None else parsed


def freshness_lifetime(
    response_headers: Headers,
    rules: CacheRules,
    date: float,
    *,
    status: int = 200,
) -> float:
    """Seconds the response stays fresh (§4.2.1).

    ``date`` is used when the response has no valid Date header (pass the
    response_time). ``status`` gates heuristic freshness (§4.2.2).
    Precedence: no-cache → 0; force_ttl; s-maxage; max-age; Expires - Date;
    route ttl; heuristic; 0.
    """
    cc, targeted = _governing(response_headers)
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
        expires = response_headers.get("Expires")
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
        last_modified = _first_date(response_headers, "Last-Modified")
        if last_modified is not None:
            since = date_value(response_headers, date) - last_modified
            return min(rules.heuristic_max, max(0.0, since * rules.heuristic_fraction))
    return 0.0


def _age_value(headers: Headers) -> float:
    """Upstream Age (§5.1): the first member of the (combined) field value counts, the
    rest are discarded; when that one is not delta-seconds the field is ignored (0)."""
    for line in headers.getall("Age", ()):
        for member in line.split(","):
            member = member.strip(" \t")
            if member:  # empty list elements are not members (RFC 9110 §5.6.1)
                return float(_delta(member) or 0)
    return 0.0


def initial_age(response_headers: Headers, request_time: float, response_time: float) -> float:
    """§4.2.3 corrected_initial_age at the moment the response arrived."""
    apparent_age = max(0.0, response_time - date_value(response_headers, response_time))
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = _age_value(response_headers) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """§4.2.3 current_age; a clock stepping backwards never makes it younger."""
    return initial_age + max(0.0, now - response_time)


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


# ---------------------------------------------------------------------------
# Serving decisions (§4.2.4, RFC 5861)
# ---------------------------------------------------------------------------


class Freshness(enum.Enum):
    """What a lookup may do with a stored entry.

    FRESH: serve without contacting the origin.
    STALE_WHILE_REVALIDATE: serve now, revalidate in the background.
    STALE_IF_ERROR_ONLY: revalidate first; on origin error/5xx the entry may
        still be served (it may even be fresh, if the client demanded
        validation).
    MUST_REVALIDATE: revalidate; never serve the entry without success.
    """

    FRESH = "fresh"
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    STALE_IF_ERROR_ONLY = "stale-if-error-only"
    MUST_REVALIDATE = "must-revalidate"


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


def lookup_verdict(
    *,
    age: float,
    lifetime: float,
    request_cc: CacheControl,
    response_cc: CacheControl,
    rules: CacheRules,
) -> Freshness:
    """Decide how a stored entry may answer a request (§4.2, §4.2.4, §5.2.1).

    ``lifetime`` comes from freshness_lifetime (response no-cache → 0).
    Stale windows are max(route, origin directive). must-revalidate,
    proxy-revalidate and no-cache forbid stale service; s-maxage only blocks
    the client's max-stale (route/origin windows are explicit permissions).
    ``only-if-cached`` is left to the caller (504 unless it can serve).
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
        window = max(
            rules.stale_while_revalidate,
            float(response_cc.stale_while_revalidate or 0),
        )
        if staleness < window:
            return Freshness.STALE_WHILE_REVALIDATE
    return revalidate()


# ---------------------------------------------------------------------------
# Validation (§4.3)
# ---------------------------------------------------------------------------


def has_validator(headers: Headers) -> bool:
    """An ETag, or a Last-Modified that is a valid HTTP-date (§4.3.1; an invalid one is
    ignored, so it cannot be used to revalidate)."""
    etag = headers.get("ETag")
    return bool(etag and etag.strip()) or _first_date(headers, "Last-Modified") is not None


def conditional_headers(stored_headers: Headers) -> dict[str, str]:
    """Validators for revalidating a stored response upstream (§4.3.1)."""
    out: dict[str, str] = {}
    etag = stored_headers.get("ETag")
    if etag is not None and etag.strip():
        out["If-None-Match"] = etag.strip()
    last_modified = stored_headers.get("Last-Modified")
    if last_modified is not None and parse_http_date(last_modified) is not None:
        out["If-Modified-Since"] = last_modified.strip()
    return out


def _opaque(tag: str) -> str:
    """Weak comparison (RFC 9110 §8.8.3.2) ignores the W/ prefix."""
    return tag[2:] if tag.startswith("W/") else tag


def _entity_tags(value: str) -> Iterator[str]:
    """Entity-tags of a list; etagc allows commas, so split on quotes."""
    i, n = 0, len(value)
    while i < n:
        if value[i] in " \t,":
            i += 1
            continue
        start = i
        if value.startswith("W/", i):
            i += 2
        if i < n and value[i] == '"':
            end = value.find('"', i + 1)
            end = n if end < 0 else end + 1
        else:
            # Lenient: unquoted garbage runs to the next comma.
            end = value.find(",", i)
            end = n if end < 0 else end
        tag = value[start:end].strip()
        if tag:
            yield tag
        i = end


def not_modified_for_client(request_headers: Headers, stored_headers: Headers) -> bool:
    """Can a client's conditional GET/HEAD get a 304 from this entry (§4.3.2)?

    If-None-Match (weak comparison) takes precedence; If-Modified-Since is
    only consulted without it (RFC 9110 §13.2.2) and compares against
    Last-Modified, else Date. Garbage never matches.
    """
    inm = request_headers.getall("If-None-Match", ())
    if inm:
        stored = stored_headers.get("ETag")
        stored_tag = _opaque(stored.strip()) if stored is not None else None
        for line in inm:
            for tag in _entity_tags(line):
                if tag == "*":
                    return True  # we hold a current representation
                if stored_tag and _opaque(tag) == stored_tag:
                    return True
        return False

    ims_value = request_headers.get("If-Modified-Since")
    if ims_value is None:
        return False
    ims = parse_http_date(ims_value)
    if ims is None:
        return False  # RFC 9110 §13.1.3: ignore invalid dates
    modified = _first_date(stored_headers, "Last-Modified")
    if modified is None:
        modified = _first_date(stored_headers, "Date")
    return modified is not None and modified <= ims


# §3.2: Content-Length must not be updated; the stored body also depends on
# its Content-Encoding, so a 304 may not change that either.
_KEEP_ON_304: Final = frozenset({"content-length", "content-encoding"})


def merge_304_headers(
    stored_headers: Headers, fresh_304_headers: Headers
) -> multidict.CIMultiDict[str]:
    """Stored headers updated by a 304 (§4.3.4, §3.2).

    Each field in the 304 replaces all stored lines of that name (except
    Content-Length/Content-Encoding). Hop-by-hop fields must already be
    stripped by the caller. Recompute the age from the result.
    """
    merged = multidict.CIMultiDict(stored_headers)
    seen: set[str] = set()
    for name in fresh_304_headers:
        lower = name.lower()
        if lower in seen or lower in _KEEP_ON_304:
            continue
        seen.add(lower)
        merged.popall(name, None)
        for value in fresh_304_headers.getall(name):
            merged.add(name, value)
    return merged


# ---------------------------------------------------------------------------
# Vary (§4.1)
# ---------------------------------------------------------------------------


def vary_fields(response_headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased, sorted, deduplicated Vary names; None for ``Vary: *``."""
    lines = response_headers.getall("Vary", ())
    if not lines:
        return ()
    names: set[str] = set()
    for line in lines:
        for part in line.split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def _normalise_field(lines: list[str]) -> str:
    # §4.1: combine field lines and drop insignificant whitespace around list
    # separators, so "a,b", "a, b" and two lines "a" + "b" all match.
    parts = [p.strip() for line in lines for p in line.split(",")]
    return ", ".join(p for p in parts if p)


def vary_key(fields: Iterable[str], request_headers: Headers) -> tuple[str, ...]:
    """Normalised request values for ``fields`` (in order); selects a variant.

    Absent headers become VARY_ABSENT so they never match an empty value.
    """
    out: list[str] = []
    for name in fields:
        lines = request_headers.getall(name, ())
        out.append(_normalise_field(lines) if lines else VARY_ABSENT)
    return tuple(out)


# ---------------------------------------------------------------------------
# Invalidation (§4.4)
# ---------------------------------------------------------------------------


def _norm_host(netloc: str) -> str:
    # Drop userinfo and default ports: we don't know the scheme, so both :80
    # and :443 are treated as default.
    host = netloc.rpartition("@")[2].lower()
    for port in (":80", ":443"):
        if host.endswith(port):
            return host[: -len(port)]
    return host


def _same_origin_target(reference: str, base_path: str, host: str) -> str | None:
    reference = reference.strip()
    if not reference:
        return None
    try:
        resolved = urlsplit(urljoin(f"http://{host}{base_path}", reference))
    except ValueError:
        return None
    if resolved.scheme not in ("http", "https") or _norm_host(resolved.netloc) != host:
        return None
    path = resolved.path or "/"
    return f"{path}?{resolved.query}" if resolved.query else path


def invalidation_targets(
    method: str,
    status: int,
    request_url_path_query: str,
    response_headers: Headers,
    request_host: str,
) -> list[str]:
    """Path+query targets to invalidate after an unsafe request (§4.4).

    Only for non-safe methods with a 2xx/3xx (non-error) status: the request
    target, plus same-host Location / Content-Location (relative references
    resolved against the request path). Order kept, duplicates dropped.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    target = request_url_path_query or "/"
    targets = [target]
    host = _norm_host(request_host)
    base_path = target.partition("?")[0]
    if not base_path.startswith("/"):
        base_path = "/" + base_path
    for name in ("Location", "Content-Location"):
        for value in response_headers.getall(name, ()):
            resolved = _same_origin_target(value, base_path, host)
            if resolved is not None and resolved not in targets:
                targets.append(resolved)
    return targets
