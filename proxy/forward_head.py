"""The head of a forwarded answer, made in one pass over the upstream's fields.

A response on its way through (never stored) would otherwise be copied into a header
multidict and changed in place by one stage after another: hop-by-hop fields out, Via
and the cache lines in (`forward_response_headers`), the encoding stage's Vary, CORS's
`apply` and the rate limit's `apply`, before aiohttp writes it all out again. Here the
same answer is written as its lines go by. Only the common case is made here (see
`forward_head`); the general path answers the rest, and the two must agree
(tests/test_prepared.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp.http import SERVER_SOFTWARE
from multidict import istr

from proxy.cache.policy import Headers
from proxy.compression import is_acceptable
from proxy.cors import vary_values
from proxy.headers import HOP_BY_HOP, VIA
from proxy.ratelimit.headers import COUNT_HEADERS, POLICY

if TYPE_CHECKING:
    from proxy.routes import RoutePolicy

# Fields of the upstream's that never go out as they are: hop-by-hop ones, the ones the
# proxy sets itself, and Vary and Via, which it extends.
_SET_HERE = frozenset({"content-length", "x-cache", "cache-status", "vary", "via"})
_DROP = HOP_BY_HOP | _SET_HERE
_DROP_LIMITED = _DROP | {name.lower() for name in (*COUNT_HEADERS, POLICY)}
_CONNECTION, _ENCODING = istr("Connection"), istr("Content-Encoding")
_TYPE, _SERVER, _DATE = istr("Content-Type"), istr("Server"), istr("Date")
_VARY_ACCEPT_ENCODING = ("Accept-Encoding",)
_VARY_BOTH = ("Accept-Encoding", "Origin")
_VARY_ORIGIN = ("Origin",)


def forward_head(
    route: RoutePolicy,
    status: int,
    reason: str,
    fields: Headers,
    request_headers: Headers,
    length: int,
    cache_lines: str,
) -> tuple[bytes, bool] | None:
    """` <status> <reason>` and the header lines of the answer to a GET whose upstream
    response (`status`, `reason`, `fields`) has a body of `length` bytes, sent as it is;
    and whether it has its own Date. `cache_lines`: the X-Cache and Cache-Status lines.

    None: not made here. The answer needs its body (de)compressed, the upstream lists
    fields in Connection, or the rate-limit stage has not run.
    """
    if _CONNECTION in fields:
        return None
    vary_encoding = False
    compression = route.compression
    if compression is not None:
        accept = request_headers.get("Accept-Encoding")
        coding = fields.get(_ENCODING, "").strip().lower()
        if coding and coding != "identity":
            if not is_acceptable(accept, coding):
                return None  # to be decoded, or passed on untouched if it cannot be
            vary_encoding = True
        elif compression.should_compress(status, fields, length):
            if compression.negotiate(accept) is not None:
                return None  # to be encoded
            vary_encoding = True
    limits = ""
    if route.rate_limit is not None:
        lines_of_limit = route.rate_limit.lines()
        if lines_of_limit is None:
            return None
        limits = lines_of_limit
    cors = route.cors

    lines = [f" {status} {reason}\r\n"]
    vary: list[str] = []  # as the origin spelled them, "Vary: " and all
    via: list[str] = []
    drop = _DROP if route.rate_limit is None else _DROP_LIMITED
    for name, value in fields.items():
        low = name.lower()
        if low in drop:
            if low == "vary":
                vary.append(f"{name}: {value}\r\n")
            elif low == "via":
                via.append(value)
        elif cors is None or not low.startswith("access-control-"):
            lines.append(f"{name}: {value}\r\n")
    via.append(VIA)
    lines.append(f"Via: {', '.join(via)}\r\n")
    varies_by_origin = cors is not None and cors.varies
    if vary_encoding or varies_by_origin:
        if not varies_by_origin:
            added = _VARY_ACCEPT_ENCODING
        else:
            added = _VARY_BOTH if vary_encoding else _VARY_ORIGIN
        values = [line[line.index(":") + 2 : -2] for line in vary]
        merged = vary_values(values, added)
        if merged is not values:
            vary = [f"Vary: {value}\r\n" for value in merged]
    lines += vary
    upstream = "".join(lines)
    if upstream.count("\n") != len(lines) or upstream.count("\r") != len(lines):
        # The last line of defence against a field that would split the answer, as
        # aiohttp's own serialiser has (the parser lets no such field through).
        raise ValueError("a response field holds CR or LF")
    lines = [upstream, cache_lines]
    if cors is not None:
        lines.append(cors.answer_lines(request_headers))
    lines.append(limits)
    lines.append(f"Content-Length: {length}\r\n")
    # What aiohttp's Response adds when they are missing.
    if length and _TYPE not in fields:
        lines.append("Content-Type: application/octet-stream\r\n")
    if _SERVER not in fields:
        lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape"), _DATE in fields
