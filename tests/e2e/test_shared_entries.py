"""What an instance takes from Redis: never framing fields, never more than max_entry_size,
and with `key_secret` only entries authenticated under it (anyone who can write to Redis
can write a checksum)."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
import redis.asyncio

from proxy.cache import entry_format
from proxy.cache.entry import Entry
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get, raw_exchange
from tests.e2e.test_shared_cache import admin, shared
from tests.redis_servers import RedisServer


async def forge(server: RedisServer, writer: ProxyServer, change: Any) -> None:
    """Rewrite the one entry in Redis as someone with write access could: the entry the
    `writer` stored (from its memory), changed, encoded in the documented format."""
    (key,) = server.cli("--scan", "--pattern", "*:k:*").split()
    entry: Entry = next(iter(writer.pipeline.cache.store._entries.values()))
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        await client.set(key, entry_format.encode(change(entry)), keepttl=True)
    finally:
        await client.aclose()


async def test_framing_fields_written_into_redis_never_reach_a_client(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url})
    a = await start_proxy(origin.url, **config)
    await get(http, a, "/x")
    smuggled = "\nTransfer-Encoding:chunked\nConnection:close, X-Hop\nX-Hop:1\nKeep-Alive:timeout=1"
    await forge(redis_server, a, lambda e: dataclasses.replace(e, head=e.head + smuggled))
    b = await start_proxy(origin.url, **config)
    raw = await raw_exchange(
        b.proxy_port, b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", wait=3
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = {line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]}
    assert b"x-cache: hit" in head.lower()  # the shared entry served it...
    assert not fields & {b"transfer-encoding", b"keep-alive", b"x-hop"}  # ...without them
    assert body == b"body of /x"
    assert b"content-length: 10\r\n" in head.lower() + b"\r\n"


async def test_an_entry_in_redis_over_max_entry_size_is_a_miss(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url}, max_entry_size=4096)
    a = await start_proxy(origin.url, **config)
    await get(http, a, "/x")
    await forge(redis_server, a, lambda e: dataclasses.replace(e, body=b"x" * 100_000))
    b = await start_proxy(origin.url, **config)
    resp, body = await get(http, b, "/x")
    assert (resp.headers["X-Cache"], body) == ("MISS", b"body of /x")
    _, stats = await admin(http, b, "GET", "/cache/stats")
    assert stats["shared"]["oversize"] == 1
    assert stats["bytes"] < 4096  # the memory tier never took it


async def test_with_a_key_secret_an_entry_without_its_tag_is_a_miss(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url}, key_secret="k" * 32)
    a = await start_proxy(origin.url, **config)
    await get(http, a, "/x")
    b = await start_proxy(origin.url, **config)
    resp, _ = await get(http, b, "/x")
    assert resp.headers["X-Cache"] == "HIT"  # one secret: shared, authenticated
    await forge(redis_server, a, lambda e: dataclasses.replace(e, body=b"forged!!!!"))
    c = await start_proxy(origin.url, **config)
    resp, body = await get(http, c, "/x")
    assert (resp.headers["X-Cache"], body) == ("MISS", b"body of /x")
    _, stats = await admin(http, c, "GET", "/cache/stats")
    assert (stats["shared"]["unauthenticated"], stats["shared"]["corrupt"]) == (1, 0)
