"""Request bodies and the upstream's protection: a client's slow or abandoned upload is the
client's doing. It never counts against the upstream, and never holds an upstream slot
while the body is still on its way (beyond `upstream.timeouts.client_body`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NamedTuple

import aiohttp
from aiohttp import web

from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_upstream_protection import until


class Client(NamedTuple):
    """A raw connection to the proxy port: the response comes on `reader`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def send_then(port: int, head: bytes, body: bytes) -> Client:
    """A client that sends `head` and the start of its body, and then stops there."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    return Client(reader, writer)


def hit_once(origin: Origin, path: str) -> Callable[[], bool]:
    return lambda: origin.hits[path] == 1


async def response_of(client: Client, wait: float = 10) -> bytes:
    """The proxy's next response, head and Content-Length body."""
    reader, writer = client
    try:
        async with asyncio.timeout(wait):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return head + await reader.readexactly(length)
    finally:
        writer.close()


async def test_abandoned_uploads_never_count_against_the_upstream(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url)
    port = proxy.proxy_port
    for i in range(3):
        # A large body streams upstream as it comes; the client goes half-way through.
        head = f"POST /upload/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        client = await send_then(port, head.encode(), b"x" * 20_000)
        await until(hit_once(origin, f"/upload/{i}"))
        client.writer.transport.abort()
        # A small one is read whole first: its client going never reaches the upstream.
        head = f"POST /small/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        client = await send_then(port, head.encode(), b"x" * 10)
        await asyncio.sleep(0.05)
        client.writer.transport.abort()
    stats = proxy.upstream.stats()[0]
    await until(lambda: proxy.upstream.stats()[0].in_flight == 0)
    await until(lambda: proxy.listener_stats.open_connections == 0)
    stats = proxy.upstream.stats()[0]
    assert (stats.requests, stats.failures, stats.circuit) == (3, 0, "closed")
    assert not any(path.startswith("/small/") for path in origin.hits)
    resp, body = await get(http, proxy, "/after")
    assert (resp.status, body) == (200, b"body of /after")


async def test_a_slow_small_upload_holds_no_upstream_slot(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text=f"{r.path}: {r.content_length} bytes")
    pool = {"max_connections": 1, "queue_timeout": 1}
    proxy = await start_proxy(origin.url, upstream={"url": origin.url, "pool": pool})
    head = b"POST /slow-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
    head += b"Connection: close\r\n\r\n"
    slow = await send_then(proxy.proxy_port, head, b"0")

    async def dribble() -> None:
        for i in range(1, 10):  # a byte every 0.25 s: 2.25 s for the body
            await asyncio.sleep(0.25)
            slow.writer.write(str(i).encode())

    dribbling = asyncio.create_task(dribble())
    await asyncio.sleep(0.3)
    # The only slot is free: the upload is still arriving, into the proxy's buffer.
    started = time.monotonic()
    resp, body = await get(http, proxy, "/quick")
    assert (resp.status, body) == (200, b"/quick: None bytes")
    assert time.monotonic() - started < 1  # never queued behind the upload
    assert not dribbling.done()
    await dribbling
    response = await response_of(slow)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"/slow-upload: 10 bytes")
    assert proxy.upstream.stats()[0].queue_waits == 0


async def test_a_stalled_streamed_upload_gets_408_and_gives_its_slot_back(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    pool = {"max_connections": 1, "queue_timeout": 8}
    proxy = await start_proxy(origin.url, upstream={"url": origin.url, "pool": pool})
    head = b"POST /stalls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    stalled = await send_then(proxy.proxy_port, head, b"5\r\nhello\r\n")
    await until(lambda: origin.hits["/stalls"] == 1)  # it holds the only slot now
    started = time.monotonic()
    # Queued behind it, and served once the stalled body's 5 s (timeouts.client_body) run
    # out: not after the listener's 60 s for a silent body.
    resp, _ = await get(http, proxy, "/waiting")
    assert resp.status == 200
    assert 4.5 < time.monotonic() - started < 7
    response = await response_of(stalled)
    assert response.startswith(b"HTTP/1.1 408")
    assert b'"error":"request_timeout"' in response and b"Connection: close" in response
    stats = proxy.upstream.stats()[0]
    assert (stats.failures, stats.circuit) == (0, "closed")  # the client's doing


async def test_100_continue_is_sent_only_once_the_upstream_can_take_the_body(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def respond(r: web.Request) -> web.Response:
        if r.path == "/hold":
            await release.wait()
        return web.Response(text=f"{r.path}: {len(await r.read())} bytes")

    origin.respond = respond
    pool = {"max_connections": 1, "queue_timeout": 0.5}
    proxy = await start_proxy(origin.url, upstream={"url": origin.url, "pool": pool})
    holding = asyncio.create_task(get(http, proxy, "/hold"))
    await until(lambda: origin.hits["/hold"] == 1)
    head = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    # No slot comes free: refused without ever being asked for the body.
    waiting = await send_then(proxy.proxy_port, head, b"")
    response = await response_of(waiting)
    assert response.startswith(b"HTTP/1.1 503") and b"100 Continue" not in response
    release.set()
    assert (await holding)[0].status == 200
    # A slot is free: 100 Continue, then the body goes through.
    ready = await send_then(proxy.proxy_port, head, b"")
    async with asyncio.timeout(5):
        interim = await ready.reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    ready.writer.write(b"y" * 100_000)
    response = await response_of(ready)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"/upload: 100000 bytes")
