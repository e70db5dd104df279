"""`listen.max_body_size` and a route's own: a body over the bound gets 413 and the upstream
never gets a whole request; under it, nothing changes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tests.conftest import StartProxy, StartUpstream

ROUTES = [{"name": "uploads", "match": {"prefix": "/uploads/"}, "max_body_size": "64KB"}]


async def upstream(start_upstream: StartUpstream) -> tuple[str, list[int]]:
    """An upstream that records the size of every whole body it received."""
    received: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(text="stored")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/{tail:.*}", handler)
    return (await start_upstream(app)).url, received


async def chunks(size: int, piece: int = 8192) -> AsyncIterator[bytes]:
    for _ in range(size // piece):
        yield b"x" * piece


async def test_a_declared_length_over_the_bound_is_refused_unread(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    url, received = await upstream(start_upstream)
    proxy = await start_proxy(url, listen={"max_body_size": "16KB"}, routes=ROUTES)
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    async with http.post(base + "/api/x", data=b"x" * 20_000) as resp:
        assert resp.status == 413
        body = await resp.json()
        assert body["error"] == "payload_too_large"
        assert "20000 bytes" in body["message"] and "16384" in body["message"]
        assert "X-Request-ID" in resp.headers and body["request_id"]
    async with http.post(base + "/api/x", data=b"x" * 16_384) as resp:  # at the bound: fine
        assert resp.status == 200
    async with http.post(base + "/uploads/a", data=b"x" * 60_000) as resp:  # its route's own
        assert resp.status == 200
    assert received == [16_384, 60_000]  # the refused one never went upstream


async def test_a_chunked_body_past_the_bound_gets_413_and_no_whole_request_upstream(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    url, received = await upstream(start_upstream)
    proxy = await start_proxy(url, routes=ROUTES)
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    async with http.post(base + "/uploads/big", data=chunks(256 * 1024)) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "payload_too_large"
        assert resp.headers.get("Connection") == "close"  # the rest cannot be told apart
    async with http.post(base + "/uploads/small", data=chunks(32 * 1024)) as resp:
        assert resp.status == 200
    async with http.post(base + "/elsewhere", data=chunks(256 * 1024)) as resp:
        assert resp.status == 200  # no bound outside the route: as before
    assert received == [32 * 1024, 256 * 1024]


async def test_settings_accept_sizes_and_routes_inherit_the_listener_bound() -> None:
    from proxy.config.loader import parse_config
    from proxy.pipeline.routes import RouteTable

    text = (
        "upstream: {url: 'http://127.0.0.1:9'}\nlisten: {max_body_size: 1MB}\n"
        "routes: [{name: a, match: {prefix: /a/}}, {name: b, match: {prefix: /b/}, "
        "max_body_size: 10MB}]\n"
    )
    table = RouteTable(parse_config(text, env={}))
    sizes = {route.name: route.max_body_size for route in table.compiled}
    assert sizes == {"default": 2**20, "a": 2**20, "b": 10 * 2**20}
