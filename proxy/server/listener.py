"""The proxy port: aiohttp's low-level server, with bounds on what one client may hold.

aiohttp gives a connection as long as it likes to send a request head (its keep-alive timer
defaults to an hour) and nothing bounds a stalled request body, so a few hundred slow clients
could hold every file descriptor. Here each connection is bounded in time (request head,
keep-alive idle, body silence), its head in size (HEAD_LIMITS), and the listener in number
(`max_connections`, and `max_connections_per_client` for any one client address).

The timers are lazy: a deadline is a float on the connection, and its `call_at` handle is
re-armed only when it fires before the deadline, so a busy keep-alive connection does not pay
for a timer per request.

With `listen.tls`, each connection's protocol is a TLS layer over its ListenerProtocol
(proxy/adapters/asyncio_tls.py says why the listener makes it): admitted at the TCP accept,
it has `request_head` seconds from there for the handshake and its first request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import resource
import ssl
import time
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol, cast

import orjson
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import istr

from proxy.adapters.aiohttp_internals import (
    PARSER_IN_FLIGHT,
    TOO_MANY_FIELDS,
    Connection,
    ListenerRequest,
    NoServerFieldRequest,
    ParsedRequest,
    exceeded_limit,
    with_version,
)
from proxy.adapters.asyncio_tls import server_tls
from proxy.config.loader import ClientTimeouts
from proxy.http.errors import json_error
from proxy.http.head import parse_head
from proxy.pipeline.handler import Replay
from proxy.respond.prepared import PreparedResponse

log = logging.getLogger("cacheproxy.listener")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class FastPath(Protocol):
    """What answers a request before aiohttp makes one of it (Pipeline)."""

    @property
    def hot(self) -> Container[str]:
        """Request targets worth trying: those a fresh memory hit was served for lately (a
        hint: `answer` decides), so that a miss pays nothing for the fast path."""

    @property
    def replays(self) -> Mapping[bytes, Replay]:
        """Whole request heads answered before, by their bytes (`again` answers them)."""

    def answer(self, request: ParsedRequest, head_bytes: bytes = b"") -> PreparedResponse | None:
        """The response, or None, having done nothing. `head_bytes`: the head as it came,
        when read here, for `replays`."""

    def again(
        self, head_bytes: bytes, replay: Replay, request: ParsedRequest
    ) -> PreparedResponse | None:
        """The response to a head in `replays`, or None, having done nothing."""


# Told of every response once it is sent: (request, response, seconds since its head arrived).
Observe = Callable[[web.BaseRequest, web.StreamResponse, float], None]

_EXPECT = istr("Expect")
# llhttp also lets HTTP/0.9 and HTTP/2.0 request lines through; neither is spoken here.
HTTP1 = frozenset({HttpVersion10, HttpVersion11})

# What one request head may hold (aiohttp's defaults let ~1 MB wait for `request_head`
# seconds per connection). Bytes: the request line, one field (name and value), and a head
# still incomplete; and fields at most. Like nginx's 8k buffers and Apache's 100 fields.
MAX_REQUEST_LINE = 16 * 1024  # URLs with long query strings are common in APIs
MAX_FIELD = 8 * 1024
MAX_FIELDS = 100
MAX_HEAD = 64 * 1024
HEAD_LIMITS = {
    "max_line_size": MAX_REQUEST_LINE,
    "max_field_size": MAX_FIELD,
    "max_headers": MAX_FIELDS,
}

# Seconds a TLS connection being closed waits for the client's close_notify (asyncio's default:
# 30), holding its place under max_connections: a client that never answers holds it less.
TLS_SHUTDOWN = 5.0

# Descriptors kept free beyond client connections: listening sockets, the admin listener and
# its clients, log files, DNS, the event loop's own. Upstream connections are added on top.
FD_RESERVE = 64


def default_max_connections(open_files: int, upstream_connections: int) -> int:
    """Client connections one process may hold without running out of descriptors.

    Past the open-files limit accept() fails for every listener, the admin one included, so
    the bound leaves room for the upstream pool (one descriptor per pooled connection) and
    FD_RESERVE. A limit too small for that reserve still gets half its descriptors.
    """
    return max(open_files - upstream_connections - FD_RESERVE, open_files // 2, 1)


def open_files_limit() -> int:
    """This process's soft RLIMIT_NOFILE (cli raises it to the hard limit at start)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(slots=True)
class ListenerStats:
    """Counters for the proxy port (admin `GET /listener/stats`)."""

    max_connections: int = 0
    open_connections: int = 0
    refused_connections: int = 0  # beyond max_connections, closed at once
    max_connections_per_client: int = 0  # 0: no bound
    refused_per_client: int = 0  # beyond max_connections_per_client, closed at once
    head_timeouts: int = 0  # a TLS handshake that outlasted request_head included
    body_timeouts: int = 0
    bad_requests: int = 0  # not parsable as HTTP/1.x: refused with 400, logged in one line
    tls_handshake_failures: int = 0  # not TLS, no version or cipher in common, reset
    fast_path: int = 0  # hits answered before aiohttp made a request of them (fast path)
    fast_path_heads: int = 0  # of those, heads read here (proxy/http/head.py), not by aiohttp
    own_task: int = 0  # other heads read here, handled on their connection's own task


class LogBudget:
    """At most `burst` lines per `window` seconds, so a flood cannot flood the log too."""

    def __init__(self, burst: int = 10, window: float = 60.0) -> None:
        self.burst = burst
        self.window = window
        self._window_start = float("-inf")
        self._used = 0
        self._held_back = 0

    def take(self, now: float) -> int | None:
        """None: stay quiet. Otherwise log, mentioning the returned number of lines held back."""
        if now - self._window_start >= self.window:
            self._window_start = now
            self._used = 0
        if self._used >= self.burst:
            self._held_back += 1
            return None
        self._used += 1
        held_back, self._held_back = self._held_back, 0
        return held_back


def raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole response for a connection about to be closed, when no handler will respond."""
    body = orjson.dumps({"error": code, "message": message})
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def _request_timeout() -> bytes:
    return raw_response(408, "Request Timeout", "request_timeout", "the request took too long")


def _shutting_down() -> bytes:
    return raw_response(503, "Service Unavailable", "shutting_down", "the proxy is restarting")


def _head_too_large() -> bytes:
    message = f"the request head is over {MAX_HEAD // 1024} KiB"
    return raw_response(431, "Request Header Fields Too Large", "head_too_large", message)


class _UnsupportedVersion(web.BaseRequest):
    """A request line in an HTTP version other than 1.0/1.1: refused with 505, never forwarded."""


async def _unsupported_version() -> web.StreamResponse:
    resp = json_error(505, "http_version_not_supported", "this proxy speaks HTTP/1.0 and HTTP/1.1")
    resp.force_close()
    return resp


class ListenerProtocol(Connection):
    """One client connection: aiohttp's RequestHandler plus the head and body timers.

    A plain head that arrives whole is read here (proxy/http/head.py): a hot hit is answered
    at once (the fast path), any other such request is handled on a task of the
    connection's own (`_handle_own`); everything else is aiohttp's handler's, as ever.

    It reads a few of RequestHandler's private fields the way RequestHandler itself does
    (`idle_waiter`: the handler waits for a request; `heads_parsed`; `keepalive_close_at`...),
    under the public names proxy/adapters/aiohttp_internals.py gives them.
    """

    __slots__ = (
        "_body",
        "_body_timeout",
        "_body_timer",
        "_client",
        "_close_after",
        "_fast",
        "_fresh",
        "_handle",
        "_head_bytes",
        "_head_deadline",
        "_head_started",
        "_head_timeout",
        "_head_timer",
        "_held",
        "_held_paused",
        "_last_read",
        "_listener",
        "_observe",
        "_own",
        "_remote",
        "_settled",
        "_started",
        "_tcp",
        "_tls_accepted",
    )

    def __init__(self, listener: Listener, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        self._listener: Listener | None = listener
        self._head_timeout = listener.timeouts.request_head
        self._body_timeout = listener.timeouts.body
        self._head_deadline = 0.0  # 0: no request head under way
        self._head_started = False  # a byte of that head has arrived
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of a head still incomplete
        self._client: str | None = None  # counted against max_connections_per_client
        self._body: StreamReader | None = None  # a request body still being received
        self._last_read = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._started = 0.0  # perf_counter() when the current request was handed over
        self._observe = listener.observe  # kept after connection_lost: that response counts too
        self._remote: str | None = None
        self._tls_accepted = 0.0  # loop time of a TLS connection's TCP accept
        self._tcp: asyncio.Transport | None = None  # under a TLS handshake still under way
        self._fast = listener.fast
        # Every request aiohttp's handler took has been answered (log_access) and the
        # connection kept alive: with nothing queued, nothing is in flight.
        self._settled = True
        # aiohttp's parser holds no byte: what it was fed ended a bodiless request (or
        # nothing was fed), so a whole head can be read here without it (_answer_head).
        self._fresh = True
        # None: every request is aiohttp's but those the fast path answers (Listener.own).
        self._handle = listener.handle if listener.own else None
        # A request handled on the listener's own task (_handle_own), and the bytes that
        # came meanwhile, held back for after it (reading paused beyond MAX_HEAD of them).
        self._own: asyncio.Task[None] | None = None
        self._held = b""
        self._held_paused = False
        self._close_after = False  # shutdown began during it: close once it is answered
        if self._fast is not None:
            self.answer_first(self._answer_parsed)

    def remote(self) -> str | None:
        """The peer's address as BaseRequest.remote gives it, found on the first request."""
        remote = self._remote
        if remote is None:
            peer = self.peername
            if peer is None:
                return None
            remote = self._remote = str(peer[0]) if isinstance(peer, list | tuple) else str(peer)
        return remote

    # --- request head ---------------------------------------------------------------------

    def tls_accepted(self, transport: asyncio.Transport) -> bool:
        """A TLS connection's TCP accept (adapters/asyncio_tls.py): admitted now, before any
        handshake, as a plain one is in connection_made; False: refused, and closed."""
        listener = self._listener
        if listener is None:
            return False
        self._tls_accepted = self.loop.time()
        self._remote = _peer(transport)
        if listener.stats.max_connections_per_client:
            self._client = listener.admit(self._remote)
            if self._client is None:
                self._listener = None
                listener.connection_closed()
                return False
        self._tcp = transport
        listener.handshakes.add(self)
        return True

    def tls_ended(self, waiter: asyncio.Future[None]) -> None:
        """The TLS handshake is over: if it failed, this connection ends here."""
        error = None if waiter.cancelled() else waiter.exception()  # retrieved: not logged
        listener = self._listener
        if listener is None:
            return
        listener.handshakes.discard(self)
        self._tcp = None
        if self.transport is not None:  # done: connection_made came first
            return
        self._listener = None  # connection_lost will never come
        listener.connection_closed(self._client)
        listener.handshake_failed(self._remote, error, self.loop.time() - self._tls_accepted)

    def abort_handshake(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._tls_accepted:  # admitted at the TCP accept, its head's time running since
            self._expect_head(started=False, since=self._tls_accepted)
            return
        listener = self._listener
        if listener is not None and listener.stats.max_connections_per_client:
            self._client = listener.admit(self.remote())
            if self._client is None:
                self._abort(None)
                return
        self._expect_head(started=False)

    def data_received(self, data: bytes) -> None:
        if self._own is not None:  # what follows a request in flight waits for its response
            if data:
                self._hold(data)
            return
        if not data:  # resume_reading() feeds b"" to parse what is buffered
            self._fresh = False  # the parser held bytes back: where they end is not known
            super().data_received(data)
            return
        if self._body is not None:
            self._last_read = self.loop.time()
        fast = self._fast
        whole = data[-4:] == b"\r\n\r\n"  # may be whole heads
        if (
            whole
            and self._fresh
            and (fast is not None or self._handle is not None)
            and self._answer_head(data, fast)
        ):
            self._head_deadline = 0.0  # a whole head: no timer
            return
        under_way = self._head_deadline
        # The first bytes of the next request on a kept-alive connection: keep-alive
        # bounded the idle time, request_head bounds the head from here (as nginx).
        # Idle: aiohttp's handler parked on its waiter, or between two requests (`_idle`).
        idle = (
            not under_way
            and self._settled
            and not self.queued
            and ((waiter := self.idle_waiter) is None or not waiter.done())
        )
        heads = self.heads_parsed
        nothing_queued = not self.queued
        super().data_received(data)
        if self.heads_parsed != heads:  # a head was parsed (or found malformed)
            self._head_deadline = 0.0
            if fast is not None:
                # Bytes ending at a CRLFCRLF that completed bodiless requests leave the
                # parser empty: it emits a bodiless request at its head's CRLFCRLF and
                # skips CRLFs between requests, so a head still incomplete cannot end in
                # one. Unless it stopped emitting at 32 requests in flight, keeping the
                # rest; or switched protocols. (aiohttp_internals.py names each of these.)
                queued = self.queued
                self._fresh = (
                    whole
                    and nothing_queued
                    and self.heads_parsed - heads < PARSER_IN_FLIGHT
                    and not self.upgrading
                    and (not queued or queued[-1][1] is EMPTY_PAYLOAD)
                )
            return
        self._fresh = False
        if under_way:
            self._head_started = True
        elif idle:  # only part of a head came: its time starts now (a whole one needs none)
            self._expect_head(started=True)
        else:
            return
        # Every byte since the head began is the head's: none of it completed one.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD and self.transport is not None:
            self._head_deadline = 0.0
            if self._listener is not None:
                self._listener.bad_request(self.remote(), f"request head over {MAX_HEAD} bytes")
            self._abort(_head_too_large())

    def _expect_head(self, started: bool, since: float = 0.0) -> None:
        loop = self.loop
        deadline = (since or loop.time()) + self._head_timeout
        self._head_deadline = deadline
        self._head_started = started
        self._head_bytes = 0
        # aiohttp's keep-alive timer also closes a connection still waiting for a request when
        # it fires; keep it clear of a head under way, which gets request_head whole.
        if self.keepalive_close_at <= deadline:
            self.keepalive_close_at = deadline + 1.0
        if self._head_timer is None:  # else it fires earlier and re-arms: deadlines only grow
            self._head_timer = loop.call_at(deadline, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if not deadline or self.transport is None:
            return
        if self.loop.time() < deadline:
            self._head_timer = self.loop.call_at(deadline, self._check_head)
            return
        self._head_deadline = 0.0
        if self._listener is not None:
            self._listener.stats.head_timeouts += 1
        # A client that sent part of a request is told why; a silent one is just closed
        # (a 408 it never asked for would confuse a client about to reuse the connection).
        self._abort(_request_timeout() if self._head_started else None)

    # --- the fast path ----------------------------------------------------------------------

    def _idle(self) -> bool:
        """Nothing of this connection's is queued, in flight, held back or closing: a
        response written now goes out after every earlier one. aiohttp's handler is parked
        on its waiter, or between two requests (the last one answered, log_access called,
        kept alive) and not yet parked: a request arriving then is answered here too, or
        on a loaded machine one declined request would make the next one wait too."""
        waiter = self.idle_waiter
        transport = self.transport
        return (
            self._settled
            and (waiter is None or not waiter.done())
            and not self.queued
            and not self.closing
            and not self.writing_paused
            and transport is not None
            and not transport.is_closing()
        )

    def _answer_head(self, data: bytes, fast: FastPath | None) -> bool:
        """Take `data`, a whole request head with nothing after it, without aiohttp's parser:
        the same bytes as a head answered before (`replays`), or read here (proxy/http/head.py)
        when the parse is sure aiohttp would read it the same way, answered at once (a hot
        hit) or else handled on the listener's own task (`_handle_own`). Only on a
        connection idle until now (`_idle`), so responses stay in order. False: nothing
        done, the bytes are aiohttp's."""
        replay = None if fast is None else fast.replays.get(data)
        if replay is not None:
            assert fast is not None
            if not self._idle():
                return False
            request = replay.request.again(self.remote())
            if self._respond(request, fast, parsed=False, head_bytes=data, replay=replay):
                return True
        head = parse_head(data)
        if head is None or (replay is None and not self._idle()):
            return False
        request = ParsedRequest(head, self.remote(), self._scheme())
        if (
            fast is not None
            and head.path in fast.hot
            and self._respond(request, fast, parsed=False, head_bytes=data)
        ):
            return True
        if self._handle is None:
            return False
        self._handle_own(request)
        return True

    def _answer_parsed(self, message: Any, payload: StreamReader) -> bool:
        """Answer a parsed request here, before aiohttp makes a request and a task of it,
        when the pipeline can answer it at once (a fresh memory hit: Pipeline.answer). Only
        a plain GET or HEAD of a `hot` target: HTTP/1.1 kept alive, no body, no upgrade, no
        Expect; and only on a connection idle until now (`_idle`), so responses stay in
        order. False: aiohttp's, as ever."""
        method = message.method
        fast = self._fast
        if (
            (method != "GET" and method != "HEAD")
            or fast is None
            or message.path not in fast.hot
            or payload is not EMPTY_PAYLOAD
            or message.should_close
            or message.upgrade
            or (message.version is not HttpVersion11 and message.version != HttpVersion11)
            or _EXPECT in message.headers
        ):
            return False
        if not self._idle():
            return False
        request = ParsedRequest(message, self.remote(), self._scheme())
        return self._respond(request, fast, parsed=True)

    def _respond(
        self,
        request: ParsedRequest,
        fast: FastPath,
        parsed: bool,
        head_bytes: bytes = b"",
        replay: Replay | None = None,
    ) -> bool:
        """`fast`'s answer to `request` sent, counted and observed; False: none, nothing done.
        `parsed`: its head went through aiohttp's parser; else `head_bytes` holds it, and
        `replay` is what answered those bytes before."""
        started = time.perf_counter()
        try:
            if replay is None:
                response = fast.answer(request, head_bytes)
            else:
                response = fast.again(head_bytes, replay, request)
        except Exception:  # a bug: logged, and the request is handled the ordinary way
            if self._listener is not None:
                self._listener.fast_path_failed(request.method, request.raw_path)
            return False
        if response is None:
            return False
        transport = self.transport
        assert transport is not None  # _idle() saw it, and nothing since has closed it
        response.send(transport, HttpVersion11, True, request.method == "HEAD")
        self.answered(parsed)
        if self._listener is not None:
            stats = self._listener.stats
            stats.fast_path += 1
            if not parsed:
                stats.fast_path_heads += 1
        if self._observe is not None:
            self._observe(request, response, time.perf_counter() - started)
        return True

    def _scheme(self) -> str:
        return "https" if self._tls_accepted else "http"

    # --- the own task -----------------------------------------------------------------------

    def _handle_own(self, request: ParsedRequest) -> None:
        """Handle `request`, whose head was read here, on a task of the listener's own: the
        same handler, response and accounting as aiohttp's RequestHandler gives a request,
        without its request object, queue and task per request (a sixth of a miss's CPU).
        Bytes that arrive meanwhile are held (`_hold`) until it is answered, so responses
        go out in order and aiohttp's handler stays parked on its waiter."""
        self._settled = False
        self._started = time.perf_counter()
        if self._listener is not None:
            self._listener.stats.own_task += 1
        request.writing(self)
        self.current_request = request  # as aiohttp's: the timers and `cut` read it
        self._own = self.loop.create_task(self._own_task(request))

    async def _own_task(self, request: ParsedRequest) -> None:
        """What RequestHandler's _handle_request and finish_response do for a request."""
        response: web.StreamResponse | None = None
        try:
            try:
                assert self._handle is not None  # else not handled here (_answer_head)
                response = await self._handle(request)
            except web.HTTPException as exc:  # a response raised: sent, as aiohttp sends it
                response = exc
            except TimeoutError:  # aiohttp's 504
                response = self.handle_error(request, 504)
            except Exception as exc:  # a bug: aiohttp's 500 and traceback (handle_error)
                response = self.handle_error(request, 500, exc)
            if self._close_after:
                response.force_close()
            if response.__class__ is not PreparedResponse or not response.send_to(request):
                await response.prepare(request)
                await response.write_eof()
        except ConnectionError:
            pass  # the client went: counted all the same, as aiohttp does
        except Exception:
            log.exception("sending the response to %s %s failed", request.method, request.raw_path)
            self.force_close()
            return
        except asyncio.CancelledError:
            # Ended by _abort, or a cancellation from within the handler: either way no
            # response follows, so the connection ends now, as aiohttp's start() ends it.
            self.force_close()
            raise
        finally:
            self._own = self.current_request = None
        if self._observe is not None and response is not None:
            self._observe(request, response, time.perf_counter() - self._started)
        if self.transport is None:
            return  # the client went (connection_lost has ended the rest)
        self.answered(parsed=False)
        if response is None or response.keep_alive is not True or self._close_after:
            # As aiohttp ends a connection its response does not keep, or one drain() came
            # to while its response was being written, too late for a Connection: close.
            self.force_close()
            return
        self._settled = True
        held, self._held = self._held, b""
        if self._held_paused:
            self._held_paused = False
            self.transport.resume_reading()
        if held:
            # Read as bytes from the client are, outside this request's context: what it set
            # (its upstream's time and id, its trace) is none of the next one's.
            contextvars.Context().run(self.data_received, held)

    def busy(self) -> bool:
        return self._own is not None

    def _hold(self, data: bytes) -> None:
        held = self._held = self._held + data
        if len(held) > MAX_HEAD and not self._held_paused and self.transport is not None:
            self._held_paused = True  # a client pipelining that much waits for the kernel
            self.transport.pause_reading()

    # --- request body ---------------------------------------------------------------------

    def watch_body(self, payload: StreamReader) -> None:
        """Bound the silence while `payload` is still arriving (called per request with a body)."""
        self._body = payload
        self._last_read = now = self.loop.time()
        if self._body_timer is None:  # else it fires earlier and re-arms
            self._body_timer = self.loop.call_at(now + self._body_timeout, self._check_body)

    def _check_body(self) -> None:
        self._body_timer = None
        payload = self._body
        if payload is None or self.transport is None:
            return
        if payload.is_eof():
            self._body = None
            return
        now = self.loop.time()
        if self.reading_paused or self.buffer_paused:
            # We stopped reading (the upstream is slower than the client): not the client's wait.
            self._last_read = now
        deadline = self._last_read + self._body_timeout
        if now < deadline:
            self._body_timer = self.loop.call_at(deadline, self._check_body)
            return
        self._body = None
        if self._listener is not None:
            self._listener.stats.body_timeouts += 1
        request = self.current_request
        nothing_sent = request is not None and request.writer.output_size == 0
        self._abort(_request_timeout() if nothing_sent else None)

    # --- accounting ---------------------------------------------------------------------

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time_: float | None
    ) -> None:
        # aiohttp calls this after every response, its own 400/500s included. Its own timing
        # (loop.time()) has 1 ms resolution under uvloop: ours is perf_counter().
        self._settled = response.keep_alive is True  # this request is done: in order
        if self._observe is not None:
            self._observe(request, response, time.perf_counter() - self._started)

    # --- ending connections ---------------------------------------------------------------

    def _abort(self, response: bytes | None) -> None:
        """Close now: send `response` if it can go out whole, stop the handler, drop the rest."""
        transport = self.transport
        if transport is not None:
            if response is not None and not transport.get_write_buffer_size():
                transport.write(response)
            if transport.get_write_buffer_size():
                # The client is not reading: close() would wait for it to.
                transport.abort()
        if self.handler_task is not None:
            self.handler_task.cancel()  # cancels the handler it awaits, and its upstream call
        if self._own is not None:
            self._own.cancel()
        self.force_close()

    def drain(self) -> None:
        """Shutdown has begun: close at once if idle, else after the response under way; a
        switched connection (a tunnel) goes on until the grace is over (`cut`)."""
        if self.tunnel is not None:
            return  # aiohttp's close() would drop every byte the client sends from here on
        if self._own is not None:
            self._close_after = True  # aiohttp's handler looks idle: it is not
            return
        waiter = self.idle_waiter
        transport = self.transport
        if waiter is not None and not waiter.done():
            if transport is not None and transport.get_write_buffer_size():
                # A response the fast path sent whole is still going out: closed once it
                # has (as aiohttp's handler waits for it), or by `cut` at the grace.
                transport.close()
            else:
                self._abort(None)  # idle, or part way through a head: nothing to finish
        else:
            self.close()

    def cut(self) -> None:
        """The shutdown grace is over: end the request still running."""
        if self.tunnel is not None:
            self.tunnel.end("shutdown")  # counted as such before its connection goes
        request = self.current_request
        nothing_sent = request is not None and request.writer.output_size == 0
        self._abort(_shutting_down() if nothing_sent else None)

    def connection_lost(self, exc: BaseException | None) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            if self._tcp is not None:  # before tls_ended heard of its handshake
                listener.handshakes.discard(self)
                self._tcp = None
            listener.connection_closed(self._client)
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body = None
        super().connection_lost(exc)

    # --- malformed requests ---------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # a bug: keep the trace
        # The client's bytes are not HTTP/1.x: its problem, worth one line, not a traceback.
        reason = _one_line(exc.message or type(exc).__name__)
        listener = self._listener
        if listener is not None:
            listener.bad_request(request.remote, reason)
        if exceeded_limit(exc) == MAX_REQUEST_LINE:
            message = f"the request line is over {MAX_REQUEST_LINE} bytes"
            resp = json_error(414, "uri_too_long", message)
        elif isinstance(exc, LineTooLong) or exc.message == TOO_MANY_FIELDS:
            message = f"at most {MAX_FIELDS} header fields of {MAX_FIELD} bytes each"
            resp = json_error(431, "header_fields_too_large", message)
        else:
            resp = json_error(status, "bad_request", f"malformed request: {reason}")
        resp.force_close()
        return resp


def _not_logged(held_back: int) -> str:
    return f" ({held_back} more since the last such line)" if held_back else ""


def _one_line(message: str, limit: int = 200) -> str:
    """aiohttp's parser errors span lines (reason, the bytes, a ^ under the fault)."""
    parts = (line.strip() for line in message.splitlines())
    return " ".join(part for part in parts if part.strip("^"))[:limit]


def _peer(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if peer is None:
        return None
    return str(peer[0]) if isinstance(peer, list | tuple) else str(peer)


class _Refuse(asyncio.Protocol):
    """A connection beyond max_connections: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Listener(web.Server):
    """The proxy port's server: connection bound, per-connection timers, one-budget shutdown."""

    def __init__(
        self,
        handler: Handler,
        timeouts: ClientTimeouts,
        max_connections: int,
        stats: ListenerStats | None = None,
        observe: Observe | None = None,
        max_connections_per_client: int = 0,
        client_key: Callable[[str], str] = str,
        unbounded: Callable[[str], bool] = lambda peer: False,
        tls_context: ssl.SSLContext | None = None,
        server_field: bool = True,
        fast: FastPath | None = None,
    ) -> None:
        """`fast`: what answers on the fast path (ListenerProtocol._answer_parsed), as each
        new connection finds it (a reload may set it); None: every request goes to `handler`.
        `tls_context`: TLS on this port, with this context until one is swapped in.
        `server_field`: False when responses get no Server field of ours (listen.server_header
        `false`; proxy/adapters/aiohttp_internals.py says how)."""
        # Kept here, not read back from web.Server's private fields: each connection's
        # protocol is made with them (__call__).
        self.loop = asyncio.get_running_loop()
        self._protocol_kwargs: dict[str, Any] = {
            "keepalive_timeout": timeouts.keepalive,
            "access_log": None,
            **HEAD_LIMITS,
        }
        super().__init__(
            self._version_guard(handler),
            request_factory=self._request,
            loop=self.loop,
            **self._protocol_kwargs,
        )
        self.tls_context = tls_context
        self.handle = handler  # for requests on a connection's own task (_handle_own)
        # Whole heads read here are handled on the connection's own task; False: by
        # aiohttp's handler, as every other request (tests compare the two).
        self.own = True
        self.fast = fast
        self.handshakes: set[ListenerProtocol] = set()  # TLS ones under way: shutdown ends them
        self._request_class = ListenerRequest if server_field else NoServerFieldRequest
        self.timeouts = timeouts
        self.observe = observe
        self.stats = stats or ListenerStats()
        self.stats.max_connections = max_connections
        self.stats.max_connections_per_client = max_connections_per_client
        # Who holds the sockets: the TCP peer (a client cannot choose it as it can its
        # X-Forwarded-For), IPv6 by network like the rate limiter; trusted proxies are not
        # bounded, since every client behind them shares their address.
        self._client_key = client_key
        self._unbounded = unbounded
        self._per_client: dict[str, int] = {}
        self._refusals_log = LogBudget()
        self._bad_requests_log = LogBudget()
        self._fast_path_log = LogBudget()
        self._drained: asyncio.Future[None] | None = None

    @staticmethod
    def _version_guard(handler: Handler) -> Handler:
        # Not a coroutine itself: it hands aiohttp the handler's own, so every request does
        # not pay for one more coroutine frame on each of its resumptions.
        def guarded(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            if request.__class__ is not _UnsupportedVersion:
                return handler(request)
            return _unsupported_version()

        return guarded

    def _request(
        self,
        message: Any,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        # Every connection's protocol is a ListenerProtocol (__call__ makes them all); cast()
        # would add a function call to every request.
        conn: ListenerProtocol = protocol  # type: ignore[assignment]  # ours: see above
        conn._started = time.perf_counter()
        conn._settled = False  # in flight until log_access
        version = message.version  # the parser's own HttpVersion11/10 objects, as a rule
        if version is not HttpVersion11 and version is not HttpVersion10 and version not in HTTP1:
            # Respond in the version we speak (RFC 9112 §2.3), then close.
            message = with_version(message, HttpVersion11)
            return _UnsupportedVersion(message, payload, protocol, writer, task, self.loop)
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():
            conn.watch_body(payload)
        # The peer of a connection does not change: worked out once (the rate limit and
        # the access log ask for it on every request).
        return self._request_class(
            message, payload, protocol, writer, task, self.loop, remote=conn.remote()
        )

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]  # or a _Refuse (no handler)
        """The protocol factory asyncio calls for each accepted connection."""
        stats = self.stats
        if stats.open_connections >= stats.max_connections:
            stats.refused_connections += 1
            held_back = self._refusals_log.take(self.loop.time())
            if held_back is not None:
                log.warning(
                    "refusing a connection: max_connections (%d) reached%s",
                    stats.max_connections,
                    _not_logged(held_back),
                )
            return _Refuse()
        # Counted here, before connection_made, so a burst of accepts cannot overshoot.
        stats.open_connections += 1
        conn = ListenerProtocol(self, loop=self.loop, **self._protocol_kwargs)
        context = self.tls_context  # the newest: a reload swaps it for new handshakes
        if context is None:
            return conn
        timeout = self.timeouts.request_head
        return server_tls(self.loop, conn, context, timeout, TLS_SHUTDOWN, conn.tls_ended)

    def admit(self, peer: str | None) -> str | None:
        """The name a new connection from `peer` counts under (`""`: not counted), or None
        when that client holds max_connections_per_client already."""
        if not peer or self._unbounded(peer):
            return ""
        client = self._client_key(peer)
        held = self._per_client.get(client, 0)
        if held >= self.stats.max_connections_per_client:
            self.stats.refused_per_client += 1
            held_back = self._refusals_log.take(self.loop.time())
            if held_back is not None:
                log.warning(
                    "refusing a connection from %s: it holds max_connections_per_client (%d)%s",
                    client,
                    held,
                    _not_logged(held_back),
                )
            return None
        self._per_client[client] = held + 1
        return client

    def connection_closed(self, client: str | None = None) -> None:
        if client:
            held = self._per_client.pop(client) - 1
            if held:
                self._per_client[client] = held
        self.stats.open_connections -= 1
        drained = self._drained
        if drained is not None and not self.stats.open_connections and not drained.done():
            drained.set_result(None)

    def fast_path_failed(self, method: str, target: str) -> None:
        """The fast path raised (a bug); the request goes the ordinary way. Logged with its
        traceback within a budget: a bug that fails every hit must not write a line each."""
        held_back = self._fast_path_log.take(self.loop.time())
        if held_back is not None:
            log.exception("the fast path failed on %s %s%s", method, target, _not_logged(held_back))

    def bad_request(self, peer: str | None, reason: str) -> None:
        self.stats.bad_requests += 1
        held_back = self._bad_requests_log.take(self.loop.time())
        if held_back is not None:
            log.info("bad request from %s: %s%s", peer, reason, _not_logged(held_back))

    def handshake_failed(self, peer: str | None, exc: BaseException | None, took: float) -> None:
        if took >= self.timeouts.request_head:
            self.stats.head_timeouts += 1  # as a plain connection that sends no head
            return
        self.stats.tls_handshake_failures += 1
        held_back = self._bad_requests_log.take(self.loop.time())
        if held_back is not None:
            why = "closed" if exc is None else getattr(exc, "reason", None) or str(exc) or repr(exc)
            log.info("TLS handshake failed from %s: %s%s", peer, why, _not_logged(held_back))

    def pre_shutdown(self) -> None:
        # The runner has stopped accepting; handshakes and idle connections go now.
        for handshake in list(self.handshakes):
            handshake.abort_handshake()
        for conn in self.connections:
            cast(ListenerProtocol, conn).drain()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Give requests under way `timeout` seconds in all, then end them.

        aiohttp's own shutdown waits `timeout` for the handlers and as long again after
        cancelling them, so a 10 s grace could take 20.
        """
        if self.stats.open_connections:
            self._drained = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained, timeout)
        conns = self.connections  # includes handlers still running for clients that left
        busy = sum(conn.transport is not None for conn in conns)
        for conn in conns:
            cast(ListenerProtocol, conn).cut()
        if busy:
            log.warning("shutdown grace over: cut %d connection(s) still busy", busy)
