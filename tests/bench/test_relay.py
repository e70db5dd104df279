"""bench.yardsticks' relay, the floor of a miss: it must forward what it is measured on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.yardsticks import serve_relay
from tests.conftest import StartUpstream, Upstream, free_port

BODY = b'{"data":"' + b"x" * 1013 + b'"}'  # the bench upstream's 1 KB


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.peers: list[int] = []  # the upstream connection's port, per request


def upstream_app(seen: Seen) -> web.Application:
    async def record(request: web.Request) -> None:
        assert request.transport is not None
        seen.peers.append(request.transport.get_extra_info("peername")[1])
        body = await request.read()
        seen.requests.append((request.method, request.path_qs, dict(request.headers), body))

    async def sized(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=BODY, headers={"X-Up": "1", "Keep-Alive": "timeout=5"})

    async def chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"X-Up": "chunked"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"hello ", b"chunked ", b"world"):
            await response.write(piece)
        await response.write_eof()
        return response

    async def empty(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/empty", empty)
    app.router.add_route("*", "/{tail:.*}", sized)
    return app


@pytest.fixture
async def origin(start_upstream: StartUpstream) -> tuple[Upstream, Seen]:
    seen = Seen()
    return await start_upstream(upstream_app(seen)), seen


@contextlib.asynccontextmanager
async def relay_port(upstream: str, limit: int = 100) -> AsyncIterator[int]:
    server = await serve_relay(upstream, 0, limit=limit)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@pytest.fixture
async def relay(origin: tuple[Upstream, Seen]) -> AsyncIterator[int]:
    async with relay_port(origin[0].url) as port:
        yield port


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, fields (names lowered) and the body as framed on the wire."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *lines = head.split("\r\n")[:-2]
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in fields, f"{name} twice"
        fields[name.lower()] = value.strip()
    status = int(status_line.split()[1])
    if "content-length" in fields:
        return status, fields, await reader.readexactly(int(fields["content-length"]))
    if fields.get("transfer-encoding") == "chunked":
        return status, fields, await reader.readuntil(b"0\r\n\r\n")
    return status, fields, b""


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_requests_go_up_with_the_clients_fields_over_kept_alive_connections(
    origin: tuple[Upstream, Seen], relay: int
) -> None:
    _, seen = origin
    reader, writer = await connect(relay)
    for i in range(3):
        writer.write(
            f"GET /api/item/{i}?x=1 HTTP/1.1\r\nHost: bench\r\nOrigin: https://a.example\r\n"
            "Connection: keep-alive\r\nKeep-Alive: timeout=9\r\n\r\n".encode()
        )
        status, fields, body = await read_response(reader)
        assert (status, body, fields["x-up"]) == (200, BODY, "1")
        assert fields["content-length"] == "1024"
        assert "keep-alive" not in fields  # the upstream's hop-by-hop field stays there
    writer.close()
    assert [(m, p) for m, p, _, _ in seen.requests] == [
        ("GET", f"/api/item/{i}?x=1") for i in range(3)
    ]
    for _, _, headers, _ in seen.requests:
        assert headers["Host"] == "bench"
        assert headers["Origin"] == "https://a.example"
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        assert "Keep-Alive" not in headers
        assert headers.get("Connection", "keep-alive") == "keep-alive"  # aiohttp's default
    assert len(set(seen.peers)) == 1  # one upstream connection, kept alive


async def test_pipelined_requests_are_answered_in_order(
    origin: tuple[Upstream, Seen], relay: int
) -> None:
    reader, writer = await connect(relay)
    writer.write(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /one HTTP/1.1\r\nHost: a\r\n\r\n")
    first, second = await read_response(reader), await read_response(reader)
    writer.close()
    assert first[1]["x-up"] == "chunked"
    assert (second[0], second[2]) == (200, BODY)
    assert [p for _, p, _, _ in origin[1].requests] == ["/chunked", "/one"]


async def test_a_chunked_response_is_chunked_again_and_the_connection_goes_on(
    relay: int,
) -> None:
    reader, writer = await connect(relay)
    writer.write(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n")
    status, fields, body = await read_response(reader)
    assert (status, fields["transfer-encoding"]) == (200, "chunked")
    assert "content-length" not in fields
    pieces = body.split(b"\r\n")
    assert b"".join(pieces[1::2]) == b"hello chunked world"
    assert pieces[-3:] == [b"0", b"", b""]
    writer.write(b"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n")
    status, fields, body = await read_response(reader)
    assert (status, body) == (204, b"")
    assert "transfer-encoding" not in fields  # a 204 has no body to frame
    writer.close()


async def test_a_client_that_closes_gets_its_response_close_delimited(relay: int) -> None:
    reader, writer = await connect(relay)
    writer.write(b"GET /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Connection: close\r\n" in head
    assert b"Transfer-Encoding" not in head
    assert await reader.read() == b"hello chunked world"  # then the relay closes
    writer.close()


async def test_forwarded_for_bodies_and_head(origin: tuple[Upstream, Seen], relay: int) -> None:
    _, seen = origin
    reader, writer = await connect(relay)
    writer.write(
        b"POST /form HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert (await read_response(reader))[0] == 200
    writer.write(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 1024\r\n" in head  # the GET's, with no body after it
    writer.write(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, BODY)
    writer.close()
    method, path, headers, body = seen.requests[0]
    assert (method, path, body) == ("POST", "/form", b"hello")
    assert headers["Content-Length"] == "5"  # the body read is stated again, not re-chunked
    assert "Transfer-Encoding" not in headers
    assert headers["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert [(m, p) for m, p, _, _ in seen.requests[1:]] == [("HEAD", "/head"), ("GET", "/after")]
    assert len(set(seen.peers)) == 1  # the HEAD's connection was kept, its parser made anew


async def test_an_upstream_connection_that_says_close_is_not_used_again() -> None:
    """An upstream that says `Connection: close` but keeps the connection open a while:
    the relay must go by what it said, not wait for the close."""
    connections = 0
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError):  # the relay closes it
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(closing)

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with relay_port(url) as port:
        reader, writer = await connect(port)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, fields, body = await read_response(reader)
            assert (status, body) == (200, b"bye")
            assert "connection" not in fields  # the upstream's close is its own
        writer.close()
    server.close()
    assert connections == 2


async def test_no_upstream_is_a_502() -> None:
    async with relay_port(f"http://127.0.0.1:{free_port()}") as port:
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, fields, _ = await read_response(reader)
        assert (status, fields["connection"]) == (502, "close")
        assert await reader.read() == b""
        writer.close()


async def test_clients_wait_for_the_bounded_pool(origin: tuple[Upstream, Seen]) -> None:
    async def client(port: int) -> list[int]:
        reader, writer = await connect(port)
        statuses = []
        for _ in range(5):
            writer.write(b"GET /api/item/1?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = await read_response(reader)
            assert body == BODY
            statuses.append(status)
        writer.close()
        return statuses

    async with relay_port(origin[0].url, limit=4) as port:
        results = await asyncio.wait_for(asyncio.gather(*(client(port) for _ in range(64))), 30)
    assert results == [[200] * 5] * 64
    assert 1 < len(set(origin[1].peers)) <= 4


async def test_a_bad_request_is_a_400(relay: int) -> None:
    reader, writer = await connect(relay)
    writer.write(b"NOT HTTP\r\n\r\n")
    status, fields, _ = await read_response(reader)
    assert (status, fields["connection"]) == (400, "close")
    assert await reader.read() == b""
    writer.close()
