"""The byte format of a stored entry, for shared stores (Redis): ours, versioned, never pickle.

A value read back from a shared store was written by another process, maybe another
version of us, maybe something else entirely. Decoding it must never run code, never
crash and never serve half a response: anything that is not exactly what `encode`
wrote (truncated, corrupt, another version, foreign bytes) raises `EntryFormatError`,
which callers count and treat as a miss.

Layout (integers big-endian)::

    magic  b"\\x89CPE"   4 bytes; the high bit catches 7-bit mangling, like PNG's
    version            1 byte
    crc32              4 bytes, of everything after it (version 3: and of the version)
    tag                version 3 only: 32 bytes, HMAC-SHA-256 of the fields
    fields             versions 2 and 3: see _FIXED2, then the strings it gives the
                       lengths of, then the lists (Vary, its values, tags) and the
                       encoded variants chosen by the caller, each length-prefixed.
                       Version 1 (read only): see _decode_v1.

A checksum is no signature: anyone who can write to the shared Redis can write a valid
entry. With `cache.key_secret` set, entries are written as version 3, authenticated with
an HMAC under a key derived from the secret, and only such entries are read (anything
else raises `Unauthenticated`, a miss the caller counts); the tag covers the primary key
inside the entry, so an entry moved under another key is still refused (the caller checks
the key). In every case the fields that frame a message or belong to one connection
(Transfer-Encoding, Connection and what it names, Keep-Alive, ..., a Content-Length that
is not the body's) are dropped from what is read, and a head whose field names are not
tokens is refused: they can only come from something else writing there, and would let it
split the responses on a client's connection.

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
import hmac
import re
import struct
import zlib
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.entry import (
    NO_VARIANTS,
    Entry,
    EntryExtras,
    pack_headers,
    unpack_headers,
    variant_size,
)
from proxy.http.headers import HOP_BY_HOP

MAGIC = b"\x89CPE"
VERSION = 2
AUTHENTICATED = 3
READS = (1, 2, 3)

_HEAD = struct.Struct("!4sBI")  # magic, version, crc32
_TAG = 32  # bytes of HMAC-SHA-256
# Version 3's checksum starts from its version byte: a version 2 value with that byte
# changed is not a version 3 one, nor the other way round.
_V3_CRC = zlib.crc32(bytes([AUTHENTICATED]))
# status, flags, response_time, initial_age, lifetime; byte lengths of reason, primary,
# url_key, own path, head, body; counts of vary, vary_values, tags, variants.
_FIXED2 = struct.Struct("!HB3d6I4I")
_OWN_PATH = 1  # flag: the path is not the URL key's own (EntryExtras.path); else its length is 0
_FIXED1 = struct.Struct("!H4d")  # status, request_time, response_time, initial_age, lifetime
_LEN = struct.Struct("!I")
_COUNT = struct.Struct("!I")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Fields of a packed head that decoding looks at, by lower-case name: framing and hop-by-hop
# ones (RFC 9110 §7.6.1) and Content-Length (checked against the body), to be dropped; those
# `policy.effective_cache_control` reads. Most lines are neither.
_FRAMING = HOP_BY_HOP | {"content-length"}
_DIRECTIVES = frozenset({"cache-control", "cdn-cache-control", "surrogate-control"})
_LOOKED_AT = _FRAMING | _DIRECTIVES


class EntryFormatError(ValueError):
    """Bytes that are not an entry this version wrote; treat as a miss."""


class Unauthenticated(EntryFormatError):
    """An entry without a valid tag, read by an instance with `key_secret`."""


def auth_key(secret: bytes) -> bytes:
    """The key entries are authenticated with: derived, so that the secret's other use
    (hashing credentials in cache keys) never sees the same key."""
    return hmac.digest(secret, b"cacheproxy shared entry authentication", "sha256")


def encode(entry: Entry, variants: Iterable[str] = (), auth: bytes | None = None) -> bytes:
    """The entry as bytes (version 2; version 3, authenticated, with the `auth_key`
    `auth`), with those of its encoded `variants` that exist. Parts (proxy/cache/parts.py)
    live in each instance's memory only: this format has no room for them."""
    if entry.parts is not None:
        raise ValueError("parts are not shared")
    own_path = None if entry.extras is None else entry.extras.path
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
    if auth is None:
        return _HEAD.pack(MAGIC, VERSION, zlib.crc32(payload)) + payload
    tagged = hmac.digest(auth, payload, "sha256") + payload
    return _HEAD.pack(MAGIC, AUTHENTICATED, zlib.crc32(tagged, _V3_CRC)) + tagged


def decode(data: bytes, auth: bytes | None = None) -> Entry:
    """The entry `encode` (this version or version 1) wrote, or EntryFormatError. With
    `auth` (an `auth_key`), only a version 3 entry with a valid tag; without, any version
    (a tag is then not checked: this instance trusts Redis as it is)."""
    if len(data) < _HEAD.size:
        raise EntryFormatError("too short to be an entry")
    magic, version, crc = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise EntryFormatError("not an entry (foreign bytes)")
    if version not in READS:
        raise EntryFormatError(f"entry format version {version}, this reads {READS}")
    view = memoryview(data)
    if zlib.crc32(view[_HEAD.size :], _V3_CRC if version == AUTHENTICATED else 0) != crc:
        raise EntryFormatError("checksum mismatch (corrupt or truncated)")
    start = _HEAD.size
    if version == AUTHENTICATED:
        start += _TAG
        if len(data) < start:
            raise EntryFormatError("too short to be an entry")
    if auth is not None:
        if version != AUTHENTICATED:
            raise Unauthenticated("an entry without a tag")
        tag = hmac.digest(auth, view[start:], "sha256")
        if not hmac.compare_digest(tag, view[_HEAD.size : start]):
            raise Unauthenticated("an entry whose tag is not ours")
    try:
        return _decode_v1(data) if version == 1 else _decode_v2(data, start)
    except (struct.error, UnicodeDecodeError) as exc:
        raise EntryFormatError(f"malformed entry: {exc}") from None


def _decode_v2(data: bytes, start: int) -> Entry:
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
    ) = _FIXED2.unpack_from(data, start)
    if flags & ~_OWN_PATH:
        raise EntryFormatError(f"unknown flags {flags:#x}")
    if lengths[3] and not flags & _OWN_PATH:
        raise EntryFormatError("a path where none belongs")
    pos = start + _FIXED2.size
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
    head, cc = _checked_head(head, len(body))
    own_path = path if flags & _OWN_PATH else None
    extras = None if own_path is None else EntryExtras(path=own_path)
    variants: dict[str, tuple[CIMultiDictProxy[str], bytes]] = {}
    grown = 0
    if end != len(data) or n_vary or n_values or n_tags or n_variants:  # not the common entry
        reader = _Reader(memoryview(data), end)
        vary, vary_values, tags = (reader.texts(n) for n in (n_vary, n_values, n_tags))
        if vary or vary_values or tags:
            extras = EntryExtras(vary, vary_values, tags, own_path)
        for _ in range(n_variants):
            key = reader.text()
            headers = reader.headers()
            variants[key] = (headers, reader.bytes())
        if not reader.at_end():
            raise EntryFormatError("trailing bytes after the entry")
        variants = {k: (_safe_fields(h, len(b)), b) for k, (h, b) in variants.items()}
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
        cc=cc,
        primary=primary,
        url_key=url_key,
        extras=extras,
        grown=grown,
        variants=variants or NO_VARIANTS,
    )


def _checked_head(head: str, length: int) -> tuple[str, policy.CacheControl]:
    """`head` without framing and hop-by-hop lines (see the module docstring), and the
    cache directives it gives. Remembered for the last heads checked (up to 4 KB each: at
    most 1 MB in all): an entry read from Redis again (one memory does not keep: too
    large, or memory full) is checked once, not on every read (~33k instructions, a
    twelfth of an L2 hit; a head seen again costs a hash of it)."""
    if len(head) <= _REMEMBERED_HEAD:
        return _remembered_head(head, length)
    return _check_head(head, length)


_REMEMBERED_HEAD = 4096


def _check_head(head: str, length: int) -> tuple[str, policy.CacheControl]:
    """`_checked_head`, worked out: one pass over the head's lines (a regular expression
    tried at each position of the head cost several times more)."""
    directives = []
    framed = False
    for line in head.split("\n") if head else ():
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise EntryFormatError("a stored header line that is not a field")
        low = name.lower()
        if low in _LOOKED_AT:
            if low in _DIRECTIVES:
                directives.append((low, value))
            elif low != "content-length" or value.strip() != str(length):
                framed = True
    if framed:  # rare in what we store: the fields rebuilt without them, then read again
        return _checked_head(pack_headers(_safe_fields(unpack_headers(head), length)), length)
    return head, _cache_control(tuple(directives))


_remembered_head = functools.lru_cache(maxsize=256)(_check_head)


def _safe_fields(
    fields: CIMultiDictProxy[str] | CIMultiDict[str], length: int
) -> CIMultiDictProxy[str]:
    """`fields` without framing and hop-by-hop ones; EntryFormatError for a name that is
    not a token."""
    drop = set(HOP_BY_HOP)
    for value in fields.getall("Connection", ()):
        drop.update(token.strip().lower() for token in value.split(","))
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in fields.items():
        if not _TOKEN.fullmatch(name):
            raise EntryFormatError("a stored header name that is not a token")
        low = name.lower()
        if low not in drop and (low != "content-length" or value.strip() == str(length)):
            kept.add(name, value)
    return CIMultiDictProxy(kept)


@functools.lru_cache(maxsize=256)
def _cache_control(lines: tuple[tuple[str, str], ...]) -> policy.CacheControl:
    """Entries of one route mostly share their directives: parsed once (frozen: shareable)."""
    return policy.effective_cache_control(CIMultiDict(lines))


def _decode_v1(data: bytes) -> Entry:
    """Version 1: the fixed fields (with a request time, unused since), the strings, the
    headers as a list of names and values, the lists, the body, the variants."""
    reader = _Reader(memoryview(data), _HEAD.size)
    status, _, response_time, initial_age, lifetime = reader.fixed(_FIXED1)
    reason, primary, url_key, path = (reader.text() for _ in range(4))
    if "\r" in reason or "\n" in reason:
        raise EntryFormatError("a line break inside a stored field")
    headers = reader.headers()
    vary, vary_values, tags = (reader.texts(reader.count()) for _ in range(3))
    body = reader.bytes()
    headers = _safe_fields(headers, len(body))
    variants = {}
    for _ in range(reader.count()):
        key = reader.text()
        fields = reader.headers()
        data_ = reader.bytes()
        variants[key] = (_safe_fields(fields, len(data_)), data_)
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
        extras=EntryExtras.of(vary, vary_values, tags, path, url_key),
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
        return values

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

    def text(self) -> str:
        return self.bytes().decode("utf-8", "surrogateescape")

    def texts(self, n: int) -> tuple[str, ...]:
        return tuple(self.text() for _ in range(n))

    def headers(self) -> CIMultiDictProxy[str]:
        flat = self.texts(self.count())
        if len(flat) % 2:
            raise struct.error("a header without a value")
        if any("\r" in text or "\n" in text for text in flat):
            raise EntryFormatError("a line break inside a stored field")
        return CIMultiDictProxy(CIMultiDict(zip(flat[::2], flat[1::2], strict=True)))

    def at_end(self) -> bool:
        return self._pos == len(self._data)
