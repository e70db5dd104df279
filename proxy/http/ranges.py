"""Byte ranges cut from a stored response (RFC 9110 §14): pure decisions, no I/O.

Only what a cache needs to serve ranges from a complete stored 200: one range per request
(several ranges get the whole 200, which §14.2 allows), `If-Range` with a
strong ETag or the exact Last-Modified date, 416 for a range past the end. Anything else
(an invalid header, another unit) is ignored and the whole response is sent, as §14.2 says
a server may.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from proxy.http.dates import parse_http_date
from proxy.http.headers import Headers

_MAX_RANGE_HEADER: Final = 256  # longer Range values are ignored unread


class ByteRange(NamedTuple):
    start: int
    end: int  # inclusive, as in Content-Range


class Unsatisfiable(NamedTuple):
    length: int


def select(range_value: str, length: int) -> ByteRange | Unsatisfiable | None:
    """The one range to send of `length` bytes; Unsatisfiable (416); None: send it all."""
    if len(range_value) > _MAX_RANGE_HEADER:
        return None
    unit, sep, spec = range_value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None  # isdigit() is also true for non-ASCII digits: checked below
    if not (first + last).isascii() or (first == "" and last == ""):
        return None
    if first == "":  # suffix: the last N bytes
        n = int(last)
        if n == 0 or length == 0:
            return Unsatisfiable(length)
        return ByteRange(max(0, length - n), length - 1)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # syntactically invalid (§14.1.1): ignored
    if start >= length:
        return Unsatisfiable(length)
    end = length - 1 if last == "" else min(int(last), length - 1)
    return ByteRange(start, end)


def if_range_allows(if_range: str | None, stored: Headers) -> bool:
    """§13.1.5: the range applies only while the representation is the one the client has.
    A strong ETag must match exactly; a date must equal Last-Modified (weak: never)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        etag = stored.get("ETag")
        return etag is not None and etag.strip() == value
    if value.startswith("W/"):
        return False  # weak validators never satisfy If-Range
    modified = stored.get("Last-Modified")
    if modified is None:
        return False
    when = parse_http_date(value)
    return when is not None and when == parse_http_date(modified)


def content_range(part: ByteRange | Unsatisfiable, length: int) -> str:
    if isinstance(part, Unsatisfiable):
        return f"bytes */{length}"
    return f"bytes {part.start}-{part.end}/{length}"
