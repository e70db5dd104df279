"""HTTP/1.1 to the upstreams: connections parsed by llhttp (httptools), pooled per origin.

Why not aiohttp's ClientSession: it was about 40% of a miss's CPU, it swallows 1xx responses,
and bytes past a response's Content-Length fail that response (or the next one on the pooled
connection) as a "Bad status line". Here a connection is an asyncio protocol that feeds
llhttp, as uvicorn does, and does only what the proxy needs:

- a final response head arrives as status, reason and headers; its body streams through a
  bounded buffer that pauses reading from the upstream while the client is slower;
- 1xx responses other than 100 and 101 go to the caller's `interim` callback, then the final
  one is read (RFC 9110 §15.2); 100 is ours to send;
- a 101 ends the exchange when it was asked for (`upgrade`): the connection leaves the pool
  for good and its transport, with the bytes that followed the 101's head, is handed over
  (UpstreamResponse.hand_over); one never asked for is invalid;
- what does not frame cleanly (a bad status line, Transfer-Encoding with Content-Length,
  RFC 9112 §6.3, a head over MAX_HEAD) fails the exchange and closes the connection;
- bytes past the end of a response (more than its Content-Length, a body after a HEAD,
  anything while idle) are dropped with the connection, and the response itself is kept;
- a connection goes back to the pool only after a complete, clean exchange.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from proxy.http.errors import BodyTooLarge
from proxy.upstream.connect import Connector, HandshakeFailed

log = logging.getLogger("cacheproxy.upstream")

MAX_HEAD = 256 * 1024  # one response head: status line and fields together
BODY_BUFFER = 256 * 1024  # unread body held before reading from the upstream pauses
# RFC 9110 §9.3: methods whose requests carry content; without a body they say so (some
# upstreams respond 411 to a POST with neither Content-Length nor Transfer-Encoding).
_CONTENT_METHODS = frozenset({"POST", "PUT", "PATCH"})
# RFC 9110 §9.2.2: safe to send twice. POST/PATCH never are, whatever went wrong.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# (status, headers) of a 1xx response, called from the protocol: it must not block.
Interim = Callable[[int, CIMultiDict[str]], None]
OriginKey = tuple[str, str, int]  # scheme, host, port
# Field names as received -> decoded (on_header): the first few hundred seen, for good.
_NAMES: dict[bytes, str] = {}
_MAX_NAMES = 512
CRLF = "\r\n"
# Looked up as istr: a str name is case-folded on every lookup (half the lookup's cost).
_CONTENT_LENGTH, _TRANSFER_ENCODING = istr("Content-Length"), istr("Transfer-Encoding")


class StreamedBody(Protocol):
    """A request body read as it arrives (the client's aiohttp StreamReader)."""

    def iter_any(self) -> AsyncIterator[bytes]: ...


class ExchangeError(Exception):
    """The exchange failed. `resendable`: before any response byte, safe to send again."""

    resendable = False


class ConnectFailed(ExchangeError):
    resendable = True  # refused, unresolvable, reset during connect


class ConnectTimeout(ExchangeError, TimeoutError):
    resendable = True


class CertificateFailed(ExchangeError):
    """TLS verification failed: sending again fails the same way."""


class TlsFailed(ExchangeError):
    """The TLS handshake failed otherwise (a client certificate refused, no common protocol
    version): sending again fails the same way."""


class Disconnected(ExchangeError):
    resendable = True  # closed before the first response byte (a stale keep-alive, say)


class ReadTimeout(ExchangeError, TimeoutError):
    """No byte from the upstream (nor any sent to it) for `read` seconds."""


class HeadTimeout(ExchangeError, TimeoutError):
    """No response head within the time the caller gave the whole exchange."""


class InvalidResponse(ExchangeError):
    """The upstream's response is not HTTP/1.x as RFC 9112 frames it."""


class BodyError(ExchangeError):
    """The body ended before its declared end."""


class RequestBodyFailed(ExchangeError):
    """The client's request body broke off or stalled while it was being sent: the client's
    doing, never the upstream's. `timed_out`: it stalled (the body's own time bound)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the request body was cut short: {cause!r}")
        self.timed_out = isinstance(cause, TimeoutError)
        self.too_large = isinstance(cause, BodyTooLarge)


class Body:
    """A response body as it arrives: bounded, read by one consumer."""

    __slots__ = ("_chunks", "_conn", "_eof", "_error", "_size", "_waiter", "received")

    def __init__(self, conn: Connection | None) -> None:
        self._chunks: list[bytes] = []  # a list: made for every response, half a deque's cost
        self._size = 0
        self._eof = conn is None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._conn = conn
        self.received = 0

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.received += len(data)
        if self._waiter is not None:  # nobody waits, as a rule: a call less
            self._wake()
        if self._size > BODY_BUFFER and self._conn is not None:
            self._conn.pause_reading()

    def end(self) -> None:
        self._eof = True
        if self._waiter is not None:
            self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._eof:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def readany(self) -> bytes:
        """What has arrived (waiting for something), or b"" at the end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._conn is not None:
            self._conn.resume_reading()
        return data

    def whole(self) -> bytes | None:
        """The whole body when all of it is here already, else None (`read` then waits): a
        small response's body usually comes with its head, and needs no coroutine."""
        if not self._eof or self._error is not None:
            return None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class UpstreamResponse:
    """A final response head and its body; `release` ends the exchange (read or not)."""

    __slots__ = ("_conn", "content", "content_length", "give_back", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        content: Body,
        conn: Connection | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = CIMultiDictProxy(headers)
        length = headers.get(_CONTENT_LENGTH)
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.content = content
        self._conn = conn
        # Called once when released: the origin's slot (upstream.py).
        self.give_back: Callable[[], None] | None = None

    async def read(self) -> bytes:
        return await self.content.read()

    def hand_over(self) -> tuple[asyncio.Transport | None, bytes]:
        """A 101's connection, out of the pool for good: its transport (reading paused; None
        if it closed since) and the bytes that came after the 101's head."""
        conn, self._conn = self._conn, None
        if conn is None or self.status != 101:
            raise RuntimeError("only an unreleased 101 has a connection to hand over")
        return conn.hand_over()

    def release(self) -> None:
        """Done with it: an unfinished body closes the connection rather than poison it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abandon(self)
        give_back, self.give_back = self.give_back, None
        if give_back is not None:
            give_back()

    close = release

    def __del__(self) -> None:
        if self.give_back is not None:  # a leak must not shrink the pool for good
            self.release()


class Connection(asyncio.Protocol):
    """One upstream connection; at most one exchange at a time."""

    def __init__(self, pool: Pool, key: OriginKey) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        # The last exchange's parser, at the start of a message again: llhttp resets itself
        # after each complete response, and making one costs about 4k instructions.
        self._spare: httptools.HttpResponseParser | None = None
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._interim: Interim | None = None
        self._head_only = False  # a HEAD: the response ends with its head
        self._upgrade = False  # the request asked to switch protocols: a 101 is its answer
        self._switched: bytes | None = None  # after a 101: the bytes past its head
        self._fields: CIMultiDict[str] = CIMultiDict()
        self._reason = ""
        self._head_size = 0
        self._final = False
        self._complete = False
        self._keep_alive = False
        self._eof_body = False
        self._received = False
        self._body: Body | None = None
        self._writer: asyncio.Task[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._waiting_on_client = False
        self._last_io = 0.0
        self._head_deadline = math.inf  # loop time by which the response head must be here
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._spare = None
        self.pool.forget(self)
        self._wake_writer(exc or ConnectionResetError("upstream connection closed"))
        if self._parser is None or self._complete:
            return
        if self._head is not None and not self._head.done():
            if not self._received:
                self._fail(Disconnected(self._unanswered()))
            else:
                self._fail(InvalidResponse("half a response head, then closed the connection"))
        elif self._eof_body:  # RFC 9112 §6.3 rule 8: this body ends where the connection does
            self._complete = True
            assert self._body is not None
            self._body.end()
            self._done()
        else:
            assert self._body is not None and self._response is not None
            declared = self._response.content_length
            of = f" of {declared}" if declared is not None else ""
            self._fail(BodyError(f"the upstream closed after {self._body.received}{of} body bytes"))

    def _unanswered(self) -> str:
        what = "the upstream closed the connection before responding"
        if self.idle_since == 0.0 and self.key[0] == "https":  # its first exchange
            # A TLS 1.3 upstream judges the client certificate after the handshake, and its
            # alert never reaches the protocol (asyncio and uvloop report a plain close):
            # this is how a missing or refused client certificate looks.
            what += " (right after the TLS handshake: was the client certificate refused?)"
        return what

    def data_received(self, data: bytes) -> None:
        self._last_io = self.loop.time()
        parser = self._parser
        if parser is None or self._complete:
            self._poison(f"{len(data)} bytes after the end of a response")
            return
        self._received = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # Only after the 101 that was asked for (on_headers_complete refuses others).
            self._switch(data[exc.args[0] :] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            if self._complete:  # past the end of a complete response: it stands
                self._poison("bytes after the end of a response")
            else:
                cause = exc.__context__ if isinstance(exc.__context__, ExchangeError) else None
                self._fail(cause or InvalidResponse(f"an invalid response: {exc}"))
            return
        if self._complete:
            self._done()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer(None)

    # llhttp's callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            raise _PastTheEnd  # a second response where one was asked for

    def on_status(self, reason: bytes) -> None:
        # The head's bound, checked in line: a call less for every response.
        self._head_size += len(reason)
        if self._head_size > MAX_HEAD:
            raise InvalidResponse(f"a response head over {MAX_HEAD} bytes")
        self._reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        # The head's bound, checked in line: a call less for every field of every response.
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise InvalidResponse(f"a response head over {MAX_HEAD} bytes")
        # Names come back response after response: each is decoded once. A plain decode()
        # is the surrogateescape one for valid UTF-8, for a third less (no arguments).
        text = _NAMES.get(name)
        if text is None:
            text = name.decode("utf-8", "surrogateescape")
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = text
        try:
            self._fields.add(text, value.decode())
        except UnicodeDecodeError:
            self._fields.add(text, value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        fields, self._fields = self._fields, CIMultiDict()
        reason, self._reason = self._reason, ""
        if status == 101:
            if not self._upgrade:
                raise InvalidResponse("101 Switching Protocols, never asked for")
            # Handed to the caller once llhttp says where the switched bytes begin (_switch).
            self._final, self._keep_alive = True, False
            self._head_deadline = math.inf
            self._response = UpstreamResponse(status, reason, fields, Body(None), self)
            self._body = self._response.content
            return
        if status < 200:
            if status != 100 and self._interim is not None:
                self._interim(status, fields)
            self._head_size = 0
            return
        self._final = True
        self._head_deadline = math.inf  # from here on only silences count
        self._keep_alive = self._parser.should_keep_alive()
        head_only = self._head_only or status in (204, 304)
        body = Body(None if head_only else self)
        response = UpstreamResponse(status, reason, fields, body, self)
        self._body, self._response = body, response
        te = fields.get(_TRANSFER_ENCODING)
        self._eof_body = (
            not head_only
            and _CONTENT_LENGTH not in fields
            and (te is None or not te.rstrip().lower().endswith("chunked"))
        )
        if self._eof_body:
            self._keep_alive = False
        if self._head_only:
            self._complete = True  # llhttp would wait for a Content-Length of body
        assert self._head is not None
        if not self._head.done():
            self._head.set_result(response)

    def on_body(self, data: bytes) -> None:
        if self._complete:
            raise _PastTheEnd  # a body after a HEAD response's head
        assert self._body is not None
        self._body.feed(data)

    def on_message_complete(self) -> None:
        if not self._final:
            return  # a 1xx response: the final one follows
        self._complete = True
        assert self._body is not None
        self._body.end()
        self._body._conn = None  # what is left unread no longer paces this connection

    def _switch(self, tail: bytes) -> None:
        """The 101 asked for is complete: nothing more is parsed, nor read until the caller
        takes the transport (hand_over), so the bytes after its head stay bounded."""
        self._parser = None
        self._switched = tail
        self.pause_reading()
        assert self._head is not None and self._response is not None
        if not self._head.done():
            self._head.set_result(self._response)

    def hand_over(self) -> tuple[asyncio.Transport | None, bytes]:
        transport, self.transport = self.transport, None
        tail, self._switched = self._switched or b"", None
        self._response = None
        self.pool.forget(self)  # with no transport it leaves the pool's count for good
        return transport, tail

    # the exchange

    async def exchange(
        self,
        method: str,
        head: bytes,
        body: bytes | StreamedBody | None,
        chunked: bool,
        interim: Interim | None,
        deadline: float = math.inf,
        upgrade: bool = False,
        now: float | None = None,
        again: bool = False,
    ) -> UpstreamResponse:
        """Send a request; its response head, by `deadline` (loop time) at the latest.
        `upgrade`: the request asks to switch protocols, so a 101 is its final response.
        `now`: the loop's time, when the caller has just read it. `again`: this kept-alive
        connection found closed before any response byte, send it once more on a new one
        (Pool.request)."""
        transport = self.transport
        if transport is None:
            if again:
                args = (method, head, body, chunked, interim, deadline, upgrade)
                return await self.pool.fresh(self.key, *args)
            raise Disconnected("the upstream connection closed")
        parser, self._spare = self._spare, None
        self._parser = parser or httptools.HttpResponseParser(self)
        self._head = self.loop.create_future()
        self._interim = interim
        self._head_only = method == "HEAD"
        self._upgrade = upgrade
        self._head_size = 0
        self._final = self._complete = self._received = self._eof_body = False
        self._body = self._response = None
        self._last_io = self.loop.time() if now is None else now
        self._head_deadline = deadline
        if isinstance(body, bytes):
            transport.write(head + body)
        elif body is None:
            transport.write(head)
        else:
            transport.write(head)
            self._writer = self.loop.create_task(self._send_body(body, chunked))
        timer = self._timer
        if timer is None:
            self._arm_timer()
        elif timer.when() > deadline:  # armed for a later silence: this deadline comes first
            timer.cancel()
            self._arm_timer()
        try:
            return await self._head
        except Disconnected:
            self._parser = None
            self._close()
            if not again:
                raise
        except BaseException:
            self._parser = None  # failed, or the caller gave up (its total timeout)
            self._close()
            raise
        # Stale: once more on a fresh connection.
        return await self.pool.fresh(
            self.key, method, head, body, chunked, interim, deadline, upgrade
        )

    async def _send_body(self, body: StreamedBody, chunked: bool) -> None:
        try:
            chunks = body.iter_any()
            while True:
                self._waiting_on_client = True  # the body bounds a client's silences
                try:
                    chunk = await anext(chunks, b"")
                except Exception as exc:  # the upstream must not see more, nor be blamed
                    self._fail(RequestBodyFailed(exc))
                    return
                finally:
                    self._waiting_on_client = False
                if not chunk:
                    break
                await self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                await self._write(b"0\r\n\r\n")
        except ExchangeError as exc:
            self._fail(exc)
        except OSError as exc:  # the upstream's connection went while we wrote to it
            self._fail(Disconnected(f"the upstream connection closed during the body: {exc!r}"))

    async def _write(self, data: bytes) -> None:
        if self.transport is None:
            raise Disconnected("the upstream connection closed while sending the body")
        self.transport.write(data)
        self._last_io = self.loop.time()
        if self._writing_paused:
            self._write_waiter = self.loop.create_future()
            await self._write_waiter

    def _wake_writer(self, exc: BaseException | None) -> None:
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self._last_io = self.loop.time()
            self.transport.resume_reading()

    def _arm_timer(self) -> None:
        at = min(self._last_io + self.pool.read_timeout, self._head_deadline)
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        """Lazy: a busy connection re-arms once per `read` seconds, not once per read, and
        an exchange's head deadline costs no timer of its own unless it comes first."""
        self._timer = None
        if self._parser is None or self._complete or self.transport is None:
            return
        if self.loop.time() >= self._head_deadline:
            self._fail(HeadTimeout("no response head in the time given"))
            return
        if self._reading_paused or self._waiting_on_client:
            self._last_io = self.loop.time()  # the wait is the client's, not the upstream's
        elif self.loop.time() >= self._last_io + self.pool.read_timeout:
            seconds = self.pool.read_timeout
            self._fail(ReadTimeout(f"the upstream sent nothing for {seconds:g} s"))
            return
        self._arm_timer()

    def _done(self) -> None:
        """The response is complete: the connection is free for another exchange."""
        parser, self._parser = self._parser, None
        self._interim = None  # its client's exchange: not held while this one waits idle
        writer_done = self._writer is None or self._writer.done()
        self._writer = None
        if self._reading_paused:  # the last feed both filled the buffer and ended the body
            self.resume_reading()
        if self._keep_alive and writer_done and self.transport is not None:
            if not self._head_only:  # after a HEAD's head llhttp still waits for its body
                self._spare = parser
            self.pool.put(self)
        else:
            self._close()

    def _fail(self, exc: ExchangeError) -> None:
        """The exchange cannot go on: its waiter (head or body) hears why."""
        if self._head is not None and not self._head.done():
            self._head.set_exception(exc)
        elif self._body is not None:
            self._body.fail(exc)
        self._parser = None
        self._close()

    def _poison(self, what: str) -> None:
        """Bytes where none belong: the connection is unusable, what came before is intact."""
        log.warning("upstream %s://%s:%d sent %s; closing that connection", *self.key, what)
        self._parser = None
        self._close()

    def abandon(self, response: UpstreamResponse) -> None:
        """The caller released `response`: unless it was read to the end, close (a 101 not
        handed over too: what follows it is no HTTP)."""
        if self._response is response and (not self._complete or self._switched is not None):
            self._parser = None
            self._close()

    def _close(self) -> None:
        self._spare = None  # it holds the connection: no cycle left for the collector
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None


def _tls_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        # OpenSSL's reason ("SSLV3_ALERT_HANDSHAKE_FAILURE") without its C file and line.
        return str(exc.reason).lower().replace("_", " ")
    return str(exc)


class _PastTheEnd(Exception):
    """Raised in a parser callback to stop llhttp at bytes past a complete response."""


class Pool:
    """Idle keep-alive connections per origin, most recently used first."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
        connector: Connector | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it runs on, once known
        self._idle: dict[OriginKey, list[Connection]] = {}
        self._all: set[Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        # Addresses, Happy Eyeballs and TLS (connect.py): one per process, shared by origins.
        self.connector = connector or Connector()
        self.opened = 0  # ever; every other exchange reused a connection

    @property
    def idle(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    @property
    def active(self) -> int:
        return len(self._all) - self.idle

    def request(
        self,
        method: str,
        key: OriginKey,
        target: str,
        fields: Sequence[str],
        body: bytes | StreamedBody | None = None,
        interim: Interim | None = None,
        content_length: int | None = None,
        upgrade: bool = False,
        head_within: float | None = None,
    ) -> Awaitable[UpstreamResponse]:
        """One exchange with the origin `key`; the caller reads and releases the response.

        `head_within`: seconds for the whole wait for the response head (connecting included),
        HeadTimeout past them; None: only the connect and read timeouts apply.

        `target` is the request target (path and query), `fields` the header lines without
        framing (`request_head` adds Content-Length or Transfer-Encoding). `upgrade`: the
        fields ask to switch protocols; a 101 then ends the exchange (UpstreamResponse.hand_over).
        A reused connection that the upstream had closed just before our request (the
        keep-alive race of RFC 9112 §9.3.1) is retried once on a new connection, when the
        request is idempotent and its body can be sent again.

        Not a coroutine: the exchange's own, or `fresh`'s, is awaited directly (a frame less
        on each resumption of every request); a reused connection's exchange does the retry.
        """
        head, chunked = request_head(method, target, fields, body, content_length)
        now = self._now()  # one read of the loop's clock for the deadline, the idle and the I/O
        deadline = math.inf if head_within is None else now + head_within
        conn = self._take_idle(key, now)
        if conn is None:
            return self.fresh(key, method, head, body, chunked, interim, deadline, upgrade)
        again = method in IDEMPOTENT and (body is None or isinstance(body, bytes))
        return conn.exchange(method, head, body, chunked, interim, deadline, upgrade, now, again)

    async def fresh(
        self,
        key: OriginKey,
        method: str,
        head: bytes,
        body: bytes | StreamedBody | None,
        chunked: bool,
        interim: Interim | None,
        deadline: float,
        upgrade: bool,
    ) -> UpstreamResponse:
        """An exchange on a new connection: the request's first, or its second after a kept
        alive one turned out closed."""
        conn = await self._connect(key, deadline)
        return await conn.exchange(method, head, body, chunked, interim, deadline, upgrade)

    def _take_idle(self, key: OriginKey, now: float) -> Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        oldest = now - self.keepalive_timeout
        while idle:
            conn = idle.pop()
            if conn.transport is not None and conn.idle_since > oldest:
                return conn
            conn._close()
        return None

    async def _connect(self, key: OriginKey, deadline: float = math.inf) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        head_first = deadline < loop.time() + self.connect_timeout
        try:
            async with asyncio.timeout_at(
                deadline if head_first else loop.time() + self.connect_timeout
            ):
                conn = await self.connector.open(scheme, host, port, lambda: Connection(self, key))
        except TimeoutError as exc:
            if head_first:
                raise HeadTimeout("no connection in the time given") from exc
            raise ConnectTimeout(
                f"no connection to {host}:{port} within {self.connect_timeout:g} s"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise CertificateFailed(f"TLS certificate of {host}:{port}: {exc}") from exc
        except (ssl.SSLError, HandshakeFailed) as exc:
            raise TlsFailed(f"TLS handshake with {host}:{port}: {_tls_reason(exc)}") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        self.opened += 1
        self._all.add(conn)
        return conn

    def put(self, conn: Connection) -> None:
        if self.keepalive_timeout <= 0:
            conn._close()
            return
        conn.idle_since = self._now()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self.keepalive_timeout, self._close_expired)

    def forget(self, conn: Connection) -> None:
        """`conn` is closing: it leaves the idle list (and the count) for good."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        if conn.transport is None or conn.transport.is_closing():
            self._all.discard(conn)

    def _close_expired(self) -> None:
        self._sweep = None
        oldest = self._now() - self.keepalive_timeout
        for idle in list(self._idle.values()):
            for conn in [c for c in idle if c.idle_since <= oldest]:
                conn._close()
        if self.idle:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.keepalive_timeout, self._close_expired)

    def _now(self) -> float:
        loop = self._loop
        if loop is None:  # asked once: under uvloop it costs three times loop.time()
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in list(self._all):
            conn._close()
        self._idle.clear()
        self._all.clear()
        await self.connector.close()
        await asyncio.sleep(0)  # let the transports close


def origin_key(url: str) -> OriginKey:
    """(scheme, host, port) of an absolute URL: what the pool keys connections by."""
    u = URL(url)
    return (u.scheme, u.raw_host or "", u.port or 80)


def request_head(
    method: str,
    target: str,
    fields: Sequence[str],
    body: object,
    content_length: int | None = None,
) -> tuple[bytes, bool]:
    """The request line, `fields` and the framing as bytes, and whether the body goes chunked.

    `content_length`: the length the body was announced with; else it is found from `body`.
    """
    chunked = False
    if content_length is not None:
        framing = f"Content-Length: {content_length}\r\n"
    elif isinstance(body, bytes):
        framing = f"Content-Length: {len(body)}\r\n"
    elif body is None:
        framing = "Content-Length: 0\r\n" if method in _CONTENT_METHODS else ""
    else:
        framing = "Transfer-Encoding: chunked\r\n"
        chunked = True
    # Every value was checked where it came from; this is the last line of defence against
    # a field (or target) that would split the request (RFC 9110 §5.5). Looked for in what
    # goes between the line ends (`in` scans with memchr; counting the whole head's CRs and
    # LFs instead went through it a character at a time, twice).
    given = f"{method}{target}{''.join(fields)}"
    if "\r" in given or "\n" in given:
        raise ValueError("a request field holds CR or LF")
    if fields:
        text = f"{method} {target} HTTP/1.1\r\n{CRLF.join(fields)}\r\n{framing}\r\n"
    else:
        text = f"{method} {target} HTTP/1.1\r\n{framing}\r\n"
    return text.encode("utf-8", "surrogateescape"), chunked


__all__ = [
    "Body",
    "BodyError",
    "CertificateFailed",
    "ConnectFailed",
    "ConnectTimeout",
    "Disconnected",
    "ExchangeError",
    "HeadTimeout",
    "Interim",
    "InvalidResponse",
    "Pool",
    "ReadTimeout",
    "RequestBodyFailed",
    "TlsFailed",
    "UpstreamResponse",
    "origin_key",
    "request_head",
]
