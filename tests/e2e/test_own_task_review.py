"""The own task (server/listener.py `_handle_own`) and the fast path where they differed from
aiohttp's handler: each test runs both ways (`aiohttps`: aiohttp's handler; `fast`: the fast
path answers what it can), and failed on the own task or the fast path.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from proxy.server.listener import Listener, ListenerProtocol
from tests.conftest import Origin, StartProxy
from tests.e2e.test_fast_path import aiohttps, connection, get, logged, steady
from tests.e2e.test_listener import read_until_closed
from tests.e2e.test_own_task import slow_for
from tests.e2e.test_prepared import exchange
from tests.e2e.test_tls import ca, leaf, tls  # noqa: F401
from tests.e2e.test_upstream_framing import EARLY_HINTS, OK_HELLO, Scripted, scripted  # noqa: F401
from tests.tls_certs import Pair, client_context

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


# --- the same requests both ways, compared ----------------------------------------------


async def chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "no-store"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(3):
        await resp.write(b"piece %d " % i)
    await resp.write_eof()
    return resp


async def broken_mid_body(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Length": "200000", "Cache-Control": "no-store"})
    await resp.prepare(request)
    await resp.write(b"x" * 100_000)
    assert request.transport is not None
    request.transport.abort()
    return resp


def answer(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/missing":
        return web.Response(status=404, text="nope", headers={"Cache-Control": "no-store"})
    if path.startswith("/big"):
        return web.Response(body=BIG[:300_000], headers={"Cache-Control": "max-age=60"})
    if path == "/text":
        return web.Response(
            text="compress me " * 500, headers={"Cache-Control": "max-age=60", "ETag": '"t1"'}
        )
    if path == "/vary":
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(
            text=f"in {lang}", headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
        )
    return web.Response(text=f"body of {request.path_qs}", headers={"Cache-Control": "max-age=60"})


async def respond(request: web.Request) -> web.StreamResponse:
    if request.path == "/chunked":
        return await chunked(request)
    if request.path == "/broken":
        return await broken_mid_body(request)
    return answer(request)


COMPARED = {
    **CACHED,
    "compression": {"algorithms": ["gzip"]},
    "rate_limit": {"limits": ["12/minute"]},
    "log": {"access": True, "sample_hits": 1.0},
    "cors": {"allow_origins": ["https://app.example.com"]},
}
SEQUENCE = [
    get("/text", "Accept-Encoding: gzip\r\n"),  # miss, compressed
    get("/text", 'Accept-Encoding: gzip\r\nIf-None-Match: "t1"\r\n'),  # 304
    get("/text", "Range: bytes=0-9\r\n"),  # 206 from the cache
    get("/text", "", method="HEAD"),
    get("/missing", ""),
    get("/chunked", "Origin: https://app.example.com\r\n"),
    get("/big", ""),  # relayed as it streams
    get("/big", "Range: bytes=5-20, 40-50\r\n"),  # a multipart range
    get("/vary", "Accept-Language: de\r\n"),
    get("/vary", "Accept-Language: fr\r\n"),
    get("/vary", "Accept-Language: de\r\n"),
    get("/a", "X-Forwarded-For: 10.0.0.1\r\n"),
    get("/other", "", method="HEAD"),  # a miss
    get("/a", "Cache-Control: no-cache\r\n"),  # the 13th: refused by the rate limit
]


async def exchange_framed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str
) -> tuple[tuple[str, list[tuple[str, str]], bytes], int]:
    """One request on a connection: the response, its chunked body read too, and its size
    on the wire."""
    writer.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode().split("\r\n")
    fields = [(k.lower(), v) for k, _, v in (x.partition(": ") for x in lines if x)]
    found = dict(fields)
    size, body = len(head), b""
    if request.startswith("HEAD") or " 304 " in status:
        return (status, fields, body), size
    if found.get("transfer-encoding") == "chunked":
        while True:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
            chunk = await reader.readexactly(int(line, 16) + 2)
            size += len(line) + len(chunk)
            body += chunk[:-2]
            if line == b"0\r\n":
                return (status, fields, body), size
    body = await asyncio.wait_for(reader.readexactly(int(found["content-length"])), 5)
    return (status, fields, body), size + len(body)


async def run_sequence(
    origin: Origin, start_proxy: StartProxy, way: str
) -> tuple[list[tuple[str, list[tuple[str, str]], list[str], bytes]], list[tuple[object, ...]]]:
    origin.respond = respond
    proxy = await start_proxy(origin.url, **COMPARED)
    own_or_aiohttps(proxy, way)
    records = logged(proxy)
    responses, sizes = [], []
    async with connection(proxy) as (reader, writer):
        for request in SEQUENCE:
            response, size = await exchange_framed(reader, writer, request)
            status, fields, body = response
            # The two proxies share one process, and so its count of request ids.
            responses.append(steady((status, fields, re.sub(rb'"request_id":"[^"]*"', b"", body))))
            sizes.append(size)
    assert [r[8] for r in records] == sizes  # the bytes logged are the bytes sent
    return responses, [(r[1:6], r[9:12]) for r in records]


async def test_each_kind_of_response_is_what_aiohttps_handler_sends_and_logs(
    origin: Origin, start_proxy: StartProxy
) -> None:
    own, own_log = await run_sequence(origin, start_proxy, "own")
    theirs, their_log = await run_sequence(origin, start_proxy, "aiohttp")
    for mine, its in zip(own, theirs, strict=True):
        assert mine == its
    assert own_log == their_log


@pytest.mark.parametrize("way", ["own", "aiohttp"])
async def test_an_upstream_failing_mid_body_cuts_the_response_off_either_way(
    origin: Origin, start_proxy: StartProxy, way: str
) -> None:
    origin.respond = respond
    proxy = await start_proxy(origin.url, **COMPARED)
    own_or_aiohttps(proxy, way)
    records = logged(proxy)
    async with connection(proxy) as (reader, writer):
        writer.write(get("/broken", "").encode())
        data, _ = await read_until_closed(reader, 5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 200000" in head
    assert 0 < len(body) < 200_000
    # Logged with the bytes that went out.
    assert [(r[1:6], r[8]) for r in records] == [
        (("GET", "/broken", "default", 200, "miss"), len(data))
    ]


@pytest.mark.parametrize("way", ["own", "aiohttp"])
async def test_an_upstream_down_gets_the_same_json_502_either_way(
    start_proxy: StartProxy, way: str
) -> None:
    proxy = await start_proxy("http://127.0.0.1:9", **COMPARED)
    own_or_aiohttps(proxy, way)
    records = logged(proxy)
    async with connection(proxy) as (reader, writer):
        status, fields, body = await exchange(reader, writer, get("/a", ""))
        again = await exchange(reader, writer, get("/a", ""))  # kept alive
    assert status == again[0] == "HTTP/1.1 502 Bad Gateway"
    assert b"upstream" in body and dict(fields)["content-type"] == "application/json"
    assert [r[4] for r in records] == [502, 502]


@pytest.mark.parametrize("way", ["own", "aiohttp"])
async def test_early_hints_go_ahead_of_the_response_on_a_kept_alive_connection(
    start_proxy: StartProxy,
    scripted: Callable[..., Awaitable[Scripted]],  # noqa: F811
    way: str,
) -> None:
    up = await scripted([EARLY_HINTS, 0.02, OK_HELLO])
    proxy = await start_proxy(up.url)
    own_or_aiohttps(proxy, way)
    async with connection(proxy) as (reader, writer):
        for path in ("/x", "/y"):  # the connection kept alive
            writer.write(get(path, "").encode())
            hints = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, _, body = await exchange(reader, writer, "")
            assert hints.startswith(EARLY_HINTS[:-2])
            assert (status, body) == ("HTTP/1.1 200 OK", b"hello")


@pytest.mark.parametrize("way", ["own", "aiohttp"])
async def test_a_flood_behind_a_request_in_flight_over_tls_is_held_then_all_answered(
    origin: Origin,
    start_proxy: StartProxy,
    ca: Pair,  # noqa: F811
    leaf: Pair,  # noqa: F811
    way: str,
) -> None:
    slow_for(origin, "/slow", 0.3)
    proxy = await start_proxy(origin.url, listen=tls(leaf))
    own_or_aiohttps(proxy, way)
    many = [get(f"/p/{i}", "X-Pad: " + "x" * 100 + "\r\n") for i in range(800)]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.proxy_port, ssl=client_context(ca), limit=1 << 20
    )
    try:
        writer.write(get("/slow", "").encode())
        await asyncio.sleep(0.05)
        writer.write("".join(many).encode())  # beyond what is held before reading pauses
        first = await exchange(reader, writer, "")
        rest = [await exchange(reader, writer, "") for _ in many]
    finally:
        writer.close()
    assert first[2] == b"body of /slow"
    assert [r[2] for r in rest] == [f"body of /p/{i}".encode() for i in range(800)]
    for request in origin.requests:
        assert request.headers["X-Forwarded-Proto"] == "https"


@pytest.mark.parametrize("way", ["own", "aiohttp"])
@pytest.mark.parametrize(
    ("raised", "status"),
    [(lambda: web.HTTPTooManyRequests(text="slow down"), 429), (TimeoutError, 504)],
    ids=["http-exception", "timeout"],
)
async def test_a_handler_raising_an_http_exception_or_a_timeout_gets_what_aiohttp_sends(
    origin: Origin,
    start_proxy: StartProxy,
    way: str,
    raised: Callable[[], Exception],
    status: int,
) -> None:
    """aiohttp sends an HTTPException raised as the response it is, and answers a
    TimeoutError with 504 (no stage raises either today: one that did got a 500 here)."""
    proxy = await start_proxy(origin.url)
    listener = own_or_aiohttps(proxy, way)

    async def raising(request: web.BaseRequest) -> web.StreamResponse:
        raise raised()

    listener.handle = listener.request_handler = raising  # connections opened from here on
    async with connection(proxy) as (reader, writer):
        for _ in range(2):  # the 429 keeps the connection; the 504 closes it
            writer.write(get("/a", "").encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(f"HTTP/1.1 {status} ".encode())
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
            if status == 504:
                assert b"Connection: close\r\n" in head
                assert await reader.read() == b""
                break
