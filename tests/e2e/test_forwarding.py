"""Faithful forwarding through the real proxy to a real upstream, over loopback sockets."""

from __future__ import annotations

import asyncio
import gzip
import json

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartProxy, StartUpstream, raw_exchange, url_of


def echo_app() -> web.Application:
    """Responds with what it received, so tests can see exactly what was forwarded."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_len": len(body),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def test_methods_including_extensions_are_forwarded(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    # PURGE is the cache's own and never forwarded (tests/e2e/test_purge_method.py).
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "M-SEARCH", "REPORT"):
        async with http.request(method, url_of(proxy, "/m")) as resp:
            assert resp.status == 200, method
            assert (await resp.json())["method"] == method


async def test_path_and_query_are_forwarded_byte_for_byte(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    target = "/a%2Fb//c/../d;p=1?q=%20x&q=a+b&empty=&%7E=%7e&utf=%E2%82%AC"
    raw = await raw_exchange(
        proxy.proxy_port,
        f"GET {target} HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 200")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["raw_path"] == target


async def test_request_headers_hygiene_and_forwarding_headers(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    headers = {
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "drop me",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "203.0.113.7",
        "X-Custom": "kept",
        "Host": "api.example.com",
    }
    no_auto = ("User-Agent", "Accept", "Accept-Encoding")
    async with http.get(url_of(proxy, "/h"), headers=headers, skip_auto_headers=no_auto) as resp:
        seen = {k.lower(): v for k, v in (await resp.json())["headers"]}
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in seen, hop
    assert "x-secret-hop" not in seen.get("connection", "").lower()  # ours, not the client's
    assert seen["x-custom"] == "kept"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # no trusted_proxies: the client's is dropped
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == "api.example.com"
    assert seen["host"] == f"127.0.0.1:{up.port}"
    assert seen["via"] == "1.1 cacheproxy"
    # aiohttp's client must not invent headers the client never sent.
    assert not {"user-agent", "accept", "accept-encoding"} & seen.keys()


async def test_response_headers_hygiene_and_repeated_headers(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    async def cookies(_: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "a=1; Path=/")
        resp.headers.add("Set-Cookie", "b=2; Path=/")
        resp.headers["Connection"] = "X-Internal"
        resp.headers["X-Internal"] = "secret"
        resp.headers["Keep-Alive"] = "timeout=5"
        return resp

    app = web.Application()
    app.router.add_get("/c", cookies)
    proxy = await start_proxy((await start_upstream(app)).url)
    async with http.get(url_of(proxy, "/c")) as resp:
        assert resp.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
        assert "X-Internal" not in resp.headers
        assert "Keep-Alive" not in resp.headers
        assert resp.headers["Via"] == "1.1 cacheproxy"
        assert await resp.text() == "ok"


async def test_content_encoding_passes_through_untouched(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    compressed = gzip.compress(b'{"data": "' + b"x" * 5000 + b'"}')

    async def gz(_: web.Request) -> web.Response:
        return web.Response(
            body=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    app = web.Application()
    app.router.add_get("/gz", gz)
    proxy = await start_proxy((await start_upstream(app)).url)
    async with http.get(url_of(proxy, "/gz"), headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(compressed))
        assert await resp.read() == compressed


@pytest.mark.parametrize("status", [200, 201, 204, 299, 404, 418, 499, 500, 599, 999])
async def test_any_status_code_passes_through(
    start_upstream: StartUpstream,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    status: int,
) -> None:
    async def odd(_: web.Request) -> web.Response:
        return web.Response(status=status, reason="Odd Reason", text="" if status == 204 else "b")

    app = web.Application()
    app.router.add_get("/s", odd)
    proxy = await start_proxy((await start_upstream(app)).url)
    async with http.get(url_of(proxy, "/s")) as resp:
        assert resp.status == status
        assert resp.reason == "Odd Reason"
        assert await resp.read() == (b"" if status == 204 else b"b")


async def raw_upstream(response: bytes) -> tuple[asyncio.Server, int]:
    """An upstream that writes exact bytes: for what aiohttp's server cannot be made to send."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_interim_1xx_responses_are_followed_by_the_final_one(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    server, port = await raw_upstream(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal"
    )
    async with server:
        proxy = await start_proxy(f"http://127.0.0.1:{port}")
        async with http.get(url_of(proxy, "/")) as resp:
            assert resp.status == 200
            assert resp.headers["X-Final"] == "yes"
            assert await resp.read() == b"final"


async def test_head_keeps_content_length_and_sends_no_body(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"z" * 1234)

    app = web.Application()
    app.router.add_get("/big", big)  # aiohttp serves HEAD from GET routes
    proxy = await start_proxy((await start_upstream(app)).url)
    raw = await raw_exchange(
        proxy.proxy_port, b"HEAD /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1234" in head
    assert body == b""


async def test_expect_100_continue_upload(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    async with http.post(url_of(proxy, "/up"), data=b"x" * 100_000, expect100=True) as resp:
        assert resp.status == 200
        assert (await resp.json())["body_len"] == 100_000


async def test_route_with_its_own_upstream(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def named(name: str) -> web.Application:
        async def h(_: web.Request) -> web.Response:
            return web.Response(text=name)

        app = web.Application()
        app.router.add_get("/{tail:.*}", h)
        return app

    main, other = await start_upstream(named("main")), await start_upstream(named("other"))
    proxy = await start_proxy(
        main.url,
        routes=[
            {"name": "other", "match": {"prefix": "/api/other/"}, "upstream": other.url},
            {"name": "posts-only", "match": {"prefix": "/api/", "methods": ["POST"]}},
        ],
    )
    async with http.get(url_of(proxy, "/api/other/x")) as resp:
        assert await resp.text() == "other"
    async with http.get(url_of(proxy, "/api/x")) as resp:
        assert await resp.text() == "main"


async def test_absolute_form_for_our_upstream_is_forwarded_and_others_refused(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    proxy_url = url_of(proxy, "")
    # aiohttp, like curl with HTTP_PROXY, sends absolute-form targets to an HTTP proxy.
    async with http.get(f"{up.url}/via-proxy?x=1", proxy=proxy_url) as resp:
        assert resp.status == 200
        assert (await resp.json())["raw_path"] == "/via-proxy?x=1"
    async with http.get("http://elsewhere.invalid:9/steal", proxy=proxy_url) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden_host"
    # Same host, other port: still not ours.
    raw = await raw_exchange(
        proxy.proxy_port,
        f"GET http://127.0.0.1:{up.port + 1}/x HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 403")
    raw = await raw_exchange(
        proxy.proxy_port,
        f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 405")  # no tunnels, not even to our own upstream
    assert len(up.seen) == 1


async def test_malformed_requests_get_400_not_a_traceback(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    for bad in (
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET ftp://x/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        raw = await raw_exchange(proxy.proxy_port, bad)
        assert raw.split(b" ", 2)[1] == b"400", (bad, raw[:200])
        assert b"Traceback" not in raw
    assert up.seen == []


async def test_admin_health(start_upstream: StartUpstream, start_proxy: StartProxy) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(up.url)
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proxy.admin_port}/health") as resp,
    ):
        assert resp.status == 200
        body = await resp.text()
        assert (await resp.json())["status"] == "healthy"
        # No token is needed here, so nothing about the upstream (its URL may hold a password).
        assert up.url not in body and "127.0.0.1" not in body


async def test_upstream_base_path_is_prepended(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    up = await start_upstream(echo_app())
    proxy = await start_proxy(f"{up.url}/v2/")
    async with http.get(url_of(proxy, "/items/a%20b?x=1")) as resp:
        assert (await resp.json())["raw_path"] == "/v2/items/a%20b?x=1"
