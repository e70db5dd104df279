"""The byte format of a stored entry, for shared stores (Redis): ours, versioned, never pickle.

A value read back from a shared store was written by another process, maybe another
version of us, maybe something else entirely. Decoding it must never run code, never
crash and never serve half a response: anything that is not exactly what `encode`
wrote (truncated, corrupt, another version, foreign bytes) raises `EntryFormatError`,
which callers count and treat as a miss.

Layout (integers big-endian)::

    magic  b"\\x89CPE"   4 bytes; the high bit catches 7-bit mangling, like PNG's
    version            1 byte
    crc32              4 bytes, of everything after it
    fields             see _write_fields: status, times, strings, header lists,
                       body, then the encoded variants chosen by the caller

Strings are written as UTF-8 with surrogateescape: aiohttp decodes header bytes that
are not UTF-8 that way, and they must come back exactly as they were.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.entry import NO_VARIANTS, Entry, Rare, pack_headers, variant_size

MAGIC = b"\x89CPE"
VERSION = 1

_HEAD = struct.Struct("!4sBI")  # magic, version, crc32
_FIXED = struct.Struct("!H4d")  # status, request_time, response_time, initial_age, lifetime
_LEN = struct.Struct("!I")
_COUNT = struct.Struct("!I")


class EntryFormatError(ValueError):
    """Bytes that are not an entry this version wrote; treat as a miss."""


def encode(entry: Entry, variants: Iterable[str] = ()) -> bytes:
    """The entry as bytes, with those of its encoded `variants` that exist."""
    out: list[bytes] = [
        _FIXED.pack(
            entry.status,
            entry.response_time,  # the request time: read by nothing, no longer kept
            entry.response_time,
            entry.initial_age,
            entry.lifetime,
        )
    ]
    for text in (entry.reason, entry.primary, entry.url_key, entry.path):
        _put_str(out, text)
    _put_headers(out, entry.headers)
    for strings in (entry.vary, entry.vary_values, entry.tags):
        _put_strs(out, strings)
    _put_bytes(out, entry.body)
    chosen = [(k, entry.variants[k]) for k in dict.fromkeys(variants) if k in entry.variants]
    out.append(_COUNT.pack(len(chosen)))
    for key, (headers, body) in chosen:
        _put_str(out, key)
        _put_headers(out, headers)
        _put_bytes(out, body)
    payload = b"".join(out)
    return _HEAD.pack(MAGIC, VERSION, zlib.crc32(payload)) + payload


def decode(data: bytes) -> Entry:
    """The entry `encode` wrote, or EntryFormatError."""
    if len(data) < _HEAD.size:
        raise EntryFormatError("too short to be an entry")
    magic, version, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise EntryFormatError("not an entry (foreign bytes)")
    if version != VERSION:
        raise EntryFormatError(f"entry format version {version}, this is {VERSION}")
    view = memoryview(data)[_HEAD.size :]
    if zlib.crc32(view) != crc:
        raise EntryFormatError("checksum mismatch (corrupt or truncated)")
    reader = _Reader(view)
    try:
        status, _, response_time, initial_age, lifetime = reader.fixed(_FIXED)
        reason, primary, url_key, path = (reader.str() for _ in range(4))
        headers = reader.headers()
        vary, vary_values, tags = (reader.strs() for _ in range(3))
        body = reader.bytes()
        variants = {}
        for _ in range(reader.count()):
            key = reader.str()
            variants[key] = (reader.headers(), reader.bytes())
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryFormatError(f"malformed entry: {exc}") from None
    if not reader.at_end():
        raise EntryFormatError("trailing bytes after the entry")
    return Entry(
        status=status,
        reason=reason,
        head=pack_headers(headers),
        body=body,
        response_time=response_time,
        initial_age=initial_age,
        lifetime=lifetime,
        cc=policy.effective_cache_control(headers),
        primary=primary,
        url_key=url_key,
        rare=Rare.of(vary, vary_values, tags, path, url_key),
        # Counted as MemoryStore.add_variant counts them when an entry is promoted.
        grown=sum(variant_size(h) + len(b) for h, b in variants.values()),
        variants=variants or NO_VARIANTS,
    )


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_LEN.pack(len(data)))
    out.append(data)


def _put_str(out: list[bytes], text: str) -> None:
    _put_bytes(out, text.encode("utf-8", "surrogateescape"))


def _put_strs(out: list[bytes], strings: Iterable[str]) -> None:
    items = list(strings)
    out.append(_COUNT.pack(len(items)))
    for text in items:
        _put_str(out, text)


def _put_headers(out: list[bytes], headers: policy.Headers) -> None:
    _put_strs(out, (part for item in headers.items() for part in item))


class _Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def fixed(self, layout: struct.Struct) -> tuple[int, float, float, float, float]:
        values = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return values  # type: ignore[no-any-return]

    def count(self) -> int:
        (n,) = _COUNT.unpack_from(self._data, self._pos)
        self._pos += _COUNT.size
        return int(n)

    def bytes(self) -> bytes:
        (n,) = _LEN.unpack_from(self._data, self._pos)
        start = self._pos + _LEN.size
        if start + n > len(self._data):
            raise struct.error("a length runs past the end")
        self._pos = start + n
        return self._data[start : self._pos].tobytes()

    def str(self) -> str:
        return self.bytes().decode("utf-8", "surrogateescape")

    def strs(self) -> tuple[str, ...]:
        return tuple(self.str() for _ in range(self.count()))

    def headers(self) -> CIMultiDictProxy[str]:
        flat = self.strs()
        if len(flat) % 2:
            raise struct.error("a header without a value")
        return CIMultiDictProxy(CIMultiDict(zip(flat[::2], flat[1::2], strict=True)))

    def at_end(self) -> bool:
        return self._pos == len(self._data)
