"""Upstream names through the proxy: answers kept for their records' TTL, the last addresses
kept through a DNS outage, names that do not resolve answered 502 at once, and Happy Eyeballs
past an address that never answers.

A DNS server on loopback (tests/dns_server.py) answers for the upstream's name; the upstreams
listen on 127.0.0.2 and 127.0.0.3, loopback addresses Linux answers without any set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from proxy.upstream.resolve import CaresLookup
from tests.conftest import StartProxy, url_of
from tests.dns_server import DnsServer, dns_server  # noqa: F401

Serve = Callable[[str, int, str], Awaitable[None]]


@pytest.fixture
def port() -> int:
    """A port free on both 127.0.0.2 and 127.0.0.3: one URL, two addresses."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.2", 0))
            try:
                b.bind(("127.0.0.3", a.getsockname()[1]))
            except OSError:
                continue
            return int(a.getsockname()[1])
    raise RuntimeError("no port free on both 127.0.0.2 and 127.0.0.3")


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """An upstream on `host`:`port` answering every GET with `text` (never cached)."""
    runners: list[web.AppRunner] = []

    async def start(host: str, port: int, text: str) -> None:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text=text, headers={"Cache-Control": "no-store"})

        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, host, port).start()

    yield start
    for runner in runners:
        await runner.cleanup()


async def proxy_for(
    start_proxy: StartProxy, server: DnsServer, url: str, **upstream: object
) -> ProxyServer:
    settings: dict[str, object] = {
        "url": url,
        "dns": {"nameservers": [server.address], "min_ttl": 0, "negative_ttl": 2},
        "pool": {"keepalive_timeout": 0},  # a new connection, and so a resolve, per request
        "retries": 0,
        **upstream,
    }
    return await start_proxy(url, upstream=settings)


async def get(http: aiohttp.ClientSession, proxy: ProxyServer) -> tuple[int, str]:
    async with http.get(url_of(proxy, "/x")) as resp:
        return resp.status, await resp.text()


async def test_a_changed_record_is_followed_once_its_ttl_runs_out(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    dns_server: DnsServer,  # noqa: F811
    serve: Serve,
    port: int,
) -> None:
    await serve("127.0.0.2", port, "old")
    await serve("127.0.0.3", port, "new")
    dns_server.records["api.test"] = [("127.0.0.2", 1)]
    proxy = await proxy_for(start_proxy, dns_server, f"http://api.test:{port}")
    assert await get(http, proxy) == (200, "old")
    dns_server.records["api.test"] = [("127.0.0.3", 1)]
    assert await get(http, proxy) == (200, "old")  # within the TTL: not asked again
    await asyncio.sleep(1.2)
    seen = [await get(http, proxy) for _ in range(2)]  # the first may go the old way
    await asyncio.sleep(0.2)
    seen.append(await get(http, proxy))
    assert seen[-1] == (200, "new") and all(status == 200 for status, _ in seen)
    assert dns_server.questions["api.test"] == 2


async def test_a_dns_outage_keeps_the_last_addresses_without_waiting_on_it(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    dns_server: DnsServer,  # noqa: F811
    serve: Serve,
    port: int,
) -> None:
    await serve("127.0.0.2", port, "up")
    dns_server.records["api.test"] = [("127.0.0.2", 1)]
    proxy = await proxy_for(start_proxy, dns_server, f"http://api.test:{port}")
    assert await get(http, proxy) == (200, "up")
    dns_server.silent = True  # every question goes unanswered from now on
    await asyncio.sleep(1.2)
    for _ in range(5):
        started = time.monotonic()
        assert await get(http, proxy) == (200, "up")
        # The lookup waits out its timeouts in the background; no request waits on it.
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.1)


async def test_a_name_that_does_not_resolve_is_a_clean_502_asked_once(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    dns_server: DnsServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await proxy_for(start_proxy, dns_server, "http://nowhere.test:8080")
    for _ in range(3):
        async with http.get(url_of(proxy, "/x")) as resp:
            assert resp.status == 502
            body = await resp.json()
        assert body["error"] == "upstream_unavailable"
        assert body["message"] == "The upstream API is unreachable"
    # Remembered for negative_ttl: a flood of requests is not a flood of DNS questions.
    assert dns_server.questions["nowhere.test"] == 1
    assert "cannot resolve upstream nowhere.test (Domain name not found)" in caplog.text


@pytest.fixture
def blackhole(port: int) -> Iterator[None]:
    """127.0.0.3:`port` never answers a SYN: a listener whose accept queue is full (Linux
    drops SYNs to it), as a dead host or a firewall dropping packets would."""
    listener = socket.socket()
    listener.bind(("127.0.0.3", port))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # connecting, in the background
            filler.connect(("127.0.0.3", port))
        fillers.append(filler)
    yield
    for s in [*fillers, listener]:
        s.close()


async def test_happy_eyeballs_gets_past_an_address_that_never_answers(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    dns_server: DnsServer,  # noqa: F811
    serve: Serve,
    port: int,
    blackhole: None,
) -> None:
    await serve("127.0.0.2", port, "second address")
    dns_server.records["api.test"] = [("127.0.0.3", 60), ("127.0.0.2", 60)]
    # The test's premises: the dead address comes first, and it really never answers.
    lookup = CaresLookup([dns_server.address])
    try:
        addresses, _ = await lookup.lookup("api.test", port)
    finally:
        await lookup.close()
    assert [a[4][0] for a in addresses] == ["127.0.0.3", "127.0.0.2"]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.3", port), 0.5)

    proxy = await proxy_for(
        start_proxy, dns_server, f"http://api.test:{port}", timeouts={"connect": 5}
    )
    for _ in range(3):  # a new connection each time; each one tries the dead address first
        started = time.monotonic()
        assert await get(http, proxy) == (200, "second address")
        # One after the other, the dead address would have used all 5 s of the connect
        # timeout (a 504); tried side by side, the second one connects 250 ms later.
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("health_path", [None, "/healthz"])
async def test_the_health_probe_finds_the_upstream_through_the_same_name_servers(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    dns_server: DnsServer,  # noqa: F811
    serve: Serve,
    port: int,
    health_path: str | None,
) -> None:
    await serve("127.0.0.2", port, "up")
    dns_server.records["api.test"] = [("127.0.0.2", 60)]
    url = f"http://api.test:{port}"
    proxy = await proxy_for(start_proxy, dns_server, url, health_path=health_path)
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/health") as resp:
        check = (await resp.json())["checks"]["upstream"]
    # The system's resolver knows no api.test: only the configured name server does.
    assert (check["status"], check["probe"]) == ("up", "http" if health_path else "tcp")
    assert dns_server.questions["api.test"] == 1
