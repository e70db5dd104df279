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
    fields             version 2 (written): see _FIXED2, then the strings it gives the
                       lengths of, then the lists (Vary, its values, tags) and the
                       encoded variants chosen by the caller, each length-prefixed.
                       Version 1 (read only): see _decode_v1.

Version 2 keeps the entry's packed head (Entry.head) as it is, so decoding is a few
slices: version 1 stored header lists, rebuilt into a multidict on every read only to be
packed again. Version 1 values are still read: instances in the middle of an upgrade
share one Redis, and an operator upgrading one instance at a time expects the others'
entries to stay hits, not to become a wave of misses towards the origin. (An older
instance reading a version 2 value counts it as unreadable and misses, as it always did
for versions it does not know.)

Strings are written as UTF-8 with surrogateescape: aiohttp decodes header bytes that
are not UTF-8 that way, and they must come back exactly as they were.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.entry import NO_VARIANTS, Entry, Rare, pack_headers, variant_size

MAGIC = b"\x89CPE"
VERSION = 2
READS = (1, 2)

_HEAD = struct.Struct("!4sBI")  # magic, version, crc32
# status, flags, response_time, initial_age, lifetime; byte lengths of reason, primary,
# url_key, own path, head, body; counts of vary, vary_values, tags, variants.
_FIXED2 = struct.Struct("!HB3d6I4I")
_OWN_PATH = 1  # flag: the path is not the URL key's own (Rare.path); else its length is 0
_FIXED1 = struct.Struct("!H4d")  # status, request_time, response_time, initial_age, lifetime
_LEN = struct.Struct("!I")
_COUNT = struct.Struct("!I")
# The lines of a packed head that `policy.effective_cache_control` reads, as
# unpack_headers would split them (name up to the first colon, any case).
_CC_LINE = re.compile(r"^((?:cdn-)?cache-control):(.*)$", re.IGNORECASE | re.MULTILINE | re.ASCII)
_CC_NAME = "cache-control:"


class EntryFormatError(ValueError):
    """Bytes that are not an entry this version wrote; treat as a miss."""


def encode(entry: Entry, variants: Iterable[str] = ()) -> bytes:
    """The entry as bytes (version 2), with those of its encoded `variants` that exist."""
    own_path = None if entry.rare is None else entry.rare.path
    texts = (entry.reason, entry.primary, entry.url_key, own_path or "", entry.head)
    strings = [_utf8(text) for text in texts]
    chosen = [(k, entry.variants[k]) for k in dict.fromkeys(variants) if k in entry.variants]
    vary, vary_values, tags = entry.vary, entry.vary_values, entry.tags
    out: list[bytes] = [
        _FIXED2.pack(
            entry.status,
            0 if own_path is None else _OWN_PATH,
            entry.response_time,
            entry.initial_age,
            entry.lifetime,
            *(len(s) for s in strings),
            len(entry.body),
            len(vary),
            len(vary_values),
            len(tags),
            len(chosen),
        ),
        *strings,
        entry.body,
    ]
    for text in (*vary, *vary_values, *tags):
        _put_str(out, text)
    for key, (headers, body) in chosen:
        _put_str(out, key)
        _put_strs(out, (part for item in headers.items() for part in item))
        _put_bytes(out, body)
    payload = b"".join(out)
    return _HEAD.pack(MAGIC, VERSION, zlib.crc32(payload)) + payload


def decode(data: bytes) -> Entry:
    """The entry `encode` (this version or version 1) wrote, or EntryFormatError."""
    if len(data) < _HEAD.size:
        raise EntryFormatError("too short to be an entry")
    magic, version, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise EntryFormatError("not an entry (foreign bytes)")
    if version not in READS:
        raise EntryFormatError(f"entry format version {version}, this reads {READS}")
    if zlib.crc32(memoryview(data)[_HEAD.size :]) != crc:
        raise EntryFormatError("checksum mismatch (corrupt or truncated)")
    try:
        return _decode_v2(data) if version == 2 else _decode_v1(data)
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryFormatError(f"malformed entry: {exc}") from None


def _decode_v2(data: bytes) -> Entry:
    (
        status,
        flags,
        response_time,
        initial_age,
        lifetime,
        *lengths,
        n_vary,
        n_values,
        n_tags,
        n_variants,
    ) = _FIXED2.unpack_from(data, _HEAD.size)
    if flags & ~_OWN_PATH:
        raise EntryFormatError(f"unknown flags {flags:#x}")
    if lengths[3] and not flags & _OWN_PATH:
        raise EntryFormatError("a path where none belongs")
    pos = _HEAD.size + _FIXED2.size
    texts = []
    for n in lengths[:5]:
        end = pos + n
        texts.append(data[pos:end].decode("utf-8", "surrogateescape"))
        pos = end
    reason, primary, url_key, path, head = texts
    if "\r" in head or "\r" in reason or "\n" in reason:
        # Lines split by "\n" only: a CR would reach the client as a line of its own.
        raise EntryFormatError("a line break inside a stored field")
    end = pos + lengths[5]
    if end > len(data):
        raise struct.error("a length runs past the end")
    body = data[pos:end]
    own_path = path if flags & _OWN_PATH else None
    rare = None if own_path is None else Rare(path=own_path)
    variants: dict[str, tuple[CIMultiDictProxy[str], bytes]] = {}
    grown = 0
    if end != len(data) or n_vary or n_values or n_tags or n_variants:  # not the common entry
        reader = _Reader(memoryview(data), end)
        vary, vary_values, tags = (reader.strs(n) for n in (n_vary, n_values, n_tags))
        if vary or vary_values or tags:
            rare = Rare(vary, vary_values, tags, own_path)
        for _ in range(n_variants):
            key = reader.str()
            variants[key] = (reader.headers(), reader.bytes())
        if not reader.at_end():
            raise EntryFormatError("trailing bytes after the entry")
        # Counted as MemoryStore.add_variant counts them when an entry is promoted.
        grown = sum(variant_size(h) + len(b) for h, b in variants.values())
    return Entry(
        status=status,
        reason=reason,
        head=head,
        body=body,
        response_time=response_time,
        initial_age=initial_age,
        lifetime=lifetime,
        cc=_cache_control(_cc_lines(head)),
        primary=primary,
        url_key=url_key,
        rare=rare,
        grown=grown,
        variants=variants or NO_VARIANTS,
    )


def _cc_lines(head: str) -> tuple[tuple[str, str], ...]:
    """The (CDN-)Cache-Control lines of a packed head, as unpack_headers splits lines."""
    low = head.lower()
    if len(low) != len(head):  # a character whose lower case is longer: offsets differ
        return tuple((name.lower(), value) for name, value in _CC_LINE.findall(head))
    lines = []
    i = low.find(_CC_NAME)
    while i >= 0:
        start = i - 4 if i >= 4 and low.startswith("cdn-", i - 4) else i
        if start == 0 or low[start - 1] == "\n":
            end = low.find("\n", i)
            value = head[i + len(_CC_NAME) : end if end >= 0 else len(head)]
            lines.append((low[start : i + len(_CC_NAME) - 1], value))
        i = low.find(_CC_NAME, i + len(_CC_NAME))
    return tuple(lines)


@functools.lru_cache(maxsize=256)
def _cache_control(lines: tuple[tuple[str, str], ...]) -> policy.CacheControl:
    """Entries of one route mostly share their directives: parsed once (frozen: shareable)."""
    return policy.effective_cache_control(CIMultiDict(lines))


def _decode_v1(data: bytes) -> Entry:
    """Version 1: the fixed fields (with a request time, unused since), the strings, the
    headers as a list of names and values, the lists, the body, the variants."""
    reader = _Reader(memoryview(data), _HEAD.size)
    status, _, response_time, initial_age, lifetime = reader.fixed(_FIXED1)
    reason, primary, url_key, path = (reader.str() for _ in range(4))
    if "\r" in reason or "\n" in reason:
        raise EntryFormatError("a line break inside a stored field")
    headers = reader.headers()
    vary, vary_values, tags = (reader.strs(reader.count()) for _ in range(3))
    body = reader.bytes()
    variants = {}
    for _ in range(reader.count()):
        key = reader.str()
        variants[key] = (reader.headers(), reader.bytes())
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
        grown=sum(variant_size(h) + len(b) for h, b in variants.values()),
        variants=variants or NO_VARIANTS,
    )


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _put_bytes(out: list[bytes], data: bytes) -> None:
    out.append(_LEN.pack(len(data)))
    out.append(data)


def _put_str(out: list[bytes], text: str) -> None:
    _put_bytes(out, _utf8(text))


def _put_strs(out: list[bytes], strings: Iterable[str]) -> None:
    items = list(strings)
    out.append(_COUNT.pack(len(items)))
    for text in items:
        _put_str(out, text)


class _Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: memoryview, pos: int) -> None:
        self._data = data
        self._pos = pos

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

    def strs(self, n: int) -> tuple[str, ...]:
        return tuple(self.str() for _ in range(n))

    def headers(self) -> CIMultiDictProxy[str]:
        flat = self.strs(self.count())
        if len(flat) % 2:
            raise struct.error("a header without a value")
        if any("\r" in text or "\n" in text for text in flat):
            raise EntryFormatError("a line break inside a stored field")
        return CIMultiDictProxy(CIMultiDict(zip(flat[::2], flat[1::2], strict=True)))

    def at_end(self) -> bool:
        return self._pos == len(self._data)
