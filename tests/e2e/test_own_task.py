"""The own task (server/listener.py `_handle_own`): a whole head the listener read and the fast
path did not answer is handled on its connection's own task, not aiohttp's, and says, counts
and logs what aiohttp's handler would; what arrives meanwhile waits its turn.

`aiohttps` (test_fast_path.py) opens connections that leave those heads to aiohttp's handler.
`GET /listener/stats`'s `own_task` counts the requests handled on their own task.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from aiohttp import web

from proxy.server.app import ProxyServer
from proxy.server.listener import MAX_HEAD
from tests.conftest import Origin, StartProxy
from tests.e2e.test_fast_path import (
    CLIENT,
    EVERYTHING,
    aiohttps,
    connection,
    doc,
    get,
    logged,
    steady,
    warm,
)
from tests.e2e.test_listener import listener_stats, read_until_closed, timeouts
from tests.e2e.test_prepared import exchange

UNCACHED = {**EVERYTHING, "routes": [{"name": "api", "match": {"prefix": "/"}, "cache": False}]}


async def own_tasks(proxy: ProxyServer) -> int:
    return (await listener_stats(proxy))["own_task"]


def slow_for(origin: Origin, prefix: str, seconds: float) -> list[tuple[str, str, float]]:
    """Paths under `prefix` answered after `seconds`; the others at once, with their path.
    What the origin did, in order: ("got" or "sent", path, time.monotonic())."""
    seen: list[tuple[str, str, float]] = []

    async def respond(request: web.Request) -> web.Response:
        seen.append(("got", request.path, time.monotonic()))
        if request.path.startswith(prefix):
            await asyncio.sleep(seconds)
        seen.append(("sent", request.path, time.monotonic()))
        return web.Response(text=f"body of {request.path_qs}")

    origin.respond = respond
    return seen


async def test_a_miss_on_its_own_task_says_counts_and_logs_what_aiohttps_handler_does(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, **UNCACHED)
    meter = proxy.observer.meters.by_route["api"]
    records = logged(proxy)
    async with connection(proxy) as (reader, writer):
        own = [await exchange(reader, writer, get(f"/a?n={i}")) for i in range(3)]
    assert await own_tasks(proxy) == 3
    aiohttps(proxy)
    async with connection(proxy) as (reader, writer):
        theirs = [await exchange(reader, writer, get(f"/a?n={i}")) for i in range(3)]
    assert await own_tasks(proxy) == 3  # those went aiohttp's way
    assert [steady(r) for r in own] == [steady(r) for r in theirs]
    assert [r[2] for r in own] == [f"body of /a?n={i}".encode() for i in range(3)]
    assert meter.responses[("GET", 200, "bypass")] == 6
    assert [(r[4], r[5]) for r in records] == [(200, "bypass")] * 6
    # What the upstream was sent is the same too, but for each request's own id.
    sent = [dict(r.headers) for r in origin.requests]
    for fields in sent:
        fields.pop("X-Request-ID")
    assert sent[:3] == sent[3:]


async def test_requests_arriving_while_one_is_in_flight_wait_and_are_answered_in_order(
    origin: Origin, start_proxy: StartProxy
) -> None:
    seen = slow_for(origin, "/slow", 0.4)
    proxy = await start_proxy(origin.url, **UNCACHED)
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.1)  # in flight upstream
        writer.write(get("/b").encode())
        await asyncio.sleep(0.05)
        writer.write(get("/c").encode())
        responses = [await exchange(reader, writer, "") for _ in range(3)]
    assert [r[2] for r in responses] == [b"body of /slow", b"body of /b", b"body of /c"]
    # /b reached the upstream only once /slow was answered: it waited, unread.
    assert [(what, path) for what, path, _ in seen][:3] == [
        ("got", "/slow"),
        ("sent", "/slow"),
        ("got", "/b"),
    ]
    # Held together, /b and /c are two heads in one read: aiohttp's parser takes them.
    assert await own_tasks(proxy) == 1


async def test_a_flood_pipelined_behind_a_request_in_flight_pauses_reading_and_is_all_answered(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 0.3)
    proxy = await start_proxy(origin.url, **UNCACHED)
    many = [get(f"/p/{i}", CLIENT + "X-Pad: " + "x" * 100 + "\r\n") for i in range(800)]
    flood = "".join(many).encode()
    assert len(flood) > 2 * MAX_HEAD  # beyond what is held before reading pauses
    listener = proxy._listener
    assert listener is not None
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.05)
        writer.write(flood)
        await asyncio.sleep(0.1)
        [conn] = listener.connections
        held = conn._held  # type: ignore[attr-defined]  # ListenerProtocol's
        assert conn._held_paused and MAX_HEAD < len(held) < 2 * MAX_HEAD  # type: ignore[attr-defined]
        first = await exchange(reader, writer, "")
        rest = [await exchange(reader, writer, "") for _ in many]
    assert first[2] == b"body of /slow"
    assert [r[2] for r in rest] == [f"body of /p/{i}".encode() for i in range(800)]


async def test_part_of_a_head_arriving_while_one_is_in_flight_is_timed_once_it_is_answered(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 0.5)
    proxy = await start_proxy(origin.url, **UNCACHED, **timeouts(request_head=0.4))
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.1)
        writer.write(b"GET /b HTTP/1.1\r\nHo")
        data, took = await read_until_closed(reader, 5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'request took too long"}')
    assert b"HTTP/1.1 408 Request Timeout\r\n" in data
    # The head's time ran from the answer (0.4 s after 0.4 s more of /slow), not from its
    # bytes' arrival: a client behind a slow response is not held to account for it.
    assert 0.7 < took < 3


async def test_keep_alive_does_not_close_a_connection_whose_request_outlasts_it(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 0.8)
    proxy = await start_proxy(origin.url, **UNCACHED, **timeouts(keepalive=0.3))
    async with connection(proxy) as (reader, writer):
        first = await exchange(reader, writer, get("/a"))  # arms the keep-alive timer
        second = await exchange(reader, writer, get("/slow"))  # outlasts it twice over
        idle = time.monotonic()
        data, _ = await read_until_closed(reader, 5)
    assert (first[2], second[2], data) == (b"body of /a", b"body of /slow", b"")
    assert 0.2 < time.monotonic() - idle < 2  # then idle: closed by keep-alive


async def test_a_client_that_leaves_mid_request_lets_the_upstream_answer_and_is_counted(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 0.3)
    proxy = await start_proxy(origin.url, **UNCACHED)
    meter = proxy.observer.meters.by_route["api"]
    async with connection(proxy) as (_, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the upstream answers meanwhile
    assert meter.responses[("GET", 200, "bypass")] == 1  # as aiohttp logs a client gone
    # The upstream connection was read to its end and kept: the next request reuses it.
    async with connection(proxy) as (reader, writer):
        assert (await exchange(reader, writer, get("/a")))[2] == b"body of /a"
    peers = {r.transport.get_extra_info("peername")[1] for r in origin.requests if r.transport}
    assert len(origin.requests) == 2 and len(peers) <= 1


async def test_a_handler_that_raises_gets_aiohttps_500_and_the_connection_closes(
    origin: Origin, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(origin.url, **UNCACHED)
    listener = proxy._listener
    assert listener is not None

    async def broken(request: web.BaseRequest) -> web.StreamResponse:
        raise RuntimeError("a bug")

    listener.handle = broken  # connections opened from here on
    with caplog.at_level(logging.ERROR):
        async with connection(proxy) as (reader, writer):
            writer.write(get("/a").encode())
            data, _ = await read_until_closed(reader, 5)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Connection: close\r\n" in data
    assert any("a bug" in str(r.exc_info) for r in caplog.records if r.exc_info)


async def test_a_handler_cancelled_from_within_closes_the_connection_at_once(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """No response will come: the client is not left waiting for keep-alive's timer."""
    proxy = await start_proxy(origin.url, **UNCACHED)
    listener = proxy._listener
    assert listener is not None

    async def cancelled(request: web.BaseRequest) -> web.StreamResponse:
        raise asyncio.CancelledError

    listener.handle = cancelled  # connections opened from here on
    async with connection(proxy) as (reader, writer):
        writer.write(get("/a").encode())
        data, took = await read_until_closed(reader, 5)
    assert data == b"" and took < 2


async def test_shutdown_lets_a_request_in_flight_finish_then_closes_its_connection(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 0.4)
    proxy = await start_proxy(origin.url, **UNCACHED)
    listener = proxy._listener
    assert listener is not None
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.1)
        listener.pre_shutdown()  # what the runner does once the port stops accepting
        data, _ = await read_until_closed(reader, 5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"body of /slow")
    assert b"Connection: close\r\n" in data


async def test_a_cut_at_the_end_of_the_grace_answers_503_when_nothing_was_sent(
    origin: Origin, start_proxy: StartProxy
) -> None:
    slow_for(origin, "/slow", 5)
    proxy = await start_proxy(origin.url, **UNCACHED)
    listener = proxy._listener
    assert listener is not None
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.2)
        listener.pre_shutdown()
        for conn in listener.connections:
            conn.cut()  # type: ignore[attr-defined]  # ListenerProtocol's
        data, took = await read_until_closed(reader, 5)
    assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and took < 2
    assert b'"shutting_down"' in data


async def test_a_large_response_streams_through_aiohttps_writer_on_its_own_task(
    origin: Origin, start_proxy: StartProxy
) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB: relayed as it streams, not made whole first
    origin.respond = lambda r: web.Response(
        body=big if r.path == "/big" else b"small", content_type="application/octet-stream"
    )
    proxy = await start_proxy(origin.url, **UNCACHED)
    async with connection(proxy) as (reader, writer):
        status, fields, body = await exchange(reader, writer, get("/big", ""))
        again = await exchange(reader, writer, get("/a"))  # and the connection goes on
    assert status == "HTTP/1.1 200 OK" and body == big
    assert dict(fields)["content-length"] == str(len(big))
    assert again[2] == b"small" and await own_tasks(proxy) == 2


async def test_a_hit_held_behind_a_miss_is_logged_with_none_of_the_misss_upstream(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """What a request sets in its context (its upstream's time and id) is not the next
    one's, though the next was held behind it and read once it was answered."""

    async def respond(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.3)
            return web.Response(text="slow", headers={"Cache-Control": "no-store"})
        return doc(request)

    origin.respond = respond
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    records = logged(proxy)
    async with connection(proxy) as (reader, writer):
        writer.write(get("/slow").encode())
        await asyncio.sleep(0.1)
        writer.write(get("/doc").encode())
        slow, hit = [await exchange(reader, writer, "") for _ in range(2)]
    assert (slow[2], dict(hit[1])["x-cache"]) == (b"slow", "HIT")
    (miss_record, hit_record) = records
    assert (miss_record[2], miss_record[6] is not None) == ("/slow", True)
    assert (hit_record[2], hit_record[5], hit_record[6]) == ("/doc", "hit", None)
    assert hit_record[13] is None  # nor the miss's upstream request id
