"""The fast path (server/listener.py, Pipeline.answer): a hot hit answered before aiohttp makes
a request of it says, counts and logs what the ordinary path's hit says, counts and logs.

The same proxy answers both ways: `ordinary` opens connections the fast path leaves alone.
`GET /listener/stats`'s `fast_path` shows which way each request went.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxy.config.loader import parse_config
from proxy.observe.logs import Record
from proxy.pipeline import handler
from proxy.pipeline.handler import Replay
from proxy.server.app import ProxyServer
from proxy.server.listener import FastPath, Listener, ListenerProtocol
from tests.conftest import Origin, StartProxy, config_text
from tests.e2e.test_listener import listener_stats, read_until_closed, timeouts
from tests.e2e.test_prepared import BODY, VOLATILE, exchange

APP = "https://app.example.com"
CLIENT = f"Origin: {APP}\r\nAccept-Encoding: br, gzip\r\n"
# Request lines whose values may differ between two responses, a refusal's included.
CHANGING = VOLATILE | {"retry-after", "date"}
EVERYTHING: dict[str, Any] = {
    "cache": {"ttl": 60},
    "cors": {"allow_origins": [APP], "allow_credentials": True, "expose_headers": ["X-Cache"]},
    "compression": {"algorithms": ["br", "gzip"]},
    "rate_limit": {"limits": ["1000/minute"]},
    "log": {"access": True, "sample_hits": 1.0},
}

Response = tuple[str, list[tuple[str, str]], bytes]


def doc(_: web.Request) -> web.Response:
    return web.Response(
        body=BODY,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "ETag": '"v1"'},
    )


def get(path: str, extra: str = CLIENT, version: str = "1.1", method: str = "GET") -> str:
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n"


@contextlib.asynccontextmanager
async def connection(
    proxy: ProxyServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        yield reader, writer
    finally:
        writer.close()


@contextlib.contextmanager
def ordinary(proxy: ProxyServer) -> Iterator[None]:
    """Connections opened meanwhile go the ordinary way, every request of them."""
    listener = proxy._listener
    assert listener is not None
    fast, listener.fast, listener.own = listener.fast, None, False
    try:
        yield
    finally:
        listener.fast, listener.own = fast, True


def aiohttps(proxy: ProxyServer) -> Listener:
    """Connections opened from here on leave whole heads the fast path does not answer to
    aiohttp's handler, not to their own task: what happens around that handler is tested."""
    listener = proxy._listener
    assert listener is not None
    listener.own = False
    return listener


async def fast_answers(proxy: ProxyServer) -> int:
    return (await listener_stats(proxy))["fast_path"]


def logged(proxy: ProxyServer) -> list[Record]:
    """The access log's records from here on."""
    access = proxy.observer.access
    assert access is not None
    records: list[Record] = []
    access.add = records.append  # type: ignore[method-assign,assignment]
    return records


def steady(response: Response) -> tuple[str, list[tuple[str, str]], list[str], bytes]:
    """What two responses of one URL share: the status, fields but the changing ones (their
    names only), the body."""
    status, fields, body = response
    kept = [f for f in fields if f[0] not in CHANGING]
    return status, kept, [name for name, _ in fields if name in CHANGING], body


async def warm(proxy: ProxyServer, path: str, extra: str = CLIENT) -> None:
    """A miss, then the hit that makes the prepared head the fast path sends from."""
    with ordinary(proxy):
        async with connection(proxy) as (reader, writer):
            for cache in ("MISS", "HIT"):
                _, fields, _ = await exchange(reader, writer, get(path, extra))
                assert dict(fields)["x-cache"] == cache


async def test_a_fast_hit_sends_counts_and_logs_what_an_ordinary_hit_does(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    meter = proxy.observer.meters.by_route["default"]
    records = logged(proxy)
    before, checks = dict(meter.responses), list(meter.ratelimit)
    store = proxy.pipeline.cache.store.stats
    looked_up = (store.hits, store.misses)
    async with connection(proxy) as (reader, writer):
        fast = await exchange(reader, writer, get("/doc"))
    assert await fast_answers(proxy) == 1
    with ordinary(proxy):
        async with connection(proxy) as (reader, writer):
            slow = await exchange(reader, writer, get("/doc"))
    assert await fast_answers(proxy) == 1
    assert steady(fast) == steady(slow)
    assert [k for k, _ in fast[1]] == [k for k, _ in slow[1]]  # the same lines in order
    assert dict(fast[1])["x-cache"] == "HIT" and dict(fast[1])["cache-status"].startswith(
        "cacheproxy;hit"
    )
    assert dict(fast[1])["access-control-allow-origin"] == APP
    ids = [dict(r[1])["x-request-id"] for r in (fast, slow)]
    assert ids[0] != ids[1]
    # Metrics: two hits more, two rate-limit checks more; the log: one line each, alike.
    hits = ("GET", 200, "hit")
    assert meter.responses[hits] == before.get(hits, 0) + 2
    assert meter.ratelimit[0] == checks[0] + 2
    assert (store.hits, store.misses) == (looked_up[0] + 2, looked_up[1])  # one lookup each
    assert len(records) == 2
    # time, method, path, route, status, cache, upstream s, total s, bytes, peer, xff, fwd, id
    fast_line, slow_line = records
    assert fast_line[1:7] == slow_line[1:7] == ("GET", "/doc", "default", 200, "hit", None)
    assert fast_line[8:12] == slow_line[8:12]
    assert [fast_line[12], slow_line[12]] == ids


async def test_a_client_id_and_a_head_request_go_the_fast_path_too(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    mine = CLIENT + "X-Request-ID: mine-1\r\n"
    async with connection(proxy) as (reader, writer):
        status, fields, body = await exchange(reader, writer, get("/doc", mine, method="HEAD"))
        got = await exchange(reader, writer, get("/doc", mine))
    assert await fast_answers(proxy) == 2
    assert status == got[0] == "HTTP/1.1 200 OK" and body == b""
    assert dict(fields)["x-request-id"] == dict(got[1])["x-request-id"] == "mine-1"
    assert dict(fields)["content-length"] == dict(got[1])["content-length"]


async def test_a_refusal_of_the_rate_limit_on_the_fast_path_is_the_ordinary_refusal(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **{**EVERYTHING, "rate_limit": {"limits": ["4/minute"]}})
    await warm(proxy, "/doc")  # checks 1 and 2
    meter = proxy.observer.meters.by_route["default"]
    records = logged(proxy)
    async with connection(proxy) as (reader, writer):
        allowed = await exchange(reader, writer, get("/doc"))  # 3
        await exchange(reader, writer, get("/doc"))  # 4
        fast = await exchange(reader, writer, get("/doc"))  # 5: refused
    assert await fast_answers(proxy) == 3
    with ordinary(proxy):
        async with connection(proxy) as (reader, writer):
            slow = await exchange(reader, writer, get("/doc"))
    assert allowed[0] == "HTTP/1.1 200 OK"
    assert fast[0] == slow[0] == "HTTP/1.1 429 Too Many Requests"
    assert sorted(steady(fast)[1]) == sorted(steady(slow)[1])
    assert sorted(k for k, _ in fast[1]) == sorted(k for k, _ in slow[1])
    fast_doc, slow_doc = orjson.loads(fast[2]), orjson.loads(slow[2])
    assert fast_doc.pop("request_id") == dict(fast[1])["x-request-id"]
    assert slow_doc.pop("request_id") == dict(slow[1])["x-request-id"]
    # The seconds to wait may have moved on by one between the two.
    assert abs(fast_doc.pop("retry_after") - slow_doc.pop("retry_after")) <= 1
    assert fast_doc.pop("message").startswith("rate limit 4/minute exceeded; retry in ")
    assert slow_doc.pop("message").startswith("rate limit 4/minute exceeded; retry in ")
    assert fast_doc == slow_doc == {"error": "rate_limited"}
    assert meter.ratelimit == [4, 2]
    assert meter.responses[("GET", 429, "none")] == 2
    assert [r[4:6] for r in records[2:]] == [(429, "none"), (429, "none")]


async def test_requests_the_fast_path_leaves_are_answered_as_ever(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        ranged = await exchange(
            reader,
            writer,
            get("/doc", CLIENT.replace("br, gzip", "identity") + "Range: bytes=0-3\r\n"),
        )
        conditional = await exchange(
            reader, writer, get("/doc", CLIENT + 'If-None-Match: "v1"\r\n')
        )
        old = await exchange(
            reader, writer, get("/doc", CLIENT + "Connection: keep-alive\r\n", "1.0")
        )
        expecting = await exchange(reader, writer, get("/doc", CLIENT + "Expect: 100-continue\r\n"))
        cold = await exchange(
            reader, writer, get("/doc", "Accept-Encoding: gzip\r\n")
        )  # no head yet
        closing = await exchange(reader, writer, get("/doc", CLIENT + "Connection: close\r\n"))
        rest, _ = await read_until_closed(reader, 5)
    assert ranged[0].startswith("HTTP/1.1 206") and ranged[2] == BODY[:4]
    assert conditional[0].startswith("HTTP/1.1 304")
    assert old[0] == "HTTP/1.0 200 OK" and dict(old[1])["connection"] == "keep-alive"
    assert expecting[0] == "HTTP/1.1 200 OK"
    assert dict(cold[1])["x-cache"] == "HIT" and dict(cold[1])["content-encoding"] == "gzip"
    assert dict(closing[1])["connection"] == "close" and rest == b""
    assert await fast_answers(proxy) == 0


async def test_a_request_behind_one_in_flight_waits_its_turn(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """Pipelined: the hit behind a miss still under way is answered after it, in order."""

    async def respond(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(0.3)
        return doc(request)

    origin.respond = respond
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        writer.write((get("/slow") + get("/doc")).encode())
        slow = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"X-Cache: MISS" in slow
        length = int(slow.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        assert await fast_answers(proxy) == 0  # the hit went behind it, the ordinary way
        _, fields, body = await exchange(reader, writer, "")
        assert dict(fields)["x-cache"] == "HIT" and body
        await exchange(reader, writer, get("/doc"))  # the connection idle again: fast
    assert await fast_answers(proxy) == 1


async def test_keep_alive_closes_a_connection_idle_after_a_fast_answer(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING, **timeouts(request_head=5, keepalive=0.5))
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        status, _, _ = await exchange(reader, writer, get("/doc"))
        assert status == "HTTP/1.1 200 OK"
        assert await fast_answers(proxy) == 1
        data, took = await read_until_closed(reader, 5)
    assert data == b"" and 0.4 < took < 2.0


async def test_without_a_caching_route_the_fast_path_is_off_until_a_reload_adds_one(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """Every request would be looked at for nothing; new connections after the reload get it."""
    origin.respond = doc
    proxy = await start_proxy(origin.url)
    listener = proxy._listener
    assert listener is not None and listener.fast is None
    proxy.apply(parse_config(config_text(origin.url, **EVERYTHING), env={}))
    assert listener.fast is not None
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        status, _, _ = await exchange(reader, writer, get("/doc"))
    assert status == "HTTP/1.1 200 OK" and await fast_answers(proxy) == 1
    proxy.apply(parse_config(config_text(origin.url), env={}))
    assert listener.fast is None


async def test_only_targets_served_fresh_lately_are_tried_and_a_stale_one_only_once(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """A miss never builds the fast path's request; a target no longer fresh in memory is
    tried once, then left to the ordinary path until it serves it fresh again."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING, purge={"allow": ["127.0.0.1"]})
    hot = proxy.pipeline.hot
    async with connection(proxy) as (reader, writer):
        await exchange(reader, writer, get("/doc"))  # a miss: not tried, not hot
        assert "/doc" not in hot
        await exchange(reader, writer, get("/doc"))  # the ordinary hit that makes the head
        assert "/doc" in hot
        await exchange(reader, writer, get("/doc"))
        assert await fast_answers(proxy) == 1
        writer.write(b"PURGE /doc HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"}"), 5)).endswith(b'{"purged":1}')
        store = proxy.pipeline.cache.store.stats
        looked_up = (store.hits, store.misses)
        _, fields, _ = await exchange(reader, writer, get("/doc"))  # tried, left: a miss
        assert dict(fields)["x-cache"] == "MISS" and "/doc" not in hot
        assert (store.hits, store.misses) == (looked_up[0], looked_up[1] + 1)  # counted once
        _, fields, _ = await exchange(reader, writer, get("/doc"))  # ordinary again
        assert dict(fields)["x-cache"] == "HIT" and "/doc" in hot
        await exchange(reader, writer, get("/doc"))
    assert await fast_answers(proxy) == 2


async def test_a_fast_path_that_fails_leaves_requests_to_the_ordinary_path_and_logs_in_a_budget(
    origin: Origin, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the fast path that fails every hit costs each request only its way round:
    the ordinary path answers, and the log gets a traceback per budget, not one per hit."""

    class Failing:
        def __init__(self, real: FastPath) -> None:
            self.hot = real.hot
            self.replays = real.replays

        def answer(self, request: web.BaseRequest, head_bytes: bytes = b"") -> None:
            raise RuntimeError("a bug")

        def again(self, head_bytes: bytes, replay: Replay, request: web.BaseRequest) -> None:
            raise RuntimeError("a bug")

    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    listener = proxy._listener
    assert listener is not None and listener.fast is not None
    listener.fast = Failing(listener.fast)
    with caplog.at_level(logging.ERROR, logger="cacheproxy.listener"):
        async with connection(proxy) as (reader, writer):
            for _ in range(15):
                status, fields, body = await exchange(reader, writer, get("/doc"))
                assert (status, dict(fields)["x-cache"]) == ("HTTP/1.1 200 OK", "HIT") and body
    failures = [r for r in caplog.records if "the fast path failed" in r.getMessage()]
    assert len(failures) == 10 and all(r.exc_info for r in failures)  # LogBudget's burst
    assert await fast_answers(proxy) == 0


async def heads_read_here(proxy: ProxyServer) -> int:
    return (await listener_stats(proxy))["fast_path_heads"]


async def test_a_whole_head_is_read_by_the_listener_and_anything_else_by_aiohttp(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """A head that comes whole is read without aiohttp's parser; one in two pieces, or two
    in one piece, is aiohttp's to read, and the fast path still answers them; so are those
    the pipeline declines once read here (a Range), answered by aiohttp as ever."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        whole = await exchange(reader, writer, get("/doc"))
        assert (await fast_answers(proxy), await heads_read_here(proxy)) == (1, 1)
        writer.write(get("/doc").encode()[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        split = await exchange(reader, writer, get("/doc")[20:])
        assert (await fast_answers(proxy), await heads_read_here(proxy)) == (2, 1)
        writer.write((get("/doc") + get("/doc", CLIENT + "X-Two: 2\r\n")).encode())
        two = [await exchange(reader, writer, ""), await exchange(reader, writer, "")]
        assert (await fast_answers(proxy), await heads_read_here(proxy)) == (4, 1)
        again = await exchange(reader, writer, get("/doc"))  # the parser empty again: here
        assert (await fast_answers(proxy), await heads_read_here(proxy)) == (5, 2)
        ranged = await exchange(reader, writer, get("/doc", "Range: bytes=0-3\r\n"))
        assert (await fast_answers(proxy), await heads_read_here(proxy)) == (5, 2)
    for response in (whole, split, *two, again):
        assert steady(response) == steady(whole)
    assert ranged[0].startswith("HTTP/1.1 206") and ranged[2] == BODY[:4]


async def test_more_requests_pipelined_at_once_than_the_parser_emits_are_all_answered(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """aiohttp's parser emits 32 requests in flight and keeps the rest: those 32 answered on
    the fast path must not leave the rest unparsed until the client sends more."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        await exchange(reader, writer, get("/doc"))  # kept alive, idle: the fast path's
        before = await fast_answers(proxy)
        writer.write(get("/doc").encode() * 100)
        responses = [await asyncio.wait_for(exchange(reader, writer, ""), 5) for _ in range(100)]
    assert await fast_answers(proxy) - before == 100
    assert all(steady(r) == steady(responses[0]) for r in responses)


async def test_a_body_that_looks_like_a_hot_request_is_never_answered_as_one(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """A request answered before its body has come (a PURGE refused): the body arriving
    after is a body, whatever it looks like, and aiohttp's to read, not a request."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    inner = get("/doc").encode()
    async with connection(proxy) as (reader, writer):
        writer.write(
            f"PURGE /x HTTP/1.1\r\nHost: t\r\nContent-Length: {len(inner)}\r\n\r\n".encode()
        )
        refused = await exchange(reader, writer, "")
        assert refused[0] == "HTTP/1.1 405 Method Not Allowed"
        writer.write(inner)  # the body
        await writer.drain()
        await asyncio.sleep(0.1)
        hit = await exchange(reader, writer, get("/doc", CLIENT + "X-Request-ID: after\r\n"))
        writer.write(get("/doc").encode())
        with pytest.raises(TimeoutError):  # the one response to one request
            await asyncio.wait_for(reader.readuntil(b"X-Request-ID: after"), 0.5)
    assert dict(hit[1])["x-request-id"] == "after" and dict(hit[1])["x-cache"] == "HIT"


async def test_a_request_arriving_while_the_handler_finishes_the_last_one_goes_the_fast_path(
    origin: Origin, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an ordinary response aiohttp's handler is not parked on its waiter at once; a
    request arriving then (under load, most of them) is answered on the fast path, after
    the ordinary response. Made deterministic: the bytes are fed the moment aiohttp logs
    the ordinary response, before its handler loop runs again."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    aiohttps(proxy)
    original = ListenerProtocol.log_access
    waiting: list[bytes] = [get("/doc", CLIENT + "X-Request-ID: second\r\n").encode()]

    def log_access(self: ListenerProtocol, request: Any, response: Any, time_: Any) -> None:
        original(self, request, response, time_)
        if waiting and request.raw_path == "/first":
            assert self.idle_waiter is None  # not parked: the window
            self.data_received(waiting.pop())

    monkeypatch.setattr(ListenerProtocol, "log_access", log_access)
    async with connection(proxy) as (reader, writer):
        first = await exchange(reader, writer, get("/first"))
        second = await exchange(reader, writer, "")
    assert not waiting
    assert dict(first[1])["x-cache"] == "MISS"
    assert dict(second[1])["x-cache"] == "HIT" and dict(second[1])["x-request-id"] == "second"
    assert (await fast_answers(proxy), await heads_read_here(proxy)) == (1, 1)


async def test_part_of_a_head_arriving_while_the_handler_finishes_the_last_one_is_timed(
    origin: Origin, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same window as above, with only part of the next head: request_head bounds it
    from there, as it does for one arriving while the handler is parked (not keep-alive's
    75 s)."""
    proxy = await start_proxy(origin.url, **EVERYTHING, **timeouts(request_head=0.5))
    aiohttps(proxy)
    original = ListenerProtocol.log_access
    waiting = [b"GET /doc HTTP/1.1\r\nHo"]

    def log_access(self: ListenerProtocol, request: Any, response: Any, time_: Any) -> None:
        original(self, request, response, time_)
        if waiting and request.raw_path == "/first":
            assert self.idle_waiter is None  # not parked: the window
            self.data_received(waiting.pop())

    monkeypatch.setattr(ListenerProtocol, "log_access", log_access)
    async with connection(proxy) as (reader, writer):
        writer.write(get("/first").encode())
        data, took = await read_until_closed(reader, 5)
    assert not waiting
    assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408 Request Timeout\r\n" in data
    assert took < 2.0


async def test_a_request_arriving_before_the_handler_runs_the_last_one_waits_its_turn(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """aiohttp takes a request off its queue, makes its request object, then the handler's
    task, which runs later: a hot request arriving in between waits for it, in order."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    listener = aiohttps(proxy)
    factory = listener.request_factory
    waiting: list[bytes] = [get("/doc", CLIENT + "X-Request-ID: second\r\n").encode()]

    def request_factory(message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
        request = factory(message, payload, protocol, *args)
        if waiting and message.path == "/first":
            protocol.data_received(waiting.pop())  # its handler's task not yet started
        return request

    listener.request_factory = request_factory
    async with connection(proxy) as (reader, writer):
        first = await exchange(reader, writer, get("/first"))
        second = await exchange(reader, writer, "")
    assert not waiting
    assert dict(first[1])["x-cache"] == "MISS"
    assert dict(second[1])["x-cache"] == "HIT" and dict(second[1])["x-request-id"] == "second"
    assert await fast_answers(proxy) == 0  # behind one in flight: the ordinary way


def per_tenant(request: web.Request) -> web.Response:
    """Says which tenant and upstream path it answered, uncompressed (too short to encode)."""
    tenant = request.headers.get("X-Tenant", "")
    return web.Response(
        body=orjson.dumps({"tenant": tenant, "path": request.path}),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def answered(proxy: ProxyServer, requests: list[str]) -> list[dict[str, str]]:
    """The fast path's answers to `requests`, after a miss and an ordinary hit of each."""
    for request in requests:
        with ordinary(proxy):
            async with connection(proxy) as (reader, writer):
                for cache in ("MISS", "HIT"):
                    _, fields, _ = await exchange(reader, writer, request)
                    assert dict(fields)["x-cache"] == cache
    before = await fast_answers(proxy)
    docs = []
    async with connection(proxy) as (reader, writer):
        for request in [*requests, *requests]:
            _, fields, body = await exchange(reader, writer, request)
            assert dict(fields)["x-cache"] == "HIT"
            docs.append(orjson.loads(body))
    assert await fast_answers(proxy) == before + 2 * len(requests)
    return docs


async def test_a_key_made_of_fields_is_made_for_each_request_on_the_fast_path(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """The fast path keeps a target's route and URL key, never a key that reads the fields."""
    origin.respond = per_tenant
    cache = {"ttl": 60, "key": {"headers": ["X-Tenant"]}}
    proxy = await start_proxy(origin.url, **{**EVERYTHING, "cache": cache})
    tenants = [get("/doc", f"{CLIENT}X-Tenant: {tenant}\r\n") for tenant in ("a", "b")]
    docs = await answered(proxy, tenants)
    assert [d["tenant"] for d in docs] == ["a", "b", "a", "b"]


async def test_each_host_is_answered_through_its_own_route_on_the_fast_path(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = per_tenant
    one = {"name": "one", "match": {"prefix": "/", "hosts": ["one.test"]}, "upstream": origin.url}
    two = {"name": "two", "match": {"prefix": "/", "hosts": ["two.test"]}}
    two["upstream"] = origin.url + "/2"  # a key of its own
    proxy = await start_proxy(origin.url, **EVERYTHING, routes=[one, two])
    meters = proxy.observer.meters.by_route
    hits = ("GET", 200, "hit")
    requests = [f"GET /doc HTTP/1.1\r\nHost: {h}\r\n{CLIENT}\r\n" for h in ("one.test", "two.test")]
    docs = await answered(proxy, requests)
    assert [d["path"] for d in docs] == ["/doc", "/2/doc", "/doc", "/2/doc"]
    assert (meters["one"].responses[hits], meters["two"].responses[hits]) == (3, 3)


async def test_a_reload_sends_a_hot_target_through_its_new_route(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """What the fast path kept of a target's route goes with the reload that replaces it."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        await exchange(reader, writer, get("/doc"))
    assert await fast_answers(proxy) == 1
    uncached = [{"name": "fresh", "match": {"path": "/doc"}, "cache": False}]
    proxy.apply(parse_config(config_text(origin.url, **EVERYTHING, routes=uncached), env={}))
    fetched = origin.hits["/doc"]
    async with connection(proxy) as (reader, writer):
        status, fields, _ = await exchange(reader, writer, get("/doc"))
    assert status == "HTTP/1.1 200 OK" and dict(fields)["x-cache"] == "BYPASS"
    assert origin.hits["/doc"] == fetched + 1 and await fast_answers(proxy) == 1


async def test_two_authorization_fields_are_refused_on_a_target_the_fast_path_knows(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    cache = {"ttl": 60, "on_credentials": "lookup"}  # a credentialed request may hit
    proxy = await start_proxy(origin.url, **{**EVERYTHING, "cache": cache})
    await warm(proxy, "/doc")
    bearer = f"{CLIENT}Authorization: Bearer a\r\n"
    async with connection(proxy) as (reader, writer):
        once = await exchange(reader, writer, get("/doc", bearer))
        twice = await exchange(reader, writer, get("/doc", f"{bearer}Authorization: Bearer b\r\n"))
    assert once[0] == "HTTP/1.1 200 OK" and dict(once[1])["x-cache"] == "HIT"
    assert twice[0] == "HTTP/1.1 400 Bad Request"
    assert orjson.loads(twice[2])["message"] == "more than one Authorization field"
    assert await fast_answers(proxy) == 1


@pytest.mark.parametrize(("age", "max_age"), [(0, 3600), (3599, 7300), (5000, 100_000)])
async def test_ages_and_ttls_past_an_hour_are_written_as_ever_on_the_fast_path(
    origin: Origin, start_proxy: StartProxy, age: int, max_age: int
) -> None:
    """Seconds up to an hour come from a table, longer ones are written out: alike."""

    def aged(_: web.Request) -> web.Response:
        headers = {"Cache-Control": f"public, max-age={max_age}", "Age": str(age)}
        return web.Response(body=BODY, content_type="application/json", headers=headers)

    origin.respond = aged
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    async with connection(proxy) as (reader, writer):
        _, fields, _ = await exchange(reader, writer, get("/doc"))
    assert await fast_answers(proxy) == 1
    shown = dict(fields)
    assert int(shown["age"]) in (age, age + 1)
    ttl = int(shown["cache-status"].rpartition(";ttl=")[2])
    assert ttl in (max_age - int(shown["age"]) - 1, max_age - int(shown["age"]))  # fractions
    assert shown["cache-status"] == f"cacheproxy;hit;ttl={ttl}"


async def test_a_request_that_asks_for_a_fresher_response_goes_the_ordinary_way(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    fetched = origin.hits["/doc"]
    async with connection(proxy) as (reader, writer):
        await exchange(reader, writer, get("/doc"))
        assert await fast_answers(proxy) == 1
        for asks in ("Cache-Control: max-age=0\r\n", "Pragma: no-cache\r\n"):
            status, _, _ = await exchange(reader, writer, get("/doc", CLIENT + asks))
            assert status == "HTTP/1.1 200 OK"
    assert await fast_answers(proxy) == 1 and origin.hits["/doc"] == fetched + 2


async def test_the_plans_the_fast_path_keeps_are_bounded(
    origin: Origin, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its bound the memo starts over: the targets are still answered, planned again."""
    monkeypatch.setattr(handler, "_PLANS", 2)
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    paths = [f"/doc/{i}" for i in range(3)]
    long = "/doc/" + "x" * handler._PLAN_TARGET_MAX  # answered, never kept
    for path in [*paths, long]:
        await warm(proxy, path)
    plans = proxy.pipeline._plans
    async with connection(proxy) as (reader, writer):
        for path in paths * 2:
            status, _, _ = await exchange(reader, writer, get(path))
            assert status == "HTTP/1.1 200 OK"
            assert 1 <= len(plans) <= 2
        plans.clear()
        status, _, _ = await exchange(reader, writer, get(long))
        assert status == "HTTP/1.1 200 OK" and not plans
    assert await fast_answers(proxy) == 7
