"""The head of a response, made in one pass over the fields it is made from.

A response would otherwise be copied into a header multidict and changed in place by
one stage after another: hop-by-hop fields out, Via and the cache lines in
(`forward_response_headers`), the encoding stage's Vary, CORS's `apply` and the rate
limit's `apply`, before aiohttp writes it all out again. Here the same response is
written as its lines go by:

- `forwarded_head`: an upstream response on its way through, never stored; only the
  common case (see there), the general path sends the rest;
- `stored_head`: the constant part of the responses from one stored form of an entry,
  which `Responder` completes with the lines of each request.

Both must say what the general path says (tests/respond/test_head.py).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from multidict import istr

from proxy.adapters.aiohttp_internals import server_field
from proxy.cache.policy import Headers
from proxy.edge.compression.negotiate import is_acceptable
from proxy.edge.ratelimit.headers import COUNT_HEADERS, POLICY
from proxy.http.headers import HOP_BY_HOP, VIA, keep_kind
from proxy.http.vary import vary_values

if TYPE_CHECKING:
    from proxy.edge.cors import CorsRules
    from proxy.edge.route import LoadedRoute

# Fields of the upstream's that never go out as they are: hop-by-hop ones, the ones the
# proxy sets itself, and Vary and Via, which it extends.
_FORWARD_DROP = HOP_BY_HOP | {"content-length", "x-cache", "cache-status", "vary", "via"}
_LIMITS = frozenset(name.lower() for name in (*COUNT_HEADERS, POLICY))
_FORWARD_DROP_LIMITED = _FORWARD_DROP | _LIMITS
# Stored fields were forwarded ones (Via and all); each response sets Age and the rest.
_STORED_DROP = frozenset({"content-length", "x-cache", "cache-status", "age", "vary"})
_STORED_DROP_LIMITED = _STORED_DROP | _LIMITS
_CONNECTION, _ENCODING = istr("Connection"), istr("Content-Encoding")
_TYPE, _SERVER, _DATE = istr("Content-Type"), istr("Server"), istr("Date")
_ACCEPT_ENCODING = istr("Accept-Encoding")
_VARY_ACCEPT_ENCODING = ("Accept-Encoding",)
_VARY_BOTH = ("Accept-Encoding", "Origin")
_VARY_ORIGIN = ("Origin",)
_VIA_LINE = "Via: " + VIA
# A status as text, looked up: an int in an f-string is formatted through format().
_STATUS_TEXT = {status: str(status) for status in range(100, 1000)}


def forwarded_head(
    route: LoadedRoute,
    status: int,
    reason: str,
    fields: Headers,
    request_headers: Headers,
    length: int,
    cache_lines: str,
    edge_lines: str | None,
    id_field: str = "",
) -> tuple[bytes, bool] | None:
    """` <status> <reason>` and the header lines of the response to a GET whose upstream
    response (`status`, `reason`, `fields`) has a body of `length` bytes, sent as it is;
    and whether it has its own Date. `cache_lines`: the X-Cache and Cache-Status lines;
    `edge_lines`: the request's CORS, rate-limit and id lines (Exchange.edge_lines);
    `id_field`: the request-id field's name in lower case, the upstream's own
    copy of which is left out ("": request ids are off).

    None: not made here. The response needs its body (de)compressed, the upstream lists
    fields in Connection, or the rate-limit stage has not run (`edge_lines` None).
    """
    if edge_lines is None:
        return None
    if _CONNECTION in fields:
        return None
    vary_encoding = False
    compression = route.compression
    if compression is not None:
        accept = request_headers.get(_ACCEPT_ENCODING)
        coding = fields.get(_ENCODING, "").strip().lower()
        if coding and coding != "identity":
            if not is_acceptable(accept, coding):
                return None  # to be decoded, or passed on untouched if it cannot be
            vary_encoding = True
        elif compression.should_compress(status, fields, length):
            if compression.negotiate(accept) is not None:
                return None  # to be encoded
            vary_encoding = True
    cors = route.cors
    head = [f" {_STATUS_TEXT.get(status) or status} {reason}\r\n"]
    drop = _dropped(_FORWARD_DROP if route.rate_limit is None else _FORWARD_DROP_LIMITED, route)
    _fields(head, fields, drop, cors, vary_encoding, True, id_field)
    head.append(cache_lines)
    if cors is not None:
        head.append(cors.static_lines)
    head.append(edge_lines)
    length_lines(head, fields, length)
    return "".join(head).encode("utf-8", "surrogateescape"), _DATE in fields


def stored_head(
    route: LoadedRoute,
    status: int,
    reason: str,
    fields: Headers,
    length: int,
    vary_encoding: bool,
    id_field: str = "",
) -> tuple[bytes, bool]:
    """The constant part of every response with these stored `fields` and a body of
    `length` bytes through `route`: what from_entry's Response would send, less the
    lines of each request (`Age`, the cache lines, the CORS lines of an allowed Origin,
    the rate-limit lines, Date and Connection). `vary_encoding`: add Accept-Encoding to
    Vary (the stored form, sent to a client that does not accept what we would encode).
    `id_field`: as forwarded_head's (a stored response may have echoed another client's
    id). And whether the fields hold a Date.
    """
    cors = route.cors
    head = [f" {_STATUS_TEXT.get(status) or status} {reason}\r\n"]
    drop = _dropped(_STORED_DROP if route.rate_limit is None else _STORED_DROP_LIMITED, route)
    _fields(head, fields, drop, cors, vary_encoding, False, id_field)
    if cors is not None:
        head.append(cors.static_lines)
    length_lines(head, fields, length)
    return "".join(head).encode("utf-8", "surrogateescape"), _DATE in fields


def _dropped(drop: frozenset[str], route: LoadedRoute) -> frozenset[str]:
    """`drop` and the fields the route's cache keeps from clients (RouteCache.hidden)."""
    cache = route.cache
    if cache is None or not cache.hidden:
        return drop
    return _with_hidden(drop, cache.hidden)


@functools.lru_cache(maxsize=64)
def _with_hidden(drop: frozenset[str], hidden: frozenset[str]) -> frozenset[str]:
    # A handful of routes' sets, made once each instead of per response.
    return drop | hidden


# What _fields does with a field, by its name as the origin spelled it, in a memo of field
# names (proxy/http/headers.py keep_kind).
_KEEP, _DROP, _VARY, _VIA = 0, 1, 2, 3


@functools.lru_cache(maxsize=64)
def _kinds(drop: frozenset[str], filtering: bool, via: bool, id_field: str) -> dict[str, int]:
    # One memo for each way routes write fields (_fields' arguments but the fields): a few.
    return {}


def _kind(low: str, drop: frozenset[str], filtering: bool, via: bool, id_field: str) -> int:
    """What _fields does with a field named `low` (lower case); `filtering`: a CORS route's,
    which drops the origin's Access-Control-* fields."""
    if low in drop:
        if low == "vary":
            return _VARY
        return _VIA if low == "via" and via else _DROP
    if low == id_field:
        return _DROP  # each response carries its own request's id
    if filtering and low.startswith("access-control-"):
        return _DROP
    return _KEEP


def _fields(
    head: list[str],
    fields: Headers,
    drop: frozenset[str],
    cors: CorsRules | None,
    vary_encoding: bool,
    via: bool,
    id_field: str,
) -> None:
    """`fields` as lines onto `head`, less `drop` (and the origin's Access-Control-* on a
    CORS route) and the `id_field`, with Vary extended and, when `via`, our hop added to Via."""
    lines: list[str] = []  # without their CRLF: joined with them at the end
    vary: list[str] = []  # as the origin spelled them, "Vary: " and all
    hops: list[str] = []
    filtering = cors is not None
    kinds = _kinds(drop, filtering, via, id_field)
    # Joined, not formatted: the names are multidict's `istr`s, which an f-string copies
    # slowly (~2k instructions a field).
    for item in fields.items():
        kind = kinds.get(item[0])
        if kind is None:
            kind = _kind(item[0].lower(), drop, filtering, via, id_field)
            keep_kind(kinds, item[0], kind)
        if not kind:
            lines.append(": ".join(item))
        elif kind == _VARY:
            vary.append(": ".join(item))
        elif kind == _VIA:
            hops.append(item[1])
    if via:
        if hops:
            hops.append(VIA)
            lines.append("Via: " + ", ".join(hops))
        else:  # the origin's response came straight here: most of them
            lines.append(_VIA_LINE)
    varies_by_origin = cors is not None and cors.varies
    if vary_encoding or varies_by_origin:
        added: tuple[str, ...]
        if not varies_by_origin:
            added = _VARY_ACCEPT_ENCODING
        else:
            added = _VARY_BOTH if vary_encoding else _VARY_ORIGIN
        if not vary:  # the origin's response does not vary: most of them
            vary = ["Vary: " + ", ".join(added)]
        else:
            values = [line[line.index(":") + 2 :] for line in vary]
            merged = vary_values(values, added)
            if merged is not values:
                vary = ["Vary: " + value for value in merged]
    lines += vary
    if lines:
        # As checked_lines, by a search for CR or LF before the CRLFs go in: cheaper than
        # counting them after.
        bare = "".join(lines)
        if "\n" in bare or "\r" in bare:
            raise ValueError("a response field holds CR or LF")
        head.append("\r\n".join(lines) + "\r\n")


def checked_lines(lines: list[str]) -> str:
    """`lines`, each one line ending in CRLF, joined; ValueError when one holds another."""
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        # The last line of defence against a field that would split the response, as
        # aiohttp's own serialiser has (the parser lets no such field through).
        raise ValueError("a response field holds CR or LF")
    return text


def length_lines(head: list[str], fields: Headers, length: int) -> None:
    """Content-Length for a body of `length` bytes onto `head`, and what aiohttp's Response
    adds when `fields` lack it."""
    head.append(f"Content-Length: {length}\r\n")
    if length and _TYPE not in fields:
        head.append("Content-Type: application/octet-stream\r\n")
    if _SERVER not in fields and (server := server_field()) is not None:
        head.append(f"Server: {server}\r\n")  # as aiohttp's own responses (listen.server_header)
