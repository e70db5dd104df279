"""Stored responses sent as prepared bytes: what a cache hit writes.

Every hit on one stored form of an entry (its own bytes, or one encoded variant) through
one route sends the same status line, headers and body, except for a few lines that
depend on the request: Age, X-Cache and Cache-Status, CORS for its Origin, its rate-limit
counts, and the Date and Connection lines aiohttp would add. The rest is serialised once,
on the form's first hit, and kept with the entry (`Entry.prepared`, a `PreparedForms`):

- a 304 from the origin makes a new Entry (`Entry.refreshed`), a purge drops the entry:
  neither can be served from a head made from older headers;
- a reload makes new route policies, and prepared forms are only used for the route they
  were made for (those of another route are replaced).

`PreparedResponse` then writes head, request lines and body in one `transport.write`,
keeping what aiohttp's own Response keeps: keep-alive (`Connection` for HTTP/1.0 and for
a closing HTTP/1.1 response), no body for HEAD, the writer's byte counts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict, istr

from proxy.adapters.aiohttp_internals import http_date
from proxy.cache.policy import Headers
from proxy.edge.compression.negotiate import is_acceptable
from proxy.observe.metrics import CACHE_RESULT
from proxy.respond.encoding import AS_STORED, DECODED
from proxy.respond.head import checked_lines, length_lines, stored_head

if TYPE_CHECKING:
    from proxy.cache.entry import Entry
    from proxy.edge.route import LoadedRoute

# Statuses whose responses carry no body whatever the method: left to aiohttp's Response.
NO_BODY = frozenset({204, 304}) | frozenset(range(100, 200))
# A body past this is written apart from its head rather than copied into one buffer.
_JOIN_BELOW = 64 * 1024
_UNSET = object()
_CHOSEN_MAX = 16  # Accept-Encoding values remembered per entry (browsers, curl, SDKs...)
# What a head costs beyond its bytes (objects, its slot in `heads`), for cache.max_memory.
HEAD_OVERHEAD = 200


class PreparedHead:
    """One stored form of an entry, ready to send for one route."""

    __slots__ = ("__weakref__", "body", "dated", "static")  # weakly held by replays

    def __init__(self, static: bytes, body: bytes, dated: bool) -> None:
        self.static = static  # " <status> <reason>\r\n" and the constant header lines
        self.body = body
        self.dated = dated  # the stored headers have a Date: no Date line of our own


class PreparedForms:
    """What an entry's hits through one route have in common: the variant decision's
    inputs and the heads made so far, by variant key (None: the stored form)."""

    __slots__ = ("_chosen", "coding", "compressible", "heads", "route")

    def __init__(self, route: LoadedRoute, entry: Entry) -> None:
        self.route = route
        self.heads: dict[str | None, PreparedHead] = {}
        self._chosen: dict[str | None, str | None] = {}  # Accept-Encoding -> variant key
        self.coding = ""
        self.compressible = False
        policy = route.compression
        if policy is not None:
            coding = entry.headers.get("Content-Encoding", "").strip().lower()
            self.coding = "" if coding == "identity" else coding
            if not self.coding:
                self.compressible = policy.should_compress(
                    entry.status, entry.headers, len(entry.body)
                )

    def counted(self) -> int:
        """What its heads were counted for against cache.max_memory (`head_size`)."""
        return sum(head_size(head) for head in self.heads.values())

    def variant(self, accept_encoding: str | None) -> str | None:
        """encoding.variant_for, with the entry's part decided once and the choice for
        the few Accept-Encoding values clients send remembered."""
        key = self._chosen.get(accept_encoding, _UNSET)
        if key is _UNSET:
            key = self._variant(accept_encoding)
            if len(self._chosen) < _CHOSEN_MAX:
                self._chosen[accept_encoding] = key
        return key  # type: ignore[return-value]  # _UNSET was replaced just above

    def _variant(self, accept_encoding: str | None) -> str | None:
        policy = self.route.compression
        if policy is None:
            return None
        if self.coding:
            return AS_STORED if is_acceptable(accept_encoding, self.coding) else DECODED
        if not self.compressible:
            return None
        return policy.negotiate(accept_encoding) or AS_STORED


def head_size(head: PreparedHead) -> int:
    """What `head` is counted for against cache.max_memory, as long as its entry holds it."""
    return len(head.static) + HEAD_OVERHEAD


def make_head(
    route: LoadedRoute,
    status: int,
    reason: str,
    headers: Headers,
    body: bytes,
    vary_encoding: bool = False,
    id_field: str = "",
) -> PreparedHead:
    """The constant part of every response from this form: what from_entry's Response
    would send with the per-request lines left out (see responder.py's `with_request_lines`).
    `id_field`: the request-id field (lower case), whose stored copy is left out."""
    static, dated = stored_head(route, status, reason, headers, len(body), vary_encoding, id_field)
    return PreparedHead(static, body, dated)


def serialise(status: int, reason: str, headers: Headers, length: int) -> bytes:
    """` <status> <reason>` and the header lines, as aiohttp's Response would send them
    for a body of `length` bytes, less Date and Connection (`PreparedResponse` adds those).
    `headers` holds no Content-Length: this adds the body's."""
    lines = [f" {status} {reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    length_lines(lines, headers, length)
    return checked_lines(lines).encode("utf-8", "surrogateescape")


def relayed(
    status: int, reason: str, headers: Headers, body: bytes, cache: str
) -> PreparedResponse:
    """An upstream response read whole, as one write: what `web.Response` would send.
    `headers` (without Content-Length) are final: CORS, limits and encoding applied."""
    static = serialise(status, reason, headers, len(body))
    tail = "" if _DATE in headers else date_line()
    return PreparedResponse(status, reason, static, tail, body, cache)


def made_here(resp: web.Response) -> PreparedResponse:
    """A response the proxy made itself (a refusal, its fields final), as aiohttp would send
    it: for a request aiohttp never saw (the listener's fast path, server/listener.py)."""
    body = resp.body
    if not isinstance(body, bytes):
        raise TypeError(f"a response made here has its body in bytes, not {type(body)}")
    return relayed(resp.status, resp.reason, resp.headers, body, resp.get(CACHE_RESULT, "none"))


_DATE = istr("Date")


def date_line() -> str:
    """The Date line aiohttp adds to a response without one (its clock, cached per second)."""
    return f"Date: {http_date()}\r\n"


class PreparedResponse(web.StreamResponse):
    """A response whose status line, headers and body are ready: `prepare` sends them.

    Built without StreamResponse.__init__ (no header multidict, no state dict), its fields in
    slots (no instance dict): a hit allocates nothing it does not send. It reads none of
    StreamResponse's private fields: it overrides the members aiohttp's RequestHandler uses
    (prepare, write_eof, keep_alive, force_close) and those the access log and metrics read
    (status, reason, body_length); proxy/adapters/aiohttp_internals.py checks they still exist.
    `headers` parses the sent lines back, for the rare reader (tests, handlers after the fact).
    """

    __slots__ = (
        "_prepared_body",
        "_sent",
        "_static",
        "_tail",
        "body_length",
        "cache_result",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(
        self, status: int, reason: str, static: bytes, tail: str, body: bytes, cache: str
    ) -> None:
        # Slots of this class where the base has read-only properties (see the docstring).
        self.status = status  # type: ignore[misc]
        self.reason = reason  # type: ignore[misc]
        self._static = static
        self._tail = tail
        self._prepared_body = body
        self.cache_result = cache  # the metrics' cache label ("hit", "stale", ...)
        self.keep_alive: bool | None = None  # None: as the request asks
        self.body_length = 0  # type: ignore[misc]
        self._sent = False

    @property
    def prepared(self) -> bool:
        return self._sent

    def force_close(self) -> None:
        self.keep_alive = False

    @property
    def headers(self) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        text = self._static.decode("utf-8", "surrogateescape") + self._tail
        for line in text.split("\r\n")[1:]:
            name, sep, value = line.partition(": ")
            if sep:
                out.add(name, value)
        return out

    def __repr__(self) -> str:
        return f"<PreparedResponse {self.status} {self.reason} {self.cache_result}>"

    async def prepare(self, request: web.BaseRequest) -> None:
        if self._sent:
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self._send_for(request, transport)
        if request.protocol.writing_paused:  # the client is not reading: wait, as write_eof does
            await request.writer.drain()

    def send_to(self, request: web.BaseRequest) -> bool:
        """What `prepare` does, at once (no coroutine), for a client that reads what it is
        sent; False: nothing done, `prepare` it (the client's transport is paused or closing)."""
        protocol = request.protocol
        transport = protocol.transport
        if transport is None or transport.is_closing() or protocol.writing_paused:
            return False
        self._send_for(request, transport)
        return True

    def _send_for(self, request: web.BaseRequest, transport: asyncio.Transport) -> None:
        keep_alive = self.keep_alive
        if keep_alive is None:
            keep_alive = self.keep_alive = request.keep_alive
        size = self.send(transport, request.version, keep_alive, request.method == "HEAD")
        writer = request.writer
        writer.buffer_size += size
        writer.output_size += size

    def send(
        self, transport: asyncio.Transport, version: HttpVersion, keep_alive: bool, head: bool
    ) -> int:
        """Write the whole response to `transport` (`head`: its head only, for a HEAD) in
        `version`; the bytes written. What `prepare` does for aiohttp's request, and the
        listener's fast path (server/listener.py) for a request aiohttp never saw."""
        if version == HttpVersion11:
            start = b"HTTP/1.1"
            connection = b"" if keep_alive else b"Connection: close\r\n"
        else:
            start = f"HTTP/{version[0]}.{version[1]}".encode()
            connection = (
                b"Connection: keep-alive\r\n" if keep_alive and version == HttpVersion10 else b""
            )
        body = b"" if head else self._prepared_body
        if len(body) < _JOIN_BELOW:  # one join: head and body copied once, not twice
            data = b"".join((start, self._static, self._tail.encode(), connection, b"\r\n", body))
            size = len(data)
            transport.write(data)
        else:
            data = b"".join((start, self._static, self._tail.encode(), connection, b"\r\n"))
            size = len(data) + len(body)
            transport.write(data)
            transport.write(body)
        self._sent = True
        self.body_length = size  # type: ignore[misc]  # a slot here: read-only in the base
        return size

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing left to write: `prepare` sent the whole response."""
