"""Cache-Control and its kin, parsed (RFC 9111 §5.2, §5.4; RFC 9213 for CDN-Cache-Control;
Surrogate-Control as the W3C Edge Architecture note and Fastly define it; §1.2.2
delta-seconds): the directives of a response this cache obeys, and a request's.

Parsing never raises; results are immutable and short header values are memoised, so a hit
parses nothing it has seen before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

import http_sf
import multidict

from proxy.http.headers import Headers

# §1.2.2: delta-seconds too large to represent are capped at 2**31.
DELTA_MAX: Final = 2**31

# Request "max-stale" without a value: any staleness is acceptable (§5.2.1.2).
MAX_STALE_ANY: Final = 2**62


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
    elif type(values) is list and len(values) == 1:
        # One field line, as most messages have: no generator to make the memo's key.
        value = values[0]
        if type(value) is str and len(value) <= _MEMO_MAX_LEN:
            return _parse_memo((value,))
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
            found[_FRESHNESS[name]] = delta_seconds(arg) or 0
        elif name in _WINDOWS:
            value = delta_seconds(arg)
            if value is not None:
                found[_WINDOWS[name]] = value
        elif name == "max-stale":
            # §5.2.1.2: no argument means "any staleness".
            value = MAX_STALE_ANY if arg is None else delta_seconds(arg)
            if value is not None:
                found["max_stale"] = value
    return CacheControl(**found) if found else EMPTY_CACHE_CONTROL  # type: ignore[arg-type]


def delta_seconds(arg: str | None) -> int | None:
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
            name, sep, given = part.partition("=")
            name = name.strip().lower()
            if name:
                yield name, (given.strip() if sep else None)
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


# What `governing` says of a response: its directives, and whether a targeted field set
# its freshness. Storing a response asks it three times (storability, the entry's lifetime
# and cc): callers that have it pass it on instead.
Governed = tuple[CacheControl, bool]


def governing(headers: Headers) -> Governed:
    """The directives that govern us, and whether a field meant for caches like us set
    the freshness (then Expires is not read).

    CDN-Cache-Control, then Surrogate-Control, then Cache-Control:

    - RFC 9213 §2.2: the first targeted field (for us CDN-Cache-Control) that is present,
      non-empty and parses replaces Cache-Control *and* Expires for this cache;
    - otherwise Surrogate-Control's directives take the place of Cache-Control's
      (`_surrogate_over`).
    """
    if _CDN_CACHE_CONTROL in headers:
        cc = _targeted(headers.getall(_CDN_CACHE_CONTROL))
        if cc is not None:
            if not cc.no_transform:
                # no-transform constrains every intermediary, not just caches, so it is
                # still honoured from Cache-Control.
                plain = parse_cache_control(headers.getall(_CACHE_CONTROL, ()))
                if plain.no_transform:
                    cc = replace(cc, no_transform=True)
            return cc, True
    # Most responses have neither field: asked without making lists.
    plain = parse_cache_control(headers.getall(_CACHE_CONTROL, ()))
    if _SURROGATE_CONTROL in headers:
        surrogate = _surrogate(headers.getall(_SURROGATE_CONTROL))
        if surrogate is not None:
            return _surrogate_over(plain, surrogate), surrogate.max_age is not None
    return plain, False


# Surrogate-Control: cache directives for the surrogates (reverse proxies, CDNs) in front of
# an origin, removed before the response goes on (W3C Edge Architecture 1.0, 2001; Fastly's
# and Akamai's). Clients never see it (proxy/cache/route.py, RouteCache.hidden).
SURROGATE_FIELDS: Final = frozenset({"surrogate-control"})
# What this cache takes from it: the W3C note's max-age and no-store, and the stale windows
# Fastly reads there (its "Cache freshness and TTLs": Surrogate-Control's max-age,
# stale-while-revalidate and stale-if-error before Cache-Control's). `no-store-remote` is
# for surrogates far from the origin (a CDN), not for a proxy beside it; `content` (ESI) and
# the rest ask for processing this proxy does not do.
_SURROGATE_DIRECTIVES: Final = frozenset(
    {"max-age", "no-store", "stale-while-revalidate", "stale-if-error"}
)


def _surrogate(lines: list[str]) -> CacheControl | None:
    """Surrogate-Control's directives for every surrogate; None: none this cache acts on."""
    value = ", ".join(lines)
    if len(value) <= _MEMO_MAX_LEN:
        return _parse_surrogate_memo(value)
    return _parse_surrogate(value)


@functools.lru_cache(maxsize=256)
def _parse_surrogate_memo(value: str) -> CacheControl | None:
    return _parse_surrogate(value)


def _parse_surrogate(value: str) -> CacheControl | None:
    """Parsed as Cache-Control is (the first occurrence counts, an invalid max-age is
    stale), except that a directive targeted at one surrogate (`max-age=60;edge1`, the W3C
    note's `;device-token`) is for that one alone, and this proxy has no token: ignored;
    and of the note's `max-age=60+30` (a freshness extension) only the 60 counts."""
    found: list[tuple[str, str | None]] = []
    for name, arg in _directives(value):
        if ";" in name or (arg is not None and ";" in arg):
            continue
        if name in _SURROGATE_DIRECTIVES:
            if name == "max-age" and arg is not None:
                arg = arg.partition("+")[0].strip()
            found.append((name, arg))
    return _from_directives(found) if found else None


# Memoised like the parses: the entries of one route share one result, not one object each.
@functools.lru_cache(maxsize=256)
def _surrogate_over(plain: CacheControl, surrogate: CacheControl) -> CacheControl:
    """Cache-Control with Surrogate-Control's directives in place of its own.

    Its max-age is the freshness (before s-maxage, max-age and Expires, as Fastly reads
    them), and the Cache-Control directives that make a cache revalidate (no-cache,
    must-revalidate, proxy-revalidate) are then the browser's: "Cache-Control: no-cache"
    for browsers beside a long Surrogate-Control max-age for the CDN is Fastly's own
    example. Cache-Control's private and no-store still hold: Fastly's default passes
    `private` responses, and this cache never shares what the origin says nobody may keep.
    """
    fresh = surrogate.max_age is not None
    swr, sie = surrogate.stale_while_revalidate, surrogate.stale_if_error
    return replace(
        plain,
        max_age=surrogate.max_age if fresh else plain.max_age,
        s_maxage=None if fresh else plain.s_maxage,
        no_cache=plain.no_cache and not fresh,
        must_revalidate=plain.must_revalidate and not fresh,
        proxy_revalidate=plain.proxy_revalidate and not fresh,
        no_store=plain.no_store or surrogate.no_store,
        # Said to surrogates outright, no-store is not must-understand's fallback for caches
        # that do not know the status.
        must_understand=plain.must_understand and not surrogate.no_store,
        stale_while_revalidate=plain.stale_while_revalidate if swr is None else swr,
        stale_if_error=plain.stale_if_error if sie is None else sie,
    )


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
    ``no-transform`` is still taken from Cache-Control. Otherwise Surrogate-Control's
    directives replace Cache-Control's (see `governing`). Response ``Pragma`` is
    ignored (§5.4).
    """
    return governing(headers)[0]


# Header names asked of every request, case-folded once (multidict folds a str each time).
_CACHE_CONTROL, _PRAGMA = multidict.istr("Cache-Control"), multidict.istr("Pragma")
_CDN_CACHE_CONTROL = multidict.istr("CDN-Cache-Control")
_SURROGATE_CONTROL = multidict.istr("Surrogate-Control")


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
