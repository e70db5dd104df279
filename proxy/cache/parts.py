"""Stored parts of one representation (RFC 9111 §3.3, §3.4): pure decisions, no I/O.

206 responses are kept as `Parts` on an entry of their own, under `parts_key(primary)`, a
key no complete entry has: the hit path (MemoryStore.get of the primary key, prepared
responses, coalesced waiters of a plain GET) can never find them. Parts of one strong ETag
combine; parts that cover the whole representation become a complete entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from proxy.http.headers import Headers
from proxy.http.ranges import ByteRange, strong_etag

_PARTS: Final = "\x1e"  # after a primary key: its parts (keys hold no control characters)
# What one span costs beyond its bytes: its tuple, int and bytes objects (see ENTRY_OVERHEAD).
SPAN_OVERHEAD: Final = 120


def parts_key(primary: str) -> str:
    """The store key of the parts kept for `primary`."""
    return primary + _PARTS


@dataclass(frozen=True, slots=True)
class Parts:
    length: int  # of the complete representation (Content-Range's complete-length)
    # (first byte position, bytes), sorted, neither overlapping nor touching.
    spans: tuple[tuple[int, bytes], ...] = ()

    def size(self) -> int:
        """Bytes they hold, overheads included."""
        return sum(len(data) + SPAN_OVERHEAD for _, data in self.spans)

    def add(self, start: int, data: bytes) -> Parts:
        """These parts with `data` at `start`: where they overlap, the newer bytes win."""
        end = start + len(data)  # exclusive
        kept: list[tuple[int, bytes]] = []
        for s, d in self.spans:
            e = s + len(d)
            if e < start or s > end:  # apart (not even touching): kept as it is
                kept.append((s, d))
                continue
            # Touching or overlapping: merged into the new span.
            if s < start:
                data, start = d[: start - s] + data, s
            if e > end:
                data, end = data + d[end - s :], e
        kept.append((start, data))
        kept.sort(key=lambda span: span[0])
        return Parts(self.length, tuple(kept))

    def _span_holding(self, part: ByteRange) -> tuple[int, bytes] | None:
        for s, d in self.spans:
            if s <= part.start and part.end < s + len(d):
                return s, d
        return None

    def covers(self, part: ByteRange) -> bool:
        return self._span_holding(part) is not None

    def cut(self, part: ByteRange) -> bytes:
        """The bytes of `part`, which they must cover."""
        span = self._span_holding(part)
        assert span is not None
        s, d = span
        return d[part.start - s : part.end + 1 - s]

    def missing(self, part: ByteRange) -> ByteRange | None:
        """The smallest single range holding every byte of `part` they lack (from the first
        missing byte to the last: one request, gaps and all); None: they cover it."""
        first, last = part.start, part.end
        for s, d in self.spans:  # sorted: the first missing byte moves right
            if s <= first < s + len(d):
                first = s + len(d)
        for s, d in reversed(self.spans):  # and the last one left
            if s <= last < s + len(d):
                last = s - 1
        return ByteRange(first, last) if first <= last else None

    def whole(self) -> bytes | None:
        """The complete representation, when they cover it."""
        if len(self.spans) == 1 and self.spans[0][0] == 0 and len(self.spans[0][1]) == self.length:
            return self.spans[0][1]
        return None


def combinable(stored: Headers, new: Headers, stored_length: int, new_length: int) -> bool:
    """§3.4: a stored part and a new one may be combined only when both carry the same
    strong validator (an ETag: we keep no other) and so the same representation."""
    etag = strong_etag(new)
    return etag is not None and etag == strong_etag(stored) and stored_length == new_length
