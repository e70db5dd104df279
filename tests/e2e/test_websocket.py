"""WebSocket (and any Upgrade) through a running proxy: a real aiohttp WebSocket client, a real
aiohttp WebSocket server upstream, the route's `upgrade:` section deciding."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from proxy.server.app import ProxyServer
from tests.conftest import ProxyProcess, StartProxy, StartUpstream

ROUTES = [
    {"name": "live", "match": {"prefix": "/ws"}, "upgrade": {"idle_timeout": 5}},
    {"name": "plain", "match": {"prefix": "/plain"}},
]


@dataclass
class WsOrigin:
    """An upstream speaking WebSocket at every path; what it saw, for the tests to check."""

    url: str = ""
    upgrades: int = 0  # WebSocket handshakes it accepted
    requests: list[web.Request] = field(default_factory=list)
    closed: list[int | None] = field(default_factory=list)  # close codes it received or sent
    sent: int = 0  # bytes of `flood` messages sent so far
    received: int = 0  # bytes of binary messages received at /ws/sink
    reading: asyncio.Event = field(default_factory=asyncio.Event)  # /ws/sink reads once set
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.requests.append(request)
            if request.path.startswith("/ws/refuse"):
                return web.json_response({"error": "no"}, status=403)
            ws = web.WebSocketResponse(max_msg_size=0, heartbeat=None)
            await ws.prepare(request)  # 400 when the request is no WebSocket handshake
            self.upgrades += 1
            if request.path == "/ws/sink":
                await self.reading.wait()
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        if msg.data == "close please":
                            await ws.close(code=4001, message=b"as asked")
                        elif msg.data.startswith("flood "):
                            _, count, size = msg.data.split()
                            for _ in range(int(count)):
                                await ws.send_bytes(b"f" * int(size))
                                self.sent += int(size)
                        else:
                            await ws.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY and request.path == "/ws/sink":
                        self.received += len(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await ws.send_bytes(msg.data)
            finally:
                self.closed.append(ws.close_code)
                self.done.set()
            return ws

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handler)
        return app


@pytest.fixture
async def ws_origin(start_upstream: StartUpstream) -> WsOrigin:
    o = WsOrigin()
    o.url = (await start_upstream(o.app())).url
    return o


def ws_url(proxy: ProxyServer, path: str) -> str:
    return f"http://127.0.0.1:{proxy.proxy_port}{path}"


async def metrics(http: aiohttp.ClientSession, proxy: ProxyServer) -> str:
    url = f"http://127.0.0.1:{proxy.admin_port}/metrics"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as rendered
    m = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"no {name}{{{want}}} in /metrics"
    return float(m.group(1))


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.02)


async def test_text_binary_and_large_messages_echo_through_the_proxy(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ws_origin.url, routes=ROUTES)
    big = bytes(range(256)) * (4 * 4096)  # 4 MiB: many times every buffer on the way
    async with http.ws_connect(ws_url(proxy, "/ws/echo"), max_msg_size=0) as ws:
        assert ws.protocol is None and ws._response.status == 101
        assert "X-Request-ID" in ws._response.headers  # the edge's fields are on the 101
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"
        await ws.send_bytes(big)
        assert await ws.receive_bytes(timeout=10) == big
    await asyncio.wait_for(ws_origin.done.wait(), 5)
    assert ws_origin.closed == [1000]  # the client's close reached the upstream
    seen = ws_origin.requests[0].headers
    assert seen["Upgrade"] == "websocket" and seen["Connection"].lower() == "upgrade"
    assert "Sec-WebSocket-Key" in seen and seen["Sec-WebSocket-Version"] == "13"
    assert seen["X-Forwarded-For"] == "127.0.0.1"  # forwarded as any request is
    text = await metrics(http, proxy)
    assert sample(text, "cacheproxy_upgrades_opened_total", route="live") == 1
    assert sample(text, "cacheproxy_upgrades_open", route="live") == 0
    closed = [
        sample(text, "cacheproxy_upgrades_closed_total", route="live", reason=reason)
        for reason in ("client", "upstream", "idle_timeout", "shutdown")
    ]
    assert closed[0] + closed[1] == 1 and closed[2:] == [0, 0]  # who closed first: a race
    up = sample(text, "cacheproxy_upgrade_bytes_total", route="live", direction="to_upstream")
    down = sample(text, "cacheproxy_upgrade_bytes_total", route="live", direction="to_client")
    assert up > len(big) and down > len(big)  # framed, masked on the way up
    assert sample(text, "cacheproxy_requests_total", route="live", method="GET", status="101") == 1


async def test_the_upstreams_close_reaches_the_client_with_its_code(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(ws_origin.url, routes=ROUTES)
    async with http.ws_connect(ws_url(proxy, "/ws/a")) as ws:
        await ws.send_str("close please")
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "as asked"
    # Which side's close the proxy sees first is a race (the client answers at once).
    await until(lambda: sum(proxy.tunnels.by_route["live"].closed.values()) == 1)
    # Counted closed as it ends (Tunnel.end), open until its handler returns, a step later.
    await until(lambda: proxy.tunnels.by_route["live"].open == 0)


async def test_an_idle_tunnel_is_closed_on_both_sides(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    routes = [{"name": "live", "match": {"prefix": "/ws"}, "upgrade": {"idle_timeout": "300ms"}}]
    proxy = await start_proxy(ws_origin.url, routes=routes)
    async with http.ws_connect(ws_url(proxy, "/ws/a"), autoping=False, heartbeat=None) as ws:
        for _ in range(4):  # traffic keeps it open past its idle timeout
            await asyncio.sleep(0.15)
            await ws.send_str("ping")
            assert await ws.receive_str(timeout=5) == "ping"
        started = time.monotonic()
        msg = await ws.receive(timeout=5)
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSE, WSMsgType.ERROR)
        assert 0.2 < time.monotonic() - started < 2
    await asyncio.wait_for(ws_origin.done.wait(), 5)  # the upstream's side was closed too
    assert proxy.tunnels.by_route["live"].closed["idle_timeout"] == 1
    # Observed as it closed, a second after its head: its time is the switch's, not that.
    meter = proxy.observer.meters.by_route["live"]
    await until(lambda: meter.responses.get(("GET", 101, "bypass")) == 1)
    assert meter.durations["bypass"].total < 0.5


async def test_an_upstream_refusing_the_upgrade_is_relayed_and_not_cached(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # A caching route: neither the refusal nor the upgrade is ever served from the cache.
    routes = [{"name": "live", "match": {"prefix": "/ws"}, "upgrade": True, "cache": {"ttl": 60}}]
    proxy = await start_proxy(ws_origin.url, routes=routes)
    for _ in range(2):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(proxy, "/ws/refuse"))
        assert refused.value.status == 403
        assert refused.value.headers is not None
        assert refused.value.headers["X-Cache"] == "BYPASS"
    for _ in range(2):
        async with http.ws_connect(ws_url(proxy, "/ws/echo")) as ws:
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "x"
    assert len(ws_origin.requests) == 4 and ws_origin.upgrades == 2
    assert proxy.tunnels.by_route["live"].opened == 2


async def test_a_route_without_upgrade_serves_the_request_as_plain_http(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """As NGINX without `proxy_set_header Upgrade` (and RFC 9110 §7.8 allows): the Upgrade
    field is dropped, so the upstream sees a plain GET, and its answer is the client's."""
    proxy = await start_proxy(ws_origin.url, routes=ROUTES)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(ws_url(proxy, "/plain/x"))
    assert refused.value.status == 400  # aiohttp's answer to a GET that is no handshake
    seen = ws_origin.requests[0].headers
    assert "Upgrade" not in seen and "upgrade" not in seen.get("Connection", "").lower()
    assert ws_origin.upgrades == 0
    assert "plain" not in proxy.tunnels.by_route


async def test_max_open_bounds_the_tunnels_of_a_route(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    routes = [{"name": "live", "match": {"prefix": "/ws"}, "upgrade": {"max_open": 1}}]
    proxy = await start_proxy(ws_origin.url, routes=routes)
    async with http.ws_connect(ws_url(proxy, "/ws/a")) as ws:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(proxy, "/ws/b"))
        assert refused.value.status == 503
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=5) == "still here"
    await until(lambda: proxy.tunnels.by_route["live"].open == 0)
    async with http.ws_connect(ws_url(proxy, "/ws/c")) as ws:  # a place again
        await ws.send_str("x")
        assert await ws.receive_str(timeout=5) == "x"
    text = await metrics(http, proxy)
    assert sample(text, "cacheproxy_upgrades_refused_total", route="live") == 1


async def test_a_client_that_does_not_read_pauses_the_upstream(
    ws_origin: WsOrigin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    """Flow control, in the proxy as users run it (uvloop's transports when installed): what
    it holds for a slow client is bounded, so the upstream's sends stall (its socket fills)
    until the client reads; then every byte arrives, and the tunnel carries on."""
    proxy = proxy_process(ws_origin.url, routes=ROUTES)
    count, size = 96, 1024 * 1024  # 96 MiB: several times every socket buffer on the way
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{proxy.port}/ws/flood", max_msg_size=0) as ws,
    ):
        await ws.send_str(f"flood {count} {size}")
        await asyncio.sleep(1.0)
        stalled_at = ws_origin.sent
        await asyncio.sleep(0.5)
        assert ws_origin.sent == stalled_at < count * size // 2  # about 20 MiB here
        received = 0
        while received < count * size:
            received += len(await ws.receive_bytes(timeout=10))
        assert received == count * size
        await ws.send_bytes(b"after")
        assert await ws.receive_bytes(timeout=5) == b"after"


async def test_an_upstream_that_does_not_read_pauses_the_client(
    ws_origin: WsOrigin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """The other way: the client's sends stall while its upstream reads nothing."""
    proxy = await start_proxy(ws_origin.url, routes=ROUTES)
    count, size = 96, 1024 * 1024
    sent = 0
    async with http.ws_connect(ws_url(proxy, "/ws/sink"), max_msg_size=0) as ws:

        async def send_all() -> None:
            nonlocal sent
            for _ in range(count):
                await ws.send_bytes(b"s" * size)  # waits while the socket is full
                sent += size

        sending = asyncio.create_task(send_all())
        await asyncio.sleep(1.0)
        stalled_at = sent
        await asyncio.sleep(0.5)
        assert sent == stalled_at < count * size // 2 and not sending.done()
        ws_origin.reading.set()
        await asyncio.wait_for(sending, 30)
        await until(lambda: ws_origin.received == count * size, within=30)


async def test_bytes_sent_with_the_101_and_right_after_the_request_head_pass(
    start_proxy: StartProxy,
) -> None:
    """Nothing is parsed once switched: the bytes the upstream sends with its 101 and those
    the client sends right after its head (before any 101) are the tunnel's first bytes."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"\r\nUpgrade: websocket\r\n" in head and b"\r\nConnection: Upgrade\r\n" in head
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n"
            b"\r\nready;"
        )
        while data := await reader.read(65536):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    routes = [{"name": "raw", "match": {"prefix": "/e"}, "upgrade": True}]
    proxy = await start_proxy(f"http://127.0.0.1:{port}", routes=routes)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    writer.write(
        b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\nearly;"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nUpgrade: WebSocket\r\n" in head and b"\r\nConnection: Upgrade\r\n" in head
    assert await asyncio.wait_for(reader.readexactly(len(b"ready;EARLY;")), 5) == b"ready;EARLY;"
    writer.write(b"later")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"LATER"
    writer.close()
    server.close()


@pytest.mark.parametrize(
    "upgrade",
    [b"Upgrade: h2c", b"Upgrade: h2c, websocket", b"Upgrade: websocket\r\nContent-Length: 2"],
    ids=["h2c", "h2c-first", "with-body"],
)
async def test_an_upgrade_to_anything_else_is_served_as_plain_http(
    start_proxy: StartProxy, ws_origin: WsOrigin, upgrade: bytes
) -> None:
    """The Upgrade field is dropped and the request answered as HTTP; nothing after its head
    ever reaches the upstream as bytes of another protocol (h2c smuggling)."""
    routes = [{"name": "live", "match": {"prefix": "/ws"}, "upgrade": True}]
    proxy = await start_proxy(ws_origin.url, routes=routes)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    body = b"{}" if b"Content-Length" in upgrade else b""
    writer.write(
        b"GET /ws/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n" + upgrade + b"\r\n\r\n" + body
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head  # aiohttp: no handshake
    assert [r.path for r in ws_origin.requests] == ["/ws/x"]
    seen = ws_origin.requests[0].headers
    assert "Upgrade" not in seen and "upgrade" not in seen.get("Connection", "").lower()
    assert ws_origin.upgrades == 0


async def test_a_101_for_a_protocol_not_offered_is_refused(start_proxy: StartProxy) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
        await reader.read()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    routes = [{"name": "ws", "match": {"prefix": "/"}, "upgrade": True}]
    proxy = await start_proxy(f"http://127.0.0.1:{port}", routes=routes)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"http://127.0.0.1:{proxy.proxy_port}/x")
    assert refused.value.status == 502
    assert proxy.tunnels.by_route["ws"].opened == 0
    server.close()


async def test_sigterm_closes_open_tunnels_when_the_grace_is_over(
    ws_origin: WsOrigin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(ws_origin.url, routes=ROUTES, shutdown_grace=1)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{proxy.port}/ws/a") as ws,
    ):
        await ws.send_str("before")
        assert await ws.receive_str(timeout=5) == "before"
        proxy.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.sleep(0.3)
        await ws.send_str("during the grace")  # the tunnel still carries both ways
        assert await ws.receive_str(timeout=5) == "during the grace"
        msg = await ws.receive(timeout=10)
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSE, WSMsgType.ERROR)
        assert 0.8 < time.monotonic() - started < 5
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, proxy.proc.wait, 10) == 0
    await asyncio.wait_for(ws_origin.done.wait(), 5)  # its upstream side was closed too
