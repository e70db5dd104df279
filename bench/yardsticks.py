"""What the proxy is measured against: the simplest aiohttp programs doing the same job.

    python -m bench.yardsticks app --port N --body-file F --headers-file H
    python -m bench.yardsticks server --port N --body-file F --headers-file H
    python -m bench.yardsticks forward --port N --upstream http://127.0.0.1:M
    python -m bench.yardsticks dictcache --port N --upstream http://127.0.0.1:M
    python -m bench.yardsticks relay --port N --upstream http://127.0.0.1:M

`app` and `server` respond to every GET with the given bytes (a plain `web.Application`, and
aiohttp's low-level `web.Server` without a router; `app --processes N`: N processes
sharing the port with SO_REUSEPORT, as the proxy's workers do); `forward` is a naive
forwarding proxy (one ClientSession, bodies read whole); `dictcache` a minimal caching
proxy: a dict with expiry times and one upstream fetch per cold key. Deliberately naive:
no header hygiene beyond hop-by-hop headers, no limits, no RFC 9111.

`relay` is the floor of a miss on this stack, not a naive program: a forwarding proxy written
directly on asyncio protocols (uvloop) and llhttp (httptools), with no tasks, futures or
aiohttp objects on a request's way. What a miss costs at best in Python is what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import typing
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import httptools
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def _clean(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP}


def fixed_bytes(body: bytes, headers: list[tuple[str, str]]) -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def fixed_bytes_low_level(body: bytes, headers: list[tuple[str, str]]) -> web.Server:
    async def handler(_: web.BaseRequest) -> web.Response:
        return web.Response(body=body, headers=headers)

    return web.Server(handler)


def forward(upstream: str) -> web.Application:
    """A naive forwarding proxy: what "just use aiohttp" gives."""

    async def handler(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=_clean(request.headers),
            data=await request.read() if request.body_exists else None,
            allow_redirects=False,
        ) as up:
            body = await up.read()
            return web.Response(status=up.status, body=body, headers=_clean(up.headers))

    return _with_session(handler)


class DictCache:
    """key -> (expiry, status, headers, body), with one upstream fetch per cold key."""

    def __init__(self, upstream: str, default_ttl: float = 60.0) -> None:
        self.upstream = upstream
        self.default_ttl = default_ttl
        self.entries: dict[str, tuple[float, int, dict[str, str], bytes]] = {}
        self.fetching: dict[str, asyncio.Future[tuple[float, int, dict[str, str], bytes]]] = {}

    async def handler(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        key = request.path_qs
        entry = self.entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            waiting = self.fetching.get(key)
            if waiting is not None:
                entry = await asyncio.shield(waiting)
            else:
                future = self.fetching[key] = asyncio.get_running_loop().create_future()
                try:
                    entry = await self.fetch(request.app["session"], key)
                    future.set_result(entry)
                except Exception as exc:
                    future.set_exception(exc)
                    future.exception()  # nobody else may be waiting: not "never retrieved"
                    raise
                finally:
                    del self.fetching[key]
        _, status, headers, body = entry
        return web.Response(status=status, body=body, headers=headers)

    async def fetch(
        self, session: aiohttp.ClientSession, key: str
    ) -> tuple[float, int, dict[str, str], bytes]:
        async with session.get(self.upstream + key, allow_redirects=False) as up:
            body = await up.read()
            headers = _clean(up.headers)
        match = re.search(r"max-age=(\d+)", headers.get("Cache-Control", ""))
        ttl = float(match.group(1)) if match else self.default_ttl
        entry = (time.monotonic() + ttl, up.status, headers, body)
        if up.status == 200:
            self.entries[key] = entry
        return entry


def dict_cache(upstream: str) -> web.Application:
    return _with_session(DictCache(upstream).handler)


def _with_session(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.Application:
    async def session(app: web.Application) -> AsyncIterator[None]:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False
        )
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


# --- relay: the floor of a miss -----------------------------------------------------------
#
# Per client connection a RelayClient parses requests (llhttp callbacks) and, at each one's
# end, asks the Relay for an idle keep-alive upstream connection (a new one is opened while
# fewer than `limit` are). The request goes up as the request line, the client's fields less
# the hop-by-hop ones, and X-Forwarded-For. The RelayUpstream's callbacks gather the response
# head (hop-by-hop fields dropped, Content-Length kept, else re-chunked for keep-alive
# clients) and body; what one read of the upstream produced goes to the client in one write.
# Request bodies are read whole before they are sent; no 1xx (Expect is not forwarded), no
# upgrades, no timeouts, no flow control: enough for the bench load, which never needs them.

# RFC 9110 §7.6.1, and RFC 9112's framing: each side's are its own.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer"}
    | {b"transfer-encoding", b"upgrade"}
)
# A request's Content-Length is stated again from the body read; X-Forwarded-For extended.
_REQUEST_SKIP = _HOP | {b"content-length", b"x-forwarded-for", b"expect"}
_RESPONSE_SKIP = _HOP | {b"content-length"}  # Content-Length is kept, and noted
_CONTENT_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# The standard reason, not the upstream's: no callback per response for it (RFC 9112 §4:
# a client ignores the reason phrase).
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_NO_BODY = frozenset({204, 304})
_CLOSING = b"Content-Length: 0\r\nConnection: close\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n" + _CLOSING
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\n" + _CLOSING


class _Sink(typing.Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class _Gone:
    """A lost client's transport: what is still relayed to it goes nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


_GONE = _Gone()


class Relay:
    """The upstream's idle connections, and the requests waiting for one."""

    def __init__(self, host: str, port: int, limit: int = 100) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[RelayUpstream] = []
        self.waiting: deque[tuple[RelayClient, bytes, bool]] = deque()
        self.opened = 0  # connected or connecting
        self.opening: set[asyncio.Task[object]] = set()  # the loop keeps only weak references

    def ask(self, client: RelayClient, request: bytes, head_only: bool) -> None:
        if self.idle:
            self.idle.pop().send(client, request, head_only)
            return
        self.waiting.append((client, request, head_only))
        if self.opened < self.limit:
            self.open()

    def free(self, upstream: RelayUpstream) -> None:
        if self.waiting:
            upstream.send(*self.waiting.popleft())
        else:
            self.idle.append(upstream)

    def open(self) -> None:
        """Only while the pool grows: a task is the simplest way to connect."""
        self.opened += 1
        loop = asyncio.get_running_loop()
        connect = loop.create_connection(lambda: RelayUpstream(self), self.host, self.port)
        task: asyncio.Task[object] = loop.create_task(connect)
        self.opening.add(task)
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[object]) -> None:
        self.opening.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.opened -= 1
            if self.waiting:
                self.waiting.popleft()[0].refuse()

    def lost(self, upstream: RelayUpstream) -> None:
        self.opened -= 1
        if upstream in self.idle:
            self.idle.remove(upstream)
        if self.waiting and self.opened < self.limit:
            self.open()


class RelayClient(asyncio.Protocol):
    """One client connection: its requests, one at a time, each to an upstream connection."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: _Sink = _GONE
        self.peer = b""
        self.url = b""
        self.fields: list[bytes] = []
        self.forwarded = b""  # the client's own X-Forwarded-For, with ", " after it
        self.body: list[bytes] = []
        self.keep_alive = True
        self.busy = False  # a request of this client's is with an upstream connection
        self.pending: list[tuple[bytes, bool]] = []  # pipelined requests behind it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.peer = str(transport.get_extra_info("peername")[0]).encode()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = _GONE
        self.keep_alive = False
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.keep_alive = False
            if not self.busy:  # else it closes once its response is relayed
                self.transport.write(_BAD_REQUEST)
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url  # llhttp hands a target split over two reads in two pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in _REQUEST_SKIP:
            self.fields += (name, b": ", value, b"\r\n")
        elif lower == b"x-forwarded-for":
            self.forwarded += value + b", "

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        if not parser.should_keep_alive():  # llhttp forgets it once this callback returns
            self.keep_alive = False
        method = parser.get_method()
        fields = self.fields
        body = b""
        if self.body or method in _CONTENT_METHODS:
            body = b"".join(self.body)
            self.body = []
            fields += (b"Content-Length: %d\r\n" % len(body),)
        request = b"".join(
            (
                method, b" ", self.url, b" HTTP/1.1\r\n", *fields,
                b"X-Forwarded-For: ", self.forwarded, self.peer, b"\r\n\r\n", body,
            )
        )  # fmt: skip
        self.url, self.fields, self.forwarded = b"", [], b""
        head_only = method == b"HEAD"
        if self.busy:
            self.pending.append((request, head_only))
        else:
            self.busy = True
            self.relay.ask(self, request, head_only)

    def finished(self) -> None:
        """Its response is relayed whole."""
        if not self.keep_alive:
            self.transport.close()
        elif self.pending:
            self.relay.ask(self, *self.pending.pop(0))
        else:
            self.busy = False

    def refuse(self) -> None:
        """No upstream connection for its request, or it closed before a response head."""
        self.keep_alive = False
        self.transport.write(_BAD_GATEWAY)
        self.transport.close()


class RelayUpstream(asyncio.Protocol):
    """One keep-alive upstream connection: a response at a time, relayed as it is parsed."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: RelayClient | None = None  # whose request is in flight
        self.head_only = False
        self.fields: list[bytes] = []
        self.out: list[bytes] = []  # for the client, written once each read is parsed
        self.sized = False  # the response has a Content-Length
        self.chunked = False  # its body goes to the client chunked
        self.reuse = False
        self.started = False  # its head went to the client
        self.complete = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.relay.free(self)

    def send(self, client: RelayClient, request: bytes, head_only: bool) -> None:
        assert self.transport is not None
        self.client, self.head_only = client, head_only
        self.transport.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self)
        client, self.client = self.client, None
        if client is None:
            return
        if self.started:  # half a response: the client can only tell by the close
            client.keep_alive = False
            client.transport.close()
        else:
            client.refuse()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # also bytes while idle: on_header finds no client
            assert self.transport is not None
            self.transport.close()  # connection_lost tells the client
            return
        out = self.out
        if out:
            assert self.client is not None
            self.client.transport.write(b"".join(out))
            out.clear()
        if self.complete:
            self.finish()

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in _RESPONSE_SKIP:
            self.fields += (name, b": ", value, b"\r\n")
        elif lower == b"content-length":
            self.sized = True
            self.fields += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        parser, client = self.parser, self.client
        assert client is not None
        status = parser.get_status_code()
        self.reuse = parser.should_keep_alive()
        out = self.out
        out.append(_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status)
        out += self.fields
        self.fields.clear()
        if self.sized or self.head_only or status in _NO_BODY:
            pass
        elif client.keep_alive:
            self.chunked = True
            out.append(b"Transfer-Encoding: chunked\r\n")
        if not client.keep_alive:  # without a length, its close ends the body
            out.append(b"Connection: close\r\n")
        out.append(b"\r\n")
        self.sized, self.started = False, True
        if self.head_only:
            self.complete = True  # llhttp would wait for the Content-Length's body

    def on_body(self, body: bytes) -> None:
        if self.chunked:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self.out.append(b"0\r\n\r\n")
            self.chunked = False
        self.complete = True

    def finish(self) -> None:
        client = self.client
        assert client is not None and self.transport is not None
        self.client, self.complete, self.started = None, False, False
        if self.head_only:  # llhttp still waits for the body a HEAD's response never has
            self.parser = httptools.HttpResponseParser(self)
        if self.reuse:
            self.relay.free(self)
        else:
            self.transport.close()
        client.finished()


async def serve_relay(
    upstream: str, port: int, host: str = "127.0.0.1", limit: int = 100
) -> asyncio.Server:
    """The relay on `port` (0: any), at most `limit` connections to `upstream`."""
    url = urlsplit(upstream)
    relay = Relay(url.hostname or "127.0.0.1", url.port or 80, limit)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: RelayClient(relay), host, port, backlog=1024)


async def _relay_forever(upstream: str, port: int) -> None:
    await serve_relay(upstream, port)
    await asyncio.Event().wait()  # until SIGTERM ends the process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["app", "server", "forward", "dictcache", "relay"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="forward, dictcache, relay: the origin's URL")
    parser.add_argument("--body-file", type=Path, help="app, server: the bytes to respond with")
    parser.add_argument("--headers-file", type=Path, help="app, server: JSON [[name, value]]")
    parser.add_argument("--processes", type=int, default=1, help="app: N, with SO_REUSEPORT")
    args = parser.parse_args()
    if args.processes > 1:  # the others are this command again, sharing the port
        argv = [sys.executable, "-m", "bench.yardsticks", *sys.argv[1:], "--processes", "0"]
        others = [subprocess.Popen(argv) for _ in range(args.processes - 1)]
        try:
            serve(args)
        finally:
            for other in others:
                other.terminate()
                other.wait()
    else:
        serve(args)


def serve(args: argparse.Namespace) -> None:
    try:  # the same event loop as the proxy gets, so the comparison is like for like
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.kind in ("app", "server"):
        body = args.body_file.read_bytes()
        headers = [(k, v) for k, v in json.loads(args.headers_file.read_text())]
        if args.kind == "server":
            asyncio.run(serve_low_level(body, headers, args.port))
            return
        app = fixed_bytes(body, headers)
    elif args.kind == "relay":
        asyncio.run(_relay_forever(args.upstream, args.port))
        return
    else:
        app = (forward if args.kind == "forward" else dict_cache)(args.upstream)
    reuse = args.processes != 1
    web.run_app(
        app, host="127.0.0.1", port=args.port, access_log=None, print=None, reuse_port=reuse
    )


async def serve_low_level(body: bytes, headers: list[tuple[str, str]], port: int) -> None:
    runner = web.ServerRunner(fixed_bytes_low_level(body, headers))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":
    main()
