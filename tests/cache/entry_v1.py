"""The entry format version 1 writer, as the release before version 2 shipped it (frozen):
for tests that a value an older instance left in a shared Redis is still read."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from proxy.cache.entry import Entry
from proxy.cache.entry_format import MAGIC

_HEAD = struct.Struct("!4sBI")
_FIXED = struct.Struct("!H4d")
_LEN = struct.Struct("!I")


def encode_v1(
    entry: Entry, variants: Iterable[str] = (), request_time: float | None = None
) -> bytes:
    """`request_time`: version 1 stored it (nothing read it); by default the response time."""
    out: list[bytes] = [
        _FIXED.pack(
            entry.status,
            entry.response_time if request_time is None else request_time,
            entry.response_time,
            entry.initial_age,
            entry.lifetime,
        )
    ]
    for text in (entry.reason, entry.primary, entry.url_key, entry.path):
        _put_str(out, text)
    _put_strs(out, (part for item in entry.headers.items() for part in item))
    for strings in (entry.vary, entry.vary_values, entry.tags):
        _put_strs(out, strings)
    _put_bytes(out, entry.body)
    chosen = [(k, entry.variants[k]) for k in dict.fromkeys(variants) if k in entry.variants]
    out.append(_LEN.pack(len(chosen)))
    for key, (headers, body) in chosen:
        _put_str(out, key)
        _put_strs(out, (part for item in headers.items() for part in item))
        _put_bytes(out, body)
    payload = b"".join(out)
    return _HEAD.pack(MAGIC, 1, zlib.crc32(payload)) + payload


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_LEN.pack(len(data)))
    out.append(data)


def _put_str(out: list[bytes], text: str) -> None:
    _put_bytes(out, text.encode("utf-8", "surrogateescape"))


def _put_strs(out: list[bytes], strings: Iterable[str]) -> None:
    items = list(strings)
    out.append(_LEN.pack(len(items)))
    for text in items:
        _put_str(out, text)
