"""The proxy port's bounds: head, keep-alive and body timeouts, max_connections, bad input."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config.loader import ConfigError, parse_config
from proxy.server.app import ProxyServer
from proxy.server.listener import FD_RESERVE, LogBudget, default_max_connections
from tests.conftest import Origin, ProxyProcess, StartProxy, StartUpstream, raw_exchange

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_until_closed(reader: asyncio.StreamReader, wait: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    start = time.monotonic()
    chunks = []
    async with asyncio.timeout(wait):
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # closed with our unread request bytes still in its buffer
    return b"".join(chunks), time.monotonic() - start


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def listener_stats(proxy: ProxyServer, **kwargs: Any) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/listener/stats", **kwargs) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


def timeouts(**values: float) -> dict[str, Any]:
    return {"listen": {"timeouts": values}}


# --- pure parts --------------------------------------------------------------------------


def test_default_max_connections_leaves_room_for_upstreams_and_the_reserve() -> None:
    assert default_max_connections(1024, 20) == 1024 - 20 - FD_RESERVE
    assert default_max_connections(1_048_576, 100) == 1_048_576 - 100 - FD_RESERVE
    # A limit too small for the reserve still serves someone.
    assert default_max_connections(100, 50) == 50
    assert default_max_connections(1, 20) == 1


def test_log_budget_allows_a_burst_per_window_then_counts_what_it_held_back() -> None:
    budget = LogBudget(burst=2, window=10.0)
    assert [budget.take(t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [0, 0, None, None, None]
    assert budget.take(10.0) == 3  # a new window: the next line says 3 were not logged
    assert budget.take(11.0) == 0
    assert budget.take(12.0) is None


def test_listen_timeouts_and_max_connections_are_validated_with_their_key_path() -> None:
    config = parse_config("upstream: {url: 'http://127.0.0.1:9'}", env={})
    timeouts = config.listen.timeouts
    assert (timeouts.request_head, timeouts.keepalive, timeouts.body) == (10.0, 75.0, 60.0)
    assert config.listen.max_connections is None
    with pytest.raises(ConfigError) as err:
        parse_config(
            "upstream: {url: 'http://127.0.0.1:9'}\n"
            "listen: {max_connections: 0, timeouts: {request_head: 0, body: -1, idle: 3}}\n",
            env={},
        )
    report = err.value.report()
    for path in (
        "listen.max_connections",
        "listen.timeouts.request_head",
        "listen.timeouts.body",
        "listen.timeouts.idle: unknown key",
    ):
        assert path in report, report


# --- request head ------------------------------------------------------------------------


async def test_a_head_not_finished_in_time_gets_408_and_the_connection_closes(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **timeouts(request_head=0.5))
    reader, writer = await connect(proxy.proxy_port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n")
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert b"Connection: close" in data and b'"request_timeout"' in data
    assert 0.4 < took < 2.0
    assert origin.hits["/a"] == 0
    assert (await listener_stats(proxy))["head_timeouts"] == 1


async def test_a_silent_connection_is_closed_without_a_response(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **timeouts(request_head=0.5))
    reader, writer = await connect(proxy.proxy_port)
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert data == b""
    assert 0.4 < took < 2.0


async def test_dripping_a_head_byte_by_byte_does_not_extend_the_deadline(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **timeouts(request_head=0.8))
    reader, writer = await connect(proxy.proxy_port)
    start = time.monotonic()

    async def drip() -> None:
        for byte in b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(drip())
    try:
        data, _ = await read_until_closed(reader, 5)
    finally:
        dripping.cancel()
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert time.monotonic() - start < 2.0


async def test_a_kept_alive_connection_may_idle_longer_than_request_head(
    origin: Origin, start_proxy: StartProxy
) -> None:
    # request_head counts from the next request's first byte; the idle time is keep-alive's.
    proxy = await start_proxy(origin.url, **timeouts(request_head=0.3, keepalive=5))
    reader, writer = await connect(proxy.proxy_port)
    try:
        writer.write(GET)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(1.0)
        writer.write(GET)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert (await listener_stats(proxy))["head_timeouts"] == 0


async def test_an_idle_kept_alive_connection_is_closed_after_keepalive(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **timeouts(request_head=5, keepalive=0.5))
    reader, writer = await connect(proxy.proxy_port)
    writer.write(GET)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert data == b""
    assert 0.4 < took < 2.0


async def test_a_slow_head_on_a_kept_alive_connection_gets_408(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **timeouts(request_head=0.5, keepalive=30))
    reader, writer = await connect(proxy.proxy_port)
    writer.write(GET)
    assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
    writer.write(b"GET /b HTTP/1.1\r\n")
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.4 < took < 2.0
    assert origin.hits["/b"] == 0


# --- request body ------------------------------------------------------------------------


async def test_a_stalled_body_gets_408_and_the_upstream_request_is_dropped(
    start_upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    received: list[bytes | BaseException] = []

    async def upload(request: web.Request) -> web.Response:
        try:
            received.append(await request.read())
        except Exception as exc:  # the proxy gave up on the body: so does the upstream
            received.append(exc)
            raise
        return web.Response(text="stored")

    app = web.Application()
    app.router.add_post("/upload", upload)
    up = await start_upstream(app)
    proxy = await start_proxy(up.url, **timeouts(body=0.5))
    reader, writer = await connect(proxy.proxy_port)
    # Over upstream.buffer_body, so it streams upstream as it comes (a smaller one would be
    # read whole first and never reach the upstream at all).
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    # `body` bounds the silence, not the upload: 1.5 s of a byte every 0.1 s goes through...
    for _ in range(15):
        await asyncio.sleep(0.1)
        writer.write(b"x")
    # ...then the client falls silent.
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.4 < took < 2.0  # counted from the last byte, so not sent while bytes came
    await asyncio.sleep(0.2)
    assert len(received) == 1 and isinstance(received[0], Exception), received
    stats = await listener_stats(proxy)
    assert (stats["body_timeouts"], stats["head_timeouts"]) == (1, 0)


# --- max_connections ---------------------------------------------------------------------


async def test_connections_beyond_max_connections_are_closed_at_once_and_counted(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, listen={"max_connections": 3})
    held = [await connect(proxy.proxy_port) for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await connect(proxy.proxy_port)
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert (data, took < 0.5) == (b"", True)
    stats = await listener_stats(proxy)
    assert (stats["open_connections"], stats["refused_connections"]) == (3, 1)
    assert stats["max_connections"] == 3

    held_reader, held_writer = held.pop()
    held_writer.write(GET)  # the held ones are served as usual
    assert (await read_response(held_reader)).startswith(b"HTTP/1.1 200 ")
    held_writer.close()
    await asyncio.sleep(0.1)
    assert (await raw_exchange(proxy.proxy_port, GET, wait=1)).startswith(b"HTTP/1.1 200 ")
    for _, w in held:
        w.close()


async def test_listener_stats_sit_behind_the_admin_token(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": "s3cret"})
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/listener/stats") as resp,
    ):
        assert resp.status == 401
    stats = await listener_stats(proxy, headers={"Authorization": "Bearer s3cret"})
    assert set(stats) == {
        "max_connections",
        "open_connections",
        "refused_connections",
        "max_connections_per_client",
        "refused_per_client",
        "head_timeouts",
        "body_timeouts",
        "bad_requests",
        "tls_handshake_failures",
        "fast_path",
        "fast_path_heads",
        "own_task",
    }


# --- what is not HTTP/1.x ----------------------------------------------------------------


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
async def test_other_http_versions_get_505_and_are_not_forwarded(
    version: bytes, origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url)
    data = await raw_exchange(proxy.proxy_port, b"GET /a " + version + b"\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), data
    assert b'"http_version_not_supported"' in data
    assert origin.hits["/a"] == 0


async def test_a_malformed_request_gets_a_json_400_and_one_log_line(
    origin: Origin, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(origin.url)
    with caplog.at_level(logging.DEBUG):
        data = await raw_exchange(proxy.proxy_port, b"GET /a HTTP/1.1\r\nBad Header\r\n\r\n")
    # aiohttp responds to what it could not parse as HTTP/1.0, the safest guess.
    assert data.startswith(b"HTTP/1.0 400 Bad Request\r\n"), data
    assert b'"bad_request"' in data and b"application/json" in data
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    (line,) = lines
    assert line.name == "cacheproxy.listener" and line.exc_info is None
    # The reason and the offending bytes, on one line (wording differs between parsers).
    assert line.getMessage().startswith("bad request from 127.0.0.1: Invalid ")
    assert line.getMessage().endswith("b'Bad Header'")
    assert "\n" not in line.getMessage()
    assert not [r for r in caplog.records if r.name == "aiohttp.server" and r.exc_info]
    assert (await listener_stats(proxy))["bad_requests"] == 1


# --- through a real process ----------------------------------------------------------------


async def test_a_flood_of_slow_heads_past_the_fd_limit_leaves_admin_responding(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    # Soft 64, hard 256: the proxy raises the soft limit to 256 and holds at most
    # 256 - 20 upstream - FD_RESERVE client connections, so descriptors stay free for admin.
    proxy = proxy_process(origin.url, open_files=(64, 256), **timeouts(request_head=1.5))
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    flood = 300  # more than the process may hold open files

    async def slow_client() -> tuple[bytes, float]:
        reader, writer = await connect(proxy.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        try:
            return await read_until_closed(reader, 10)
        finally:
            writer.close()

    clients = []
    for _ in range(flood):
        clients.append(asyncio.create_task(slow_client()))
        await asyncio.sleep(0.001)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
        async with http.get(f"{admin}/health") as resp:
            assert resp.status == 200
        # Until the proxy has taken every connection (a loaded machine accepts them later).
        deadline = time.monotonic() + 1.0
        while True:
            async with http.get(f"{admin}/listener/stats") as resp:
                stats = await resp.json()
            seen = stats["open_connections"] + stats["refused_connections"]
            if seen >= flood or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        held = 256 - 20 - FD_RESERVE
        assert stats["max_connections"] == held
        assert (stats["open_connections"], stats["refused_connections"]) == (held, flood - held)

        results = await asyncio.gather(*clients)
        timed_out = [took for data, took in results if data.startswith(b"HTTP/1.1 408 ")]
        refused = [took for data, took in results if data == b""]
        assert (len(timed_out), len(refused)) == (held, flood - held)
        assert max(refused) < 1.0
        assert min(timed_out) > 1.0 and max(timed_out) < 4.0

        async with http.get(f"http://127.0.0.1:{proxy.port}/a") as resp:
            assert resp.status == 200  # the port serves again
        async with http.get(f"{admin}/listener/stats") as resp:
            stats = await resp.json()
        assert stats["head_timeouts"] == held

    proxy.proc.send_signal(signal.SIGTERM)
    out, _ = proxy.proc.communicate(timeout=10)
    assert "open files limit: soft 64 -> 256, hard 256" in out, out


# --- what one client may hold ------------------------------------------------------------


async def test_one_client_cannot_hold_every_connection(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        origin.url, listen={"max_connections": 10, "max_connections_per_client": 3}
    )
    held = [await connect(proxy.proxy_port) for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await connect(proxy.proxy_port)
    data, took = await read_until_closed(reader, 5)
    writer.close()
    assert (data, took < 0.5) == (b"", True)
    stats = await listener_stats(proxy)  # the admin port is another listener: not counted
    assert (stats["open_connections"], stats["refused_per_client"]) == (3, 1)
    assert (stats["refused_connections"], stats["max_connections_per_client"]) == (0, 3)
    async with aiohttp.request("GET", f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp:
        metrics = await resp.text()
    assert 'cacheproxy_client_connections_refused_total{reason="per_client"} 1.0' in metrics
    assert 'cacheproxy_client_connections_refused_total{reason="max_connections"} 0.0' in metrics

    held_reader, held_writer = held.pop()
    held_writer.write(GET)  # the held ones are served as usual
    assert (await read_response(held_reader)).startswith(b"HTTP/1.1 200 ")
    held_writer.close()
    await asyncio.sleep(0.1)  # a slot of its own is free again
    assert (await raw_exchange(proxy.proxy_port, GET, wait=1)).startswith(b"HTTP/1.1 200 ")
    for _, w in held:
        w.close()


async def test_a_trusted_proxy_is_not_bounded_per_client(
    origin: Origin, start_proxy: StartProxy
) -> None:
    # Every client behind a load balancer shares its address: bounding it would bound them all.
    proxy = await start_proxy(
        origin.url, listen={"max_connections_per_client": 2}, trusted_proxies=["127.0.0.1"]
    )
    held = [await connect(proxy.proxy_port) for _ in range(4)]
    for reader, writer in held:
        writer.write(GET)
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        writer.close()
    assert (await listener_stats(proxy))["refused_per_client"] == 0


# --- how large a head may be ----------------------------------------------------------------


async def test_a_100_kb_header_gets_431_with_a_json_body(
    origin: Origin, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(origin.url)
    big = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    with caplog.at_level(logging.DEBUG):
        data = await raw_exchange(proxy.proxy_port, big)
    assert data.startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n"), data[:100]
    assert b'"error":"header_fields_too_large"' in data and b"application/json" in data
    assert not [r for r in caplog.records if r.exc_info]  # never a traceback
    assert origin.hits["/a"] == 0


async def test_too_many_fields_get_431_and_a_long_request_line_414(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    head = b"GET /a HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    data = await raw_exchange(proxy.proxy_port, head)
    assert data.startswith(b"HTTP/1.0 431 "), data[:100]
    line = b"GET /a?q=" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    data = await raw_exchange(proxy.proxy_port, line)
    assert data.startswith(b"HTTP/1.0 414 "), data[:100]
    assert b'"error":"uri_too_long"' in data
    # Within the bounds: a 16 KB request line (the test origin itself refuses past 8 KB)...
    data = await raw_exchange(proxy.proxy_port, line.replace(b"a" * 17_000, b"a" * 16_000))
    assert data and b"uri_too_long" not in data
    # ...100 fields, one of them 8 KB.
    ok = b"GET /a?q=" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8000 + b"\r\n"
    ok += b"".join(b"X-F%d: v\r\n" % i for i in range(97)) + b"Connection: close\r\n\r\n"
    assert (await raw_exchange(proxy.proxy_port, ok)).startswith(b"HTTP/1.1 200 ")


async def test_a_head_still_incomplete_after_64_kib_gets_431(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url)
    reader, writer = await connect(proxy.proxy_port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n")
    for i in range(9):  # 9 fields of 8000 bytes, each within its own bound, sent slowly
        writer.write(b"X-F%d: " % i + b"v" * 8000 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.02)
    data, _ = await read_until_closed(reader, 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data[:100]
    assert b'"error":"head_too_large"' in data
    assert (await listener_stats(proxy))["bad_requests"] == 1
