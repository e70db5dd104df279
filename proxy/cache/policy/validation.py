"""Validation (RFC 9111 §4.3): the validators a stored response has, the conditional
request that revalidates it upstream (§4.3.1), a client's conditional request served from
it (§4.3.2), and a 304 folded into it (§4.3.4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import multidict

from proxy.http.dates import parse_http_date
from proxy.http.headers import Headers

# Asked of every response stored: a str name is case-folded on every lookup.
_ETAG, _LAST_MODIFIED = multidict.istr("ETag"), multidict.istr("Last-Modified")


def first_date(headers: Headers, name: str) -> float | None:
    """The first `name` field as an HTTP-date (§4.2.1: only the first line counts); None when
    absent or not an HTTP-date (§4.3.1, RFC 9110 §13.1.3: an invalid date is ignored)."""
    value = headers.get(name)
    return None if value is None else parse_http_date(value)


def has_validator(headers: Headers) -> bool:
    """An ETag, or a Last-Modified that is a valid HTTP-date (§4.3.1; an invalid one is
    ignored, so it cannot be used to revalidate)."""
    etag = headers.get(_ETAG)
    return bool(etag and etag.strip()) or first_date(headers, _LAST_MODIFIED) is not None


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


def not_modified_for_client(
    request_headers: Headers, stored_headers: Headers, received_at: float
) -> bool:
    """Can a client's conditional GET/HEAD get a 304 from this entry (§4.3.2)?

    If-None-Match (weak comparison) takes precedence; If-Modified-Since is
    only consulted without it (RFC 9110 §13.2.2). Its date is compared with the
    stored Last-Modified, else the stored Date, else `received_at` (when the
    cache got the response): §4.3.2's three cases, in its order. An entry whose
    date is after the client's gets the full response. Garbage never matches.
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
    modified = first_date(stored_headers, "Last-Modified")
    if modified is None:
        # Ours was the current representation at its Date: a client whose copy dates from
        # then or later holds nothing older than ours (§4.3.2's second case).
        modified = first_date(stored_headers, "Date")
    if modified is None:
        modified = received_at
    return modified <= ims


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
