"""The own task (server/listener.py `_handle_own`) and the fast path where they differed from
aiohttp's handler: each test runs both ways (`aiohttps`: aiohttp's handler; `fast`: the fast
path answers what it can), and failed on the own task or the fast path.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from proxy.server.listener import Listener, ListenerProtocol
from tests.conftest import Origin, StartProxy
from tests.e2e.test_fast_path import aiohttps, connection, get
from tests.e2e.test_listener import read_until_closed
from tests.e2e.test_prepared import exchange

CACHED = {"cache": {"ttl": 60}}
BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than loopback's buffers take at once


def own_or_aiohttps(proxy: ProxyServer, way: str) -> Listener:
    listener = proxy._listener
    assert listener is not None
    if way != "fast":
        listener.fast = None  # every head read here goes to the own task (or to aiohttp's)
    if way == "aiohttp":
        aiohttps(proxy)
    return listener


async def slow_reader(proxy: ProxyServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose client reads little at a time (small socket buffers on both ends):
    a large response fills the proxy's write buffer and pauses its writing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.proxy_port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    listener = proxy._listener
    assert listener is not None
    await asyncio.sleep(0.05)
    for conn in listener.connections:  # the proxy's side: a small send buffer too
        assert conn.transport is not None
        conn.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
    return reader, writer


def big(_: web.Request) -> web.Response:
    return web.Response(
        body=BIG, content_type="application/octet-stream", headers={"Cache-Control": "max-age=60"}
    )


# What a client asks for BIG: a miss (streamed as it comes), a hit (prepared bytes: the
# fast path's, if it answers), a range of a hit (an aiohttp Response, its body written by
# write_eof, after the handler returned).
KINDS = {"miss": ("", BIG), "hit": ("", BIG), "range": ("Range: bytes=1-\r\n", BIG[1:])}


async def big_response_to_slow_reader(
    proxy: ProxyServer, way: str, kind: str
) -> tuple[Listener, ListenerProtocol, asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection on `way` with BIG's response of `kind` part written, the rest waiting on
    its client; closed by the caller."""
    extra, _ = KINDS[kind]
    if kind != "miss":
        async with connection(proxy) as (reader, writer):
            for _ in range(2):  # stored, then a hit: the fast path answers the next
                await exchange(reader, writer, get("/big", ""))
    listener = own_or_aiohttps(proxy, way)
    reader, writer = await slow_reader(proxy)
    writer.write(get("/big", extra).encode())
    await asyncio.sleep(0.3)
    [conn] = listener.connections
    assert isinstance(conn, ListenerProtocol) and conn.writing_paused
    return listener, conn, reader, writer


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("way", ["own", "aiohttp", "fast"])
async def test_shutdown_while_a_response_is_still_being_written_closes_after_it(
    origin: Origin, start_proxy: StartProxy, way: str, kind: str
) -> None:
    origin.respond = big
    proxy = await start_proxy(origin.url, **CACHED)
    listener, _, reader, writer = await big_response_to_slow_reader(proxy, way, kind)
    try:
        listener.pre_shutdown()
        data, took = await read_until_closed(reader, 10)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 20") and data.endswith(KINDS[kind][1])
    assert took < 5  # closed once written, not left open through the grace


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("way", ["own", "aiohttp", "fast"])
async def test_a_client_that_never_reads_its_response_is_cut_at_the_end_of_the_grace(
    origin: Origin, start_proxy: StartProxy, way: str, kind: str
) -> None:
    origin.respond = big
    proxy = await start_proxy(origin.url, **CACHED)
    listener, _, _, writer = await big_response_to_slow_reader(proxy, way, kind)
    try:
        listener.pre_shutdown()
        started = time.monotonic()
        await listener.shutdown(0.5)
        await asyncio.sleep(0.1)
        assert listener.stats.open_connections == 0
        assert time.monotonic() - started < 2
    finally:
        writer.close()
