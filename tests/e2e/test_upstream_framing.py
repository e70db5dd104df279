"""Misbehaving upstreams and interim responses: proxy.upstream.http1 directly, then through the
proxy.

The upstream here is a raw socket server responding to each request with scripted bytes, since
no well-behaved HTTP server can be made to send what these tests need.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import ssl
import subprocess
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.upstream.http1 import (
    MAX_HEAD,
    BodyError,
    Disconnected,
    HeadTimeout,
    InvalidResponse,
    Pool,
    ReadTimeout,
    origin_key,
    request_head,
)
from tests.conftest import StartProxy, raw_exchange, url_of

# A step of a scripted response: bytes to send, seconds to wait, or None to close.
Step = bytes | float | None


@dataclass
class Scripted:
    """Responds to the n-th request with script[n] (the last one again once it runs out)."""

    script: list[list[Step]]
    port: int = 0
    connections: int = 0
    closed_by_us: int = 0  # connections the proxy closed (we read EOF)
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_us += 1
                    return
                self.requests.append(head)
                steps = self.script[min(len(self.requests), len(self.script)) - 1]
                for step in steps:
                    if step is None:
                        writer.close()
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(*script: list[Step]) -> Scripted:
        up = Scripted(list(script))
        up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
        up.port = up.server.sockets[0].getsockname()[1]
        servers.append(up.server)
        return up

    yield start
    for server in servers:
        server.close()


OK_HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello"
HOST = ["Host: upstream"]


async def fetch(pool: Pool, up: Scripted, method: str = "GET", **kw: Any) -> tuple[int, bytes]:
    resp = await pool.request(method, origin_key(up.url), "/x", HOST, **kw)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = Pool(connect_timeout=2, read_timeout=2, keepalive_timeout=30)
    yield pool
    await pool.close()


async def closed_by_us(up: Scripted, count: int = 1) -> bool:
    """Whether the server saw `count` connections closed by the client (waits up to 5 s)."""
    for _ in range(100):
        if up.closed_by_us >= count:
            return up.closed_by_us == count
        await asyncio.sleep(0.05)
    return False


async def test_keep_alive_sends_every_request_on_one_connection(pool: Pool, scripted) -> None:
    up = await scripted([OK_HELLO])
    for _ in range(3):
        assert await fetch(pool, up) == (200, b"hello")
    assert up.connections == 1 and pool.opened == 1 and pool.idle == 1


async def test_bytes_past_content_length_keep_the_response_and_drop_the_connection(
    pool: Pool, scripted, caplog: pytest.LogCaptureFixture
) -> None:
    up = await scripted([OK_HELLO + b"HTTP/1.1 200 OK\r\nsmuggled"], [OK_HELLO])
    with caplog.at_level(logging.WARNING, "cacheproxy.upstream"):
        assert await fetch(pool, up) == (200, b"hello")
    assert await closed_by_us(up) and pool.idle == 0
    assert "bytes after the end of a response" in caplog.text
    assert await fetch(pool, up) == (200, b"hello")  # a new, clean connection
    assert up.connections == 2


async def test_bytes_past_the_end_arriving_later_drop_the_idle_connection(
    pool: Pool, scripted, caplog: pytest.LogCaptureFixture
) -> None:
    up = await scripted([OK_HELLO, 0.05, b"late junk"], [OK_HELLO])
    with caplog.at_level(logging.WARNING, "cacheproxy.upstream"):
        assert await fetch(pool, up) == (200, b"hello")
        assert pool.idle == 1
        assert await closed_by_us(up)  # the late bytes closed the idle connection
    assert pool.idle == 0 and "9 bytes after the end of a response" in caplog.text
    assert await fetch(pool, up) == (200, b"hello")
    assert up.connections == 2


async def test_fewer_bytes_then_close_is_a_body_error(pool: Pool, scripted) -> None:
    up = await scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", None])
    resp = await pool.request("GET", origin_key(up.url), "/x", HOST)
    with pytest.raises(BodyError, match="after 5 of 10 body bytes"):
        await resp.read()
    resp.release()


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=["status", "version", "te-and-cl", "two-lengths", "field-name", "101"],
)
async def test_a_response_that_does_not_frame_is_invalid(
    pool: Pool, scripted, response: bytes
) -> None:
    up = await scripted([response])
    with pytest.raises(InvalidResponse):
        await fetch(pool, up)
    assert await closed_by_us(up) and pool.idle == 0


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"


async def test_a_101_never_asked_for_is_no_interim_response(pool: Pool, scripted) -> None:
    up = await scripted([SWITCHED + OK_HELLO])
    told: list[int] = []
    with pytest.raises(InvalidResponse, match="never asked for"):
        await fetch(pool, up, interim=lambda status, fields: told.append(status))
    assert told == []  # the client is never sent a 101 it did not ask for


async def test_a_101_asked_for_hands_its_connection_over_with_the_bytes_after_it(
    pool: Pool, scripted
) -> None:
    up = await scripted([SWITCHED + b"first bytes"])
    resp = await pool.request("GET", origin_key(up.url), "/x", HOST, upgrade=True)
    assert resp.status == 101 and resp.headers["Upgrade"] == "websocket"
    transport, tail = resp.hand_over()
    resp.release()
    assert tail == b"first bytes" and transport is not None and not transport.is_closing()
    assert pool.active == 0 and pool.idle == 0  # out of the pool for good
    transport.close()
    assert await closed_by_us(up)


async def test_a_101_released_without_its_connection_taken_closes_it(pool: Pool, scripted) -> None:
    up = await scripted([SWITCHED])
    resp = await pool.request("GET", origin_key(up.url), "/x", HOST, upgrade=True)
    resp.release()
    assert await closed_by_us(up) and pool.active == 0 and pool.idle == 0


async def test_an_upgrade_answered_without_a_101_is_an_ordinary_response(
    pool: Pool, scripted
) -> None:
    up = await scripted([OK_HELLO])
    assert await fetch(pool, up, upgrade=True) == (200, b"hello")
    assert pool.idle == 1  # declined: the connection is as good as any


async def test_a_head_over_the_limit_is_invalid(pool: Pool, scripted) -> None:
    big = b"X-Big: " + b"a" * MAX_HEAD + b"\r\n"
    up = await scripted([b"HTTP/1.1 200 OK\r\n" + big + b"Content-Length: 0\r\n\r\n"])
    with pytest.raises(InvalidResponse, match="head over"):
        await fetch(pool, up)


@pytest.mark.parametrize(
    "response",
    [b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"HTTP/1.0 200 OK\r\n\r\nuntil close"],
    ids=["1.1", "1.0"],
)
async def test_a_body_without_length_ends_with_the_connection(
    pool: Pool, scripted, response: bytes
) -> None:
    up = await scripted([response, None])
    assert await fetch(pool, up) == (200, b"until close")
    assert pool.idle == 0


async def test_chunked_body_and_trailers(pool: Pool, scripted) -> None:
    up = await scripted(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            0.02,
            b"2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
        ]
    )
    assert await fetch(pool, up) == (200, b"abcde")
    assert await fetch(pool, up) == (200, b"abcde")
    assert up.connections == 1


async def test_head_response_ends_with_its_head_and_a_body_after_it_drops_the_connection(
    pool: Pool, scripted
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    up = await scripted([head], [head + b"hello"], [head])
    assert await fetch(pool, up, "HEAD") == (200, b"")
    assert await fetch(pool, up, "HEAD") == (200, b"")  # same connection; this one misbehaves
    assert await closed_by_us(up) and up.connections == 1
    assert await fetch(pool, up, "HEAD") == (200, b"")
    assert up.connections == 2


async def test_one_connection_parses_differently_framed_responses_one_after_another(
    pool: Pool, scripted
) -> None:
    # Its parser is reused from one response to the next (llhttp starts over after each),
    # except after a HEAD's, where llhttp still waits for the body the head announced.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    up = await scripted(
        [chunked],
        [b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
        [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"],  # to the HEAD
        [OK_HELLO],
    )
    assert await fetch(pool, up) == (200, b"abc")
    (conn,) = pool._idle[origin_key(up.url)]
    parser = conn._spare
    assert parser is not None
    assert await fetch(pool, up) == (404, b"no")
    assert await fetch(pool, up) == (204, b"")
    assert conn._spare is parser
    assert await fetch(pool, up, "HEAD") == (200, b"")
    assert conn._spare is None
    assert await fetch(pool, up) == (200, b"hello")
    assert conn._spare is not None and conn._spare is not parser
    assert up.connections == 1 and pool.idle == 1


OCTETS = (
    b"HTTP/1.1 200 OK\r\nX-Name: caf\xc3\xa9 \xff\xfe\r\nX-Name: plain\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


async def test_field_values_not_in_utf8_keep_their_bytes(pool: Pool, scripted) -> None:
    up = await scripted([OCTETS])
    for _ in range(2):  # the second time with the names decoded once already
        resp = await pool.request("GET", origin_key(up.url), "/x", HOST)
        resp.release()
        values = resp.headers.getall("x-name")
        assert values == ["caf\xe9 \udcff\udcfe", "plain"]
        assert [v.encode("utf-8", "surrogateescape") for v in values] == [
            b"caf\xc3\xa9 \xff\xfe",
            b"plain",
        ]


async def test_framing_fields_are_read_in_any_case(pool: Pool, scripted) -> None:
    up = await scripted(
        [b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\n\r\nhello"],
        [b"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n"],
    )
    resp = await pool.request("GET", origin_key(up.url), "/x", HOST)
    assert resp.content_length == 5 and await resp.read() == b"hello"
    resp.release()
    assert await fetch(pool, up) == (200, b"hi")
    assert up.connections == 1 and pool.idle == 1  # neither was read to the connection's end


async def test_interim_responses_reach_the_callback_before_the_final_one(
    pool: Pool, scripted
) -> None:
    up = await scripted(
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
            0.02,
            b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n" + OK_HELLO,
        ]
    )
    seen: list[tuple[int, str]] = []
    got = await fetch(pool, up, interim=lambda status, h: seen.append((status, h["Link"])))
    assert got == (200, b"hello")
    assert seen == [(103, "</a.css>; rel=preload"), (103, "</b.js>; rel=preload")]
    assert await fetch(pool, up) == (200, b"hello") and up.connections == 1


async def test_an_idle_connection_holds_nothing_of_its_last_exchanges_client(
    pool: Pool, scripted
) -> None:
    """The interim callback reaches the client's exchange (its request, its connection): a
    pooled connection waiting idle must not keep that alive until it is used again."""

    class Told:
        def __call__(self, status: int, fields: Any) -> None:
            pass

    up = await scripted([b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK_HELLO])
    told = Told()
    held = weakref.ref(told)
    assert await fetch(pool, up, interim=told) == (200, b"hello")
    del told
    gc.collect()
    assert held() is None


async def test_silence_past_the_read_timeout(scripted) -> None:
    pool = Pool(connect_timeout=2, read_timeout=0.3, keepalive_timeout=30)
    try:
        up = await scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", 5.0])
        resp = await pool.request("GET", origin_key(up.url), "/x", HOST)
        with pytest.raises(ReadTimeout):
            await resp.read()
        resp.release()
        up2 = await scripted([5.0])
        with pytest.raises(ReadTimeout):
            await fetch(pool, up2)
    finally:
        await pool.close()


async def test_the_time_given_bounds_the_head_on_a_reused_connection_not_the_body(
    scripted,
) -> None:
    pool = Pool(connect_timeout=2, read_timeout=5, keepalive_timeout=30)
    loop = asyncio.get_running_loop()
    try:
        slow_body = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0.4, b"hello"]
        up = await scripted([OK_HELLO], [1.0, OK_HELLO], slow_body)
        key = origin_key(up.url)
        assert await fetch(pool, up) == (200, b"hello")  # the connection's timer: 5 s away
        started = loop.time()
        with pytest.raises(HeadTimeout):
            await pool.request("GET", key, "/x", HOST, head_within=0.2)
        assert loop.time() - started < 0.9
        resp = await pool.request("GET", key, "/x", HOST, head_within=0.2)
        try:
            assert await resp.read() == b"hello"  # 0.4 s after the head: not bounded
        finally:
            resp.release()
    finally:
        await pool.close()


async def test_a_connection_closed_before_any_response_is_disconnected(
    pool: Pool, scripted
) -> None:
    up = await scripted([None])
    with pytest.raises(Disconnected):
        await fetch(pool, up)


async def test_a_stale_keep_alive_connection_is_retried_once_for_a_get(
    pool: Pool, scripted
) -> None:
    # The upstream responds, then closes that connection without saying so: the pool only
    # notices on its next request (the race of RFC 9112 §9.3.1).
    up = await scripted([OK_HELLO], [None], [OK_HELLO])
    assert await fetch(pool, up) == (200, b"hello")
    assert await fetch(pool, up) == (200, b"hello")
    assert up.connections == 2


async def test_a_stale_keep_alive_connection_is_retried_only_once_and_never_for_a_post(
    pool: Pool, scripted
) -> None:
    up = await scripted([OK_HELLO], [None], [None], [OK_HELLO], [None])
    assert await fetch(pool, up) == (200, b"hello")
    with pytest.raises(Disconnected):  # the stale one, then the new one closed too
        await fetch(pool, up)
    assert up.connections == 2 and len(up.requests) == 3
    assert await fetch(pool, up) == (200, b"hello")  # a third connection, kept alive
    with pytest.raises(Disconnected):  # a POST's body might have been acted on: not again
        await fetch(pool, up, "POST", body=b"abc")
    assert up.connections == 3 and len(up.requests) == 5


async def test_request_head_carries_length_or_chunks(pool: Pool, scripted) -> None:
    up = await scripted([OK_HELLO])
    await fetch(pool, up, "POST", body=b"abc")
    await fetch(pool, up, "POST")

    class Stream:
        async def iter_any(self) -> AsyncIterator[bytes]:
            yield b"ab"
            yield b"c"

    await fetch(pool, up, "PUT", body=Stream())
    assert b"Content-Length: 3\r\n" in up.requests[0]
    assert b"Content-Length: 0\r\n" in up.requests[1]
    assert b"Transfer-Encoding: chunked\r\n" in up.requests[2]


def test_a_field_with_a_line_break_is_never_sent() -> None:
    for fields in (["X: a\r\nInjected: 1"], ["X: a\nInjected: 1"], ["X: a\rb"]):
        with pytest.raises(ValueError):
            request_head("GET", "/x", fields, None)
    with pytest.raises(ValueError):
        request_head("GET", "/x HTTP/1.1\r\nInjected: 1\r\nX: /y", [], None)
    assert request_head("GET", "/x", ["Host: u"], None) == (
        b"GET /x HTTP/1.1\r\nHost: u\r\n\r\n",
        False,
    )


# Through the proxy


async def test_bytes_past_content_length_through_the_proxy_are_a_clean_cached_response(
    start_proxy: StartProxy, http: aiohttp.ClientSession, scripted
) -> None:
    up = await scripted([OK_HELLO + b"EXTRA"])
    proxy = await start_proxy(up.url, cache={"ttl": 60})
    for cache in ("MISS", "HIT"):
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 200 and await resp.read() == b"hello"
            assert resp.headers["X-Cache"] == cache
    assert len(up.requests) == 1


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["bad-status-line", "te-and-cl"],
)
async def test_a_response_that_does_not_frame_is_a_502_json_error(
    start_proxy: StartProxy, http: aiohttp.ClientSession, scripted, response: bytes
) -> None:
    up = await scripted([response])
    proxy = await start_proxy(up.url, cache={"ttl": 60})
    for path in ("/cached", "/forwarded"):
        method = "GET" if path == "/cached" else "POST"
        async with http.request(method, url_of(proxy, path)) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"] == "upstream_invalid_response"


async def test_a_short_body_through_the_proxy_is_a_502_and_never_stored(
    start_proxy: StartProxy, http: aiohttp.ClientSession, scripted
) -> None:
    up = await scripted(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nCache-Control: max-age=60\r\n\r\nhello", None]
    )
    proxy = await start_proxy(up.url, cache={"ttl": 60})
    for _ in range(2):
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 502
    assert len(up.requests) == 2


@pytest.mark.parametrize("route", ["cached", "forwarded"])
async def test_field_values_not_in_utf8_reach_the_client_as_sent(
    start_proxy: StartProxy, scripted, route: str
) -> None:
    up = await scripted([OCTETS])
    proxy = await start_proxy(up.url, cache={"ttl": 60} if route == "cached" else None)
    ask = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    got = await raw_exchange(proxy.proxy_port, ask)
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\nok")
    assert b"\r\nX-Name: caf\xc3\xa9 \xff\xfe\r\nX-Name: plain\r\n" in got


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"


@pytest.mark.parametrize("route", ["cached", "forwarded"])
async def test_early_hints_reach_an_http11_client_first_and_are_never_stored(
    start_proxy: StartProxy, scripted, route: str
) -> None:
    up = await scripted([EARLY_HINTS, 0.02, OK_HELLO])
    proxy = await start_proxy(up.url, cache={"ttl": 60} if route == "cached" else None)
    ask = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    first = await raw_exchange(proxy.proxy_port, ask)
    assert first.startswith(EARLY_HINTS[:-2])  # our Via follows its fields
    assert b"HTTP/1.1 200 OK" in first and first.endswith(b"hello")
    again = await raw_exchange(proxy.proxy_port, ask)
    if route == "cached":  # the hit has neither the 103 nor its fields
        assert again.startswith(b"HTTP/1.1 200 OK") and b"Link:" not in again
        assert b"X-Cache: HIT" in again
    else:
        assert again.startswith(EARLY_HINTS[:-2])


async def test_early_hints_never_reach_an_http10_client(start_proxy: StartProxy, scripted) -> None:
    up = await scripted([EARLY_HINTS + OK_HELLO])
    proxy = await start_proxy(up.url)
    got = await raw_exchange(proxy.proxy_port, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    # One status line: no interim one (a request id's hex digits may well hold "103").
    assert got.startswith(b"HTTP/1.0 200 OK") and got.count(b"HTTP/1.") == 1


# TLS to the upstream


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by Debian's openssl."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command: apt-get install openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def tls_upstream(certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"over {request.scheme}", headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/x", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_an_upstream_certificate_nobody_trusts_is_a_502(
    start_proxy: StartProxy, http: aiohttp.ClientSession, tls_upstream: str
) -> None:
    proxy = await start_proxy(
        tls_upstream, upstream={"url": tls_upstream, "retries": {"attempts": 3}}
    )
    async with http.get(url_of(proxy, "/x")) as resp:
        assert resp.status == 502
        assert "certificate" in (await resp.json())["message"].lower()
    assert proxy.upstream.stats()[0].retries == 0  # it would fail the same way again


async def test_an_upstream_over_tls_with_its_ca_trusted(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    tls_upstream: str,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # OpenSSL's own variable
    proxy = await start_proxy(tls_upstream)
    for _ in range(3):
        async with http.get(url_of(proxy, "/x")) as resp:
            assert (resp.status, await resp.text()) == (200, "over https")
    assert proxy.upstream.pool_stats().opened == 1
