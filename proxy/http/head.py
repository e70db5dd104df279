"""A strict parse of one whole request head, for the listener's own reading (server/listener.py).

aiohttp's parser (llhttp, then a yarl URL, CIMultiDict fields, a RawRequestMessage) costs about
as much as the rest of a memory hit. The stages need only the method, the target as sent and
the fields, so a head that is exactly one `GET`/`HEAD` in HTTP/1.1, kept alive, without a
body, is read here instead (answered on the fast path, or handled on the connection's own
task); anything this parse does not accept goes to aiohttp's parser as ever, which stays the
authority on every request the listener does not read.

So it accepts only what aiohttp reads the same way (tests/http/test_head.py compares the two
on generated heads): an origin-form target of RFC 3986 characters, single spaces, CRLF line
ends, token field names, values of visible ASCII, space and tab, at most MAX_FIELDS fields in
MAX_HEAD bytes, a Host field, no two of a field aiohttp takes once. It refuses (None) anything
that could make it read the bytes differently from aiohttp: a body (Content-Length or
Transfer-Encoding, of any value), Upgrade, Expect, a Connection field other than `keep-alive`,
obs-fold, bare CR or LF, control characters, non-ASCII bytes, HTTP/1.0 or other versions,
absolute-form and asterisk targets, bytes after the head.
"""

from __future__ import annotations

import re

from aiohttp import hdrs
from aiohttp.http import HttpVersion, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy, istr

# Below the listener's HEAD_LIMITS (a field of MAX_HEAD bytes is within max_field_size): a
# head aiohttp would refuse for its size is never accepted here.
MAX_HEAD = 8 * 1024
MAX_FIELDS = 100

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Each byte a target may hold (RFC 3986's characters but "#", all of which aiohttp's parser
# takes) maps to itself, any other to 0.
_TARGET = bytes(
    b if chr(b) in "-._~%!$&'()*+,;=:@/?" or (chr(b).isalnum() and b < 0x80) else 0
    for b in range(256)
)
# Each byte a field line may hold (visible ASCII, SP, HTAB) maps to itself, any other to 0.
_TEXT = bytes(b if 0x20 <= b < 0x7F or b == 0x09 else 0 for b in range(256))

# What a field's name asks of the parse (none for most).
_PLAIN, _SINGLETON, _REFUSE, _CONNECTION = 0, 1, 2, 3
# aiohttp refuses a second of these (its parser's SINGLETON_HEADERS).
_SINGLETONS = {
    hdrs.CONTENT_LOCATION,
    hdrs.CONTENT_RANGE,
    hdrs.CONTENT_TYPE,
    hdrs.ETAG,
    hdrs.HOST,
    hdrs.MAX_FORWARDS,
    hdrs.SERVER,
    hdrs.USER_AGENT,
}
# A body, a protocol switch, an interim response, the old WebSocket handshake aiohttp refuses.
_REFUSED = {
    hdrs.CONTENT_LENGTH,
    hdrs.TRANSFER_ENCODING,
    hdrs.UPGRADE,
    hdrs.EXPECT,
    hdrs.SEC_WEBSOCKET_KEY1,
}
# aiohttp names a field it knows by its own istr (hdrs), any other by an istr of its bytes.
_KNOWN = {str(name).lower(): name for name in vars(hdrs).values() if isinstance(name, istr)}
# Names as sent -> (aiohttp's name, what it asks); bounded as aiohttp bounds its own cache.
_NAMES: dict[str, tuple[istr, int]] = {}
_NAMES_MAX = 512


def _name(raw: str) -> tuple[istr, int] | None:
    if _TOKEN.fullmatch(raw) is None:
        return None
    lowered = raw.lower()
    name = _KNOWN.get(lowered)
    if name is None:
        name = istr(raw)
    if name in _REFUSED:
        kind = _REFUSE
    elif name in _SINGLETONS:
        kind = _SINGLETON
    elif lowered == "connection":
        kind = _CONNECTION
    else:
        kind = _PLAIN
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
    _NAMES[raw] = found = (name, kind)
    return found


class Head:
    """A request head as the fast path reads it, under the names of aiohttp's
    RawRequestMessage (method, path, version, headers, should_close, upgrade)."""

    __slots__ = ("headers", "method", "path")

    version: HttpVersion = HttpVersion11
    should_close = False
    upgrade = False

    def __init__(self, method: str, path: str, headers: CIMultiDictProxy[str]) -> None:
        self.method = method
        self.path = path
        self.headers = headers


# What request_fields (proxy/http/headers.py) made of a field block but the peer's lines:
# the lines before X-Forwarded-For, the client's X-Forwarded-For and Forwarded chains kept
# (joined, or None), and the lines after them.
Forwarding = tuple[list[str], str | None, str | None, list[str]]


class FieldBlock(CIMultiDictProxy[str]):
    """The fields of a block read here, with what request_fields made of them: a client
    sends the same fields request after request, and they forward the same way while the
    forwarding's inputs stay (proxy/http/headers.py). `forwarded` lives and dies with the
    block in _BLOCKS; None for a block over FORWARDED_BLOCK_MAX bytes, never memoised."""

    __slots__ = ("forwarded",)

    forwarded: dict[tuple[object, ...], Forwarding] | None  # by request_fields' other inputs


# Bounds what the memos of _BLOCKS' blocks hold (headers.py caps the entries of each).
FORWARDED_BLOCK_MAX = 2048


def parse_head(data: bytes) -> Head | None:
    """`data` read as one whole request head, or None: not such a head, or not one this
    parse is sure aiohttp reads the same way (aiohttp's, then)."""
    if data[:5] == b"GET /":
        method, start = "GET", 4
    elif data[:6] == b"HEAD /":
        method, start = "HEAD", 5
    else:
        return None
    end = data.find(b" HTTP/1.1\r\n", start)
    if end < 0:
        return None
    target = data[start:end]
    if data[-4:] != b"\r\n\r\n" or len(data) > MAX_HEAD or 0 in target.translate(_TARGET):
        return None
    block = data[end + 11 : -2]  # the field lines, each with its CRLF
    fields = _BLOCKS.get(block, _UNSEEN)
    if fields is _UNSEEN:
        fields = _fields(block)
    if fields is None:
        return None
    # aiohttp's message.path is the target's bytes decoded from UTF-8: latin-1 is the same
    # on the ASCII a target is checked to be, and quicker.
    return Head(method, target.decode("latin-1"), fields)


# A client sends the same fields request after request (those of one connection, often
# those of many): read once, they are taken from here, as the same read-only view (a
# CIMultiDictProxy, which no stage can change). Bounded as _NAMES is.
_BLOCKS: dict[bytes, FieldBlock | None] = {}
_BLOCKS_MAX = 256
_UNSEEN = FieldBlock(CIMultiDict[str]())


def _fields(block: bytes) -> FieldBlock | None:
    """The fields of `block` (lines each ending in CRLF) as aiohttp would read them, or None
    when this parse is not sure it would; remembered in _BLOCKS either way."""
    if len(_BLOCKS) >= _BLOCKS_MAX:
        _BLOCKS.clear()
    _BLOCKS[block] = read = _read_fields(block)
    if read is not None:
        read.forwarded = {} if len(block) <= FORWARDED_BLOCK_MAX else None
    return read


def _read_fields(block: bytes) -> FieldBlock | None:
    lines = block.split(b"\r\n")
    lines.pop()  # after the last CRLF: b""
    if not lines or len(lines) > MAX_FIELDS or 0 in b"".join(lines).translate(_TEXT):
        return None  # no Host; too many fields; a CTL, a bare CR or LF, a byte not ASCII
    fields: list[tuple[istr, str]] = []
    singletons: set[istr] = set()
    for line in lines:
        raw, colon, value = line.decode("ascii").partition(":")
        known = _NAMES.get(raw) or _name(raw)  # None: not a token (empty, obs-fold, spaces)
        if known is None or not colon:
            return None
        name, kind = known
        value = value.strip(" \t")
        if kind == _SINGLETON:
            if name in singletons:
                return None
            singletons.add(name)
        elif kind == _REFUSE or (kind == _CONNECTION and value.lower() != "keep-alive"):
            return None
        fields.append((name, value))
    if hdrs.HOST not in singletons:
        return None
    return FieldBlock(CIMultiDict(fields))
