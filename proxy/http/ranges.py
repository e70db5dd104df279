"""Byte ranges (RFC 9110 §14): pure decisions, no I/O.

Only what a cache needs to serve ranges from what it stored, and to ask the origin for
them: one range per request (several ranges get the whole 200, which §14.2 allows),
`If-Range` with a strong ETag or the exact Last-Modified date, 416 for a range past the
end, and the one form of `Content-Range` a part may be stored with. Anything else (an
invalid header, another unit) is ignored and the whole response is sent, as §14.2 says a
server may.
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


class RangeSpec(NamedTuple):
    """One range as asked for (§14.1.2), before the length is known."""

    first: int | None  # None: a suffix, the last `last` bytes
    last: int | None  # None: to the end

    def header(self) -> str:
        """The Range value asking for it, written by us (never a client's raw value)."""
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"bytes={first}-{last}"


def parse(range_value: str) -> RangeSpec | None:
    """The one range a Range value asks for; None: ignore it, send it all."""
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
    if first == "":
        return RangeSpec(None, int(last))
    if last != "" and int(last) < int(first):
        return None  # syntactically invalid (§14.1.1): ignored
    return RangeSpec(int(first), None if last == "" else int(last))


def resolve(spec: RangeSpec, length: int) -> ByteRange | Unsatisfiable:
    """The bytes `spec` asks for of `length`; Unsatisfiable (416)."""
    if spec.first is None:  # suffix: the last N bytes
        n = spec.last or 0
        if n == 0 or length == 0:
            return Unsatisfiable(length)
        return ByteRange(max(0, length - n), length - 1)
    if spec.first >= length:
        return Unsatisfiable(length)
    end = length - 1 if spec.last is None else min(spec.last, length - 1)
    return ByteRange(spec.first, end)


def select(range_value: str, length: int) -> ByteRange | Unsatisfiable | None:
    """The one range to send of `length` bytes; Unsatisfiable (416); None: send it all."""
    spec = parse(range_value)
    return None if spec is None else resolve(spec, length)


def of(part: ByteRange) -> RangeSpec:
    """The spec asking for exactly `part`."""
    return RangeSpec(part.start, part.end)


def received(values: list[str], asked: RangeSpec) -> tuple[ByteRange, int] | None:
    """The part a 206 to `asked` holds and the complete length, if it may be stored (§14.4):
    exactly one `Content-Range: bytes a-b/N` with N known, and a-b inside what was asked.
    None: anything else (several ranges, `*/`, out of bounds), which is only relayed."""
    if len(values) != 1 or len(values[0]) > _MAX_RANGE_HEADER:
        return None
    unit, _, rest = values[0].strip().partition(" ")
    span, slash, total = rest.strip().partition("/")
    first, dash, last = span.partition("-")
    numbers = (first, last, total)
    if unit.lower() != "bytes" or not slash or not dash:
        return None
    if not all(n.isdigit() and n.isascii() for n in numbers):
        return None
    part, length = ByteRange(int(first), int(last)), int(total)
    if not part.start <= part.end < length:
        return None
    wanted = resolve(asked, length)
    if isinstance(wanted, Unsatisfiable):
        return None
    if part.start < wanted.start or part.end > wanted.end:
        return None
    return part, length


def strong_etag(headers: Headers) -> str | None:
    """The ETag if it is strong: the one validator parts may be combined by (RFC 9111
    §3.4) and asked for with If-Range (§13.1.5)."""
    etag = headers.get("ETag")
    if etag is None:
        return None
    etag = etag.strip()
    return etag if etag.startswith('"') else None


def if_range_allows(if_range: str | None, stored: Headers) -> bool:
    """§13.1.5: the range applies only while the representation is the one the client has.
    A strong ETag must match exactly; a date must equal Last-Modified (weak: never)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return strong_etag(stored) == value
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
