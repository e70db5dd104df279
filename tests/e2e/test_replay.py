"""Replays (Pipeline.again): a request head whose very bytes the fast path answered before is
answered from what answered it, without being read again, for as long as that answer holds.

Each test sends the same bytes over and over and checks that what the ordinary path would
answer is what it gets: a purge, an expiry, a soft purge, a revoked token, another client's
rate limit and a reload all end or change a replay's answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.config.loader import parse_config
from proxy.http.head import parse_head
from proxy.pipeline import handler
from proxy.server import listener
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, config_text
from tests.e2e.test_fast_path import (
    APP,
    CLIENT,
    EVERYTHING,
    doc,
    fast_answers,
    get,
    logged,
    ordinary,
    steady,
    warm,
)
from tests.e2e.test_prepared import exchange
from tests.e2e.test_revocation import ADMIN, revoke

Response = tuple[str, list[tuple[str, str]], bytes]


@pytest.fixture
def heads_read(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The heads the listener reads (parse_head) from here on: a replay reads none."""
    read: list[bytes] = []

    def reading(data: bytes) -> Any:
        read.append(data)
        return parse_head(data)

    monkeypatch.setattr(listener, "parse_head", reading)
    return read


async def send(proxy: ProxyServer, *requests: str, host: str = "127.0.0.1") -> list[Response]:
    """Each request on one connection from `host` (a loopback address), in turn."""
    async with connection_from(proxy, host) as (reader, writer):
        return [await exchange(reader, writer, r) for r in requests]


@contextlib.asynccontextmanager
async def connection_from(
    proxy: ProxyServer, host: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", proxy.proxy_port, local_addr=(host, 0)
    )
    try:
        yield reader, writer
    finally:
        writer.close()


def field(response: Response, name: str) -> str:
    return dict(response[1])[name]


async def test_the_same_head_again_is_answered_without_being_read_as_the_first_was(
    origin: Origin, start_proxy: StartProxy, heads_read: list[bytes]
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    meter = proxy.observer.meters.by_route["default"]
    records = logged(proxy)
    hits, checks = meter.responses[("GET", 200, "hit")], meter.ratelimit[0]
    first, second, *again = await send(proxy, *[get("/doc")] * 4)
    # Read twice (kept as a replay when answered a second time), then replayed.
    assert len(heads_read) == 2 and list(proxy.pipeline.replays) == [get("/doc").encode()]
    assert await fast_answers(proxy) == 4
    for response in (second, *again):
        assert steady(response) == steady(first)
        assert [k for k, _ in response[1]] == [k for k, _ in first[1]]  # in the same order
    responses = [first, second, *again]
    assert len({field(r, "x-request-id") for r in responses}) == 4  # each its own
    # Counted, checked against the limit and logged as the first was, each time.
    assert meter.responses[("GET", 200, "hit")] == hits + 4
    assert meter.ratelimit[0] == checks + 4
    assert [r[4:6] for r in records] == [(200, "hit")] * 4
    remaining = [int(field(r, "x-ratelimit-remaining")) for r in responses]
    assert remaining == [remaining[0] - n for n in range(4)]
    # A HEAD of the same target is other bytes: read, then replayed too, without a body.
    head = get("/doc", method="HEAD")
    responses = await send(proxy, head, head, head)
    assert [r[2] for r in responses] == [b""] * 3 and len(heads_read) == 4


async def test_a_head_never_sent_twice_is_never_kept(
    origin: Origin, start_proxy: StartProxy, heads_read: list[bytes]
) -> None:
    """A client sending its own id (or trace) in every request sends bytes that never come
    again: each is answered on the fast path, read each time, and none is kept."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    own = [get("/doc", f"{CLIENT}X-Request-ID: client-{i}\r\n") for i in range(5)]
    responses = await send(proxy, *own)
    assert [field(r, "x-request-id") for r in responses] == [f"client-{i}" for i in range(5)]
    assert len(heads_read) == 5 and not proxy.pipeline.replays
    assert await fast_answers(proxy) == 5


async def test_a_purge_ends_a_replay_and_the_next_store_makes_another(
    origin: Origin, start_proxy: StartProxy, heads_read: list[bytes]
) -> None:
    version = ["v1"]
    origin.respond = lambda _: web.Response(
        text=version[0], headers={"Cache-Control": "max-age=3600"}
    )
    proxy = await start_proxy(origin.url, **EVERYTHING, admin={"token": ADMIN})
    await warm(proxy, "/doc")
    assert [r[2] for r in await send(proxy, get("/doc"), get("/doc"))] == [b"v1", b"v1"]
    version[0] = "v2"
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{proxy.admin_port}/cache/purge"
        auth = {"Authorization": f"Bearer {ADMIN}"}
        async with http.post(url, json={"url": "/doc"}, headers=auth) as resp:
            assert resp.status == 200
    responses = await send(proxy, *[get("/doc")] * 3)
    assert [(field(r, "x-cache"), r[2]) for r in responses] == [
        ("MISS", b"v2"),
        ("HIT", b"v2"),
        ("HIT", b"v2"),
    ]


async def test_an_entry_that_expires_or_is_soft_purged_is_not_replayed(
    origin: Origin, start_proxy: StartProxy
) -> None:
    version = ["v1"]
    origin.respond = lambda _: web.Response(
        text=version[0], headers={"Cache-Control": "max-age=60", "ETag": f'"{version[0]}"'}
    )
    proxy = await start_proxy(origin.url, **EVERYTHING, purge={"allow": ["127.0.0.1/32"]})
    await warm_again(proxy)
    assert get("/doc").encode() in proxy.pipeline.replays
    stage = proxy.pipeline.cache
    clock = stage._clock
    stage._clock = lambda: clock() + 61  # past its max-age: the origin is asked again
    version[0] = "v2"
    expired = (await send(proxy, get("/doc")))[0]
    stage._clock = clock
    assert (field(expired, "x-cache"), expired[2]) == ("MISS", b"v2")
    await warm_again(proxy)
    assert get("/doc").encode() in proxy.pipeline.replays
    soft = "PURGE /doc HTTP/1.1\r\nHost: t\r\nSoft-Purge: 1\r\n\r\n"
    purged, after = await send(proxy, soft, get("/doc"))
    assert purged[0] == "HTTP/1.1 200 OK"
    # Served stale while it is revalidated, as the ordinary path serves a soft-purged entry.
    assert field(after, "x-cache") == "STALE"
    assert "detail=soft-purged" in field(after, "cache-status")


async def warm_again(proxy: ProxyServer) -> None:
    """Until the same bytes are answered as a fresh hit twice (stored, then replayed)."""
    for _ in range(5):
        responses = await send(proxy, get("/doc"), get("/doc"))
        if all(field(r, "x-cache") == "HIT" for r in responses):
            return
    raise AssertionError("never a fresh hit")


async def test_a_token_revoked_after_its_requests_were_replayed_is_refused(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = doc
    token = "opaque-Secret-Token-123"
    signed = get("/doc", f"Authorization: Bearer {token}\r\n")
    cache = {"ttl": 60, "on_credentials": "lookup"}
    proxy = await start_proxy(origin.url, cache=cache, admin={"token": ADMIN})
    await warm(proxy, "/doc", "")
    responses = await send(proxy, signed, signed)
    assert [field(r, "x-cache") for r in responses] == ["HIT", "HIT"]
    assert signed.encode() in proxy.pipeline.replays
    assert (await revoke(http, proxy, {"token": token, "ttl": 600}))[0] == 200
    refused = await send(proxy, signed, signed)
    assert [r[0] for r in refused] == ["HTTP/1.1 401 Unauthorized"] * 2
    assert orjson.loads(refused[0][2])["error"] == "token_revoked"


async def test_each_client_replaying_one_head_has_its_own_rate_limit(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **{**EVERYTHING, "rate_limit": {"limits": ["4/minute"]}})
    await warm(proxy, "/doc")  # 127.0.0.1's checks 1 and 2
    one = await send(proxy, *[get("/doc")] * 3)
    other = await send(proxy, *[get("/doc")] * 3, host="127.0.0.2")
    assert [r[0][9:12] for r in one] == ["200", "200", "429"]
    assert [r[0][9:12] for r in other] == ["200", "200", "200"]
    assert [field(r, "x-ratelimit-remaining") for r in other] == ["3", "2", "1"]


async def test_a_reload_forgets_every_replay(
    origin: Origin, start_proxy: StartProxy, tmp_path: Any
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    await warm(proxy, "/doc")
    await send(proxy, get("/doc"), get("/doc"))
    assert proxy.pipeline.replays
    uncached = {**EVERYTHING, "routes": [{"name": "r", "match": {"prefix": "/"}, "cache": False}]}
    proxy.apply(parse_config(config_text(origin.url, **uncached), env={}))
    assert not proxy.pipeline.replays
    response = (await send(proxy, get("/doc")))[0]
    assert field(response, "x-cache") != "HIT"


async def test_replays_are_bounded_in_number_and_head_size(
    origin: Origin, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a bound they start over; a head over its size is answered, never kept."""
    origin.respond = doc
    proxy = await start_proxy(origin.url, **EVERYTHING)
    paths = [f"/doc/{i}" for i in range(3)]
    for path in paths:
        await warm(proxy, path)
    replays: Callable[[], dict[bytes, Any]] = lambda: proxy.pipeline.replays  # noqa: E731
    monkeypatch.setattr(handler, "_REPLAYS", 2)
    for path in paths:
        await send(proxy, get(path), get(path))  # kept when answered a second time
        assert 1 <= len(replays()) <= 2
    monkeypatch.setattr(handler, "_REPLAYS", 100)
    monkeypatch.setattr(handler, "_REPLAY_HEAD_MAX", len(get(paths[0])) - 1)
    proxy.pipeline.use_request_ids(proxy.config.request_id)  # forgets them all
    await send(proxy, get(paths[0]), get(paths[0]))
    assert not replays()
    assert await fast_answers(proxy) == 6 + 2


async def test_a_replay_holds_neither_its_entry_nor_its_form_once_the_store_lets_go(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """An origin's gzip of 1 MiB of JSON is ~1 KiB; its entry grows by the 1 MiB decoded for
    a client that does not take gzip, whose head is then kept as a replay too. Purged, the
    entry and both forms are freed at once: the store's max_memory is the only bound on
    what entries hold, replays or not."""
    packed = gzip.compress(b"[" + b"0," * (1 << 19) + b"0]")
    origin.respond = lambda _: web.Response(
        body=packed,
        headers={
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
            "Cache-Control": "max-age=3600",
        },
    )
    proxy = await start_proxy(origin.url, **EVERYTHING, purge={"allow": ["127.0.0.1/32"]})
    plain = get("/z", f"Origin: {APP}\r\n")  # no Accept-Encoding: the decoded form
    await warm(proxy, "/z")
    with ordinary(proxy):
        await send(proxy, plain)  # the decoded form made, as a hit does the first time
    sent = await send(proxy, get("/z"), plain, get("/z"), plain)  # each kept the second time
    assert len(sent[3][2]) > 1 << 20
    replays = proxy.pipeline.replays
    assert {get("/z").encode(), plain.encode()} <= set(replays)
    held = [ref for r in replays.values() for ref in (r.entry, r.head)]
    assert all(ref() is not None for ref in held)
    purge = "PURGE /z HTTP/1.1\r\nHost: t\r\n\r\n"
    assert (await send(proxy, purge))[0][0] == "HTTP/1.1 200 OK"
    assert not proxy.pipeline.cache.store._entries
    gc.collect()
    assert [ref() for ref in held] == [None] * len(held)
    # The same bytes again: a miss, and a replay of the new entry once it is a hit again.
    responses = await send(proxy, get("/z"), get("/z"), get("/z"))
    assert [field(r, "x-cache") for r in responses] == ["MISS", "HIT", "HIT"]
