"""Upstream failures become clean responses; the pool survives upstreams that close connections."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartProxy, StartUpstream, free_port, url_of


async def test_refused_upstream_is_a_502_json_error_without_its_address(
    start_proxy: StartProxy, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    proxy = await start_proxy(f"http://127.0.0.1:{port}")  # nothing listens there
    async with http.get(url_of(proxy, "/x")) as resp:
        assert resp.status == 502
        assert resp.content_type == "application/json"
        body = await resp.json()
        request_id = resp.headers["X-Request-ID"]
    # The client learns what failed, not where the upstream lives nor what the OS said...
    assert body == {
        "error": "upstream_unavailable",
        "message": "The upstream API is unreachable",
        "request_id": request_id,
    }
    # ...the log does.
    logged = [r.getMessage() for r in caplog.records if "upstream_unavailable" in r.getMessage()]
    assert any(f"127.0.0.1:{port}" in line and "[Errno" in line for line in logged)


async def test_an_invalid_response_is_a_502_without_the_upstreams_address(
    start_proxy: StartProxy, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 502
            body = await resp.json()
            request_id = resp.headers["X-Request-ID"]
    assert body == {
        "error": "upstream_invalid_response",
        "message": "The upstream API sent a response that is not valid HTTP",
        "request_id": request_id,
    }
    assert any(f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


async def test_slow_upstream_is_a_504_json_error(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    up = await start_upstream(app)
    proxy = await start_proxy(up.url, upstream={"url": up.url, "timeouts": {"read": 0.3}})
    async with http.get(url_of(proxy, "/slow")) as resp:
        assert resp.status == 504
        assert (await resp.json())["error"] == "upstream_timeout"


async def dropping_upstream(head: bytes) -> tuple[asyncio.Server, int]:
    """Sends headers and part of a body, then drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"a" * 5000 + b"\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_upstream_dropping_mid_response_is_never_a_clean_short_body(
    start_proxy: StartProxy, http: aiohttp.ClientSession, head: bytes
) -> None:
    server, port = await dropping_upstream(head)
    async with server:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        # The proxy itself is fine afterwards.
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 200


async def test_upstream_closing_idle_keepalive_connections_is_invisible(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    posts: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        if request.method == "POST":
            posts.append(await request.read())
        return web.Response(text=request.method)

    app = web.Application()
    app.router.add_route("*", "/k", handler)
    # The upstream closes connections idle for more than 1 s; our pool keeps them for 300 s.
    up = await start_upstream(app, keepalive_timeout=1.0)
    proxy = await start_proxy(up.url)
    for round_ in range(2):
        async with http.get(url_of(proxy, "/k")) as resp:
            assert resp.status == 200
        await asyncio.sleep(1.3)
        async with http.post(url_of(proxy, "/k"), data=f"order-{round_}".encode()) as resp:
            assert resp.status == 200, await resp.text()
        await asyncio.sleep(1.3)
    # Each POST reached the upstream exactly once: never lost, never duplicated.
    assert posts == [b"order-0", b"order-1"]


async def test_client_leaving_mid_download_frees_the_proxy(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(10_000):
                await resp.write(b"x" * 65536)
        except ConnectionResetError:
            pass
        return resp

    app = web.Application()
    app.router.add_get("/endless", endless)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/ok", ok)
    up = await start_upstream(app)
    proxy = await start_proxy(up.url)
    async with http.get(url_of(proxy, "/endless")) as resp:
        await resp.content.readexactly(200_000)
        resp.close()
    async with http.get(url_of(proxy, "/ok")) as resp:
        assert await resp.text() == "ok"


async def test_small_body_cut_short_is_a_clean_502(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # Small bodies are read whole before responding, so a cut is still a clean error.
    server, port = await dropping_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"a" * 5000
    )
    async with server:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"] == "upstream_unavailable"
