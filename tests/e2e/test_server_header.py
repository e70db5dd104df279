"""`listen.server_header`: the Server field of responses the upstream gave none, on misses,
hits (the prepared head), the proxy's own errors and the admin port; the upstream's own
Server always passes through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.adapters.aiohttp_internals import server_field, set_server_field
from proxy.server.app import ProxyServer
from tests.conftest import StartProxy, StartUpstream, free_port

ORIGIN = "origin/1.0"  # the upstream's own Server, on /named


@pytest.fixture(autouse=True)
def _server_field_restored() -> Iterator[None]:
    # Process-wide (aiohttp's own global): the upstreams of later tests must not inherit it.
    before = server_field()
    yield
    set_server_field(before)


async def _no_server(request: web.Request, response: web.StreamResponse) -> None:
    # The test upstream runs in this process, whose aiohttp the proxy set: it sends no
    # Server unless a handler does, as an upstream without one would.
    if response.headers.get("Server") != ORIGIN:
        response.headers.popall("Server", None)


async def _upstream(start_upstream: StartUpstream) -> str:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain", headers={"Cache-Control": "max-age=60"})

    async def named(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=60", "Server": ORIGIN}
        return web.Response(text="named", headers=headers)

    app = web.Application()
    app.on_response_prepare.append(_no_server)
    app.router.add_get("/plain", plain)
    app.router.add_get("/named", named)
    return (await start_upstream(app)).url


async def _servers(proxy: ProxyServer) -> dict[str, list[str]]:
    """Each kind of response's Server values."""
    out: dict[str, list[str]] = {}
    base = f"http://127.0.0.1:{proxy.proxy_port}"
    async with aiohttp.ClientSession() as http:
        for name, url in (
            ("miss", f"{base}/plain"),
            ("hit", f"{base}/plain"),
            ("named miss", f"{base}/named"),
            ("named hit", f"{base}/named"),
            ("admin", f"http://127.0.0.1:{proxy.admin_port}/livez"),
        ):
            async with http.get(url) as resp:
                assert resp.status == 200
                if name.endswith("hit"):
                    assert resp.headers["X-Cache"] == "HIT"
                out[name] = resp.headers.getall("Server", [])
        async with http.request("PURGE", f"{base}/plain") as resp:  # the proxy's own error
            assert resp.status == 405
            out["refused"] = resp.headers.getall("Server", [])
    return out


@pytest.mark.parametrize(
    ("setting", "ours"), [({}, ["cacheproxy"]), ({"server_header": "edge/2"}, ["edge/2"])]
)
async def test_our_server_field_where_the_upstream_gave_none(
    start_upstream: StartUpstream,
    start_proxy: StartProxy,
    setting: dict[str, Any],
    ours: list[str],
) -> None:
    url = await _upstream(start_upstream)
    proxy = await start_proxy(url, listen=setting, cache={"ttl": 60})
    assert await _servers(proxy) == {
        "miss": ours,
        "hit": ours,
        "named miss": ["origin/1.0"],
        "named hit": ["origin/1.0"],
        "admin": ours,
        "refused": ours,
    }


async def test_server_header_false_sends_none_of_ours(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    url = await _upstream(start_upstream)
    proxy = await start_proxy(url, listen={"server_header": False}, cache={"ttl": 60})
    assert await _servers(proxy) == {
        "miss": [],
        "hit": [],
        "named miss": ["origin/1.0"],
        "named hit": ["origin/1.0"],
        "admin": [],
        "refused": [],
    }
    # The proxy's own errors too: an upstream that is not there.
    down = await start_proxy(f"http://127.0.0.1:{free_port()}", listen={"server_header": False})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{down.proxy_port}/x") as resp,
    ):
        assert resp.status == 502 and "Server" not in resp.headers
