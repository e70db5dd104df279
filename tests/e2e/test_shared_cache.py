"""Two proxy instances sharing one real Redis: one cache, one purge, and no outage from Redis."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web

from proxy.cache import entry_format
from proxy.server.app import ProxyServer
from tests.cache.entry_v1 import encode_v1
from tests.conftest import Origin, StartProxy, get
from tests.redis_servers import RedisCluster, RedisSentinel, RedisServer


def shared(redis: dict[str, Any], **cache: Any) -> dict[str, Any]:
    return {
        "redis": {"key_prefix": f"t{uuid.uuid4().hex[:6]}:", "timeout": 2, **redis},
        "cache": {"tiers": ["memory", "redis"], "ttl": 60, "tags_header": "Surrogate-Key", **cache},
    }


async def admin(
    http: aiohttp.ClientSession, proxy: ProxyServer, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{proxy.admin_port}{path}"
    async with http.request(method, url, **kw) as resp:
        return resp.status, await resp.json()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.02)


async def stored(client: redis.asyncio.Redis, key: str) -> bytes:
    """The bytes Redis holds at `key` (the client returns bytes: no decode_responses)."""
    value = await client.get(key)
    assert isinstance(value, bytes), value
    return value


async def redis_calls(server: RedisServer) -> dict[str, int]:
    counts = {}
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            counts[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].split("=")[1])
    return counts


async def test_a_response_cached_through_one_instance_is_a_hit_on_the_other(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    first, body = await get(http, a, "/quotes/AAPL")
    assert first.headers["X-Cache"] == "MISS"
    second, again = await get(http, b, "/quotes/AAPL")
    assert (second.headers["X-Cache"], again) == ("HIT", body)
    assert second.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    assert origin.hits["/quotes/AAPL"] == 1
    # Promoted into B's memory: the next hit there is an L1 hit.
    third, _ = await get(http, b, "/quotes/AAPL")
    assert third.headers["Cache-Status"].startswith("cacheproxy;hit;ttl=")


async def test_an_l1_hit_sends_no_command_to_redis(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    proxy = await start_proxy(origin.url, **shared({"url": redis_server.url}))
    await get(http, proxy, "/hot")
    before = await redis_calls(redis_server)
    for _ in range(50):
        resp, _ = await get(http, proxy, "/hot")
        assert resp.headers["X-Cache"] == "HIT"
    after = await redis_calls(redis_server)
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    changed.pop("ping", None)  # the purge subscription's keep-alive
    changed.pop("xrange", None)  # the purge log's poll, every 2 s
    changed.pop("info", None)  # our own INFO call
    assert changed == {}


@pytest.mark.parametrize(
    ("purge", "path"),
    [
        ({"url": "/signals/NVDA?window=5d"}, "/signals/NVDA?window=5d"),
        ({"prefix": "/signals/"}, "/signals/NVDA?window=5d"),
        ({"tag": "nvda"}, "/signals/NVDA?window=5d"),
    ],
)
async def test_a_purge_on_one_instance_empties_the_others_memory(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    purge: dict[str, str],
    path: str,
) -> None:
    origin.respond = lambda r: web.Response(
        text=f"v{origin.hits[r.path]}",
        headers={"Cache-Control": "max-age=60", "Surrogate-Key": "signals nvda"},
    )
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    await get(http, a, path)
    for _ in range(2):  # B's L1 holds it after the first
        resp, body = await get(http, b, path)
        assert (resp.headers["X-Cache"], body) == ("HIT", b"v1")
    status, result = await admin(http, a, "POST", "/cache/purge", json=purge)
    assert (status, result) == (200, {"purged": 1, "purged_shared": 1})

    async def b_refetches() -> bool:
        return (await get(http, b, path))[1] == b"v2"

    await eventually(b_refetches, within=1.0)
    assert origin.hits["/signals/NVDA"] == 2


async def test_an_unsafe_request_on_one_instance_invalidates_everywhere(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    origin.respond = lambda r: web.Response(
        text=f"{r.method} {origin.hits[r.path]}", headers={"Cache-Control": "max-age=60"}
    )
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    await get(http, b, "/orders/1")
    await get(http, b, "/orders/1")
    async with http.put(f"http://127.0.0.1:{a.proxy_port}/orders/1", data=b"{}") as resp:
        assert resp.status == 200

    async def b_sees_the_change() -> bool:
        return (await get(http, b, "/orders/1"))[1] == b"GET 3"

    await eventually(b_sees_the_change)


async def test_a_fetch_overtaken_by_a_purge_elsewhere_is_not_shared(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    origin.delay = 0.5
    slow = asyncio.create_task(get(http, b, "/report"))
    await asyncio.sleep(0.2)  # B's fetch is on its way
    status, _ = await admin(http, a, "POST", "/cache/purge", json={"url": "/report"})
    assert status == 200
    resp, _ = await slow
    assert resp.headers["X-Cache"] == "MISS"
    origin.delay = 0
    after, _ = await get(http, a, "/report")
    assert after.headers["X-Cache"] == "MISS"  # not served from what B fetched before the purge
    assert origin.hits["/report"] == 2


async def test_redis_going_away_is_invisible_to_clients(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    proxy = await start_proxy(origin.url, **shared({"url": redis_server.url}))
    await get(http, proxy, "/warm")
    redis_server.stop()
    started = time.monotonic()
    statuses = []
    for path in ("/warm", "/cold-1", "/cold-2", "/cold-1", "/cold-3"):
        resp, _ = await get(http, proxy, path)
        statuses.append((resp.status, resp.headers["X-Cache"]))
    assert statuses == [
        (200, "HIT"),
        (200, "MISS"),
        (200, "MISS"),
        (200, "HIT"),  # from memory: the proxy carries on without Redis
        (200, "MISS"),
    ]
    assert time.monotonic() - started < 3  # no request waited long on a dead Redis
    status, health = await admin(http, proxy, "GET", "/health")
    assert (status, health["status"]) == (200, "degraded")
    status, result = await admin(http, proxy, "POST", "/cache/purge", json={"url": "/warm"})
    # Applied here, and accepted for the others: queued until Redis responds.
    assert (status, result["purged"], result["queued"]) == (202, 1, True)

    redis_server.start()

    async def healthy_again() -> bool:
        await get(http, proxy, "/cold-4")  # traffic lets the breaker probe
        return (await admin(http, proxy, "GET", "/health"))[1]["status"] == "healthy"

    await eventually(healthy_again, within=15)
    _, stats = await admin(http, proxy, "GET", "/cache/stats")
    assert stats["shared"]["purges_queued"] == 0  # sent
    # It followed purges until Redis went: its memory is still good, and kept.
    assert stats["shared"]["l1_marked"] == 0
    resp, _ = await get(http, proxy, "/cold-1")
    assert resp.headers["X-Cache"] == "HIT"


async def test_a_corrupt_value_in_redis_is_a_miss(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url})
    a = await start_proxy(origin.url, **config)
    await get(http, a, "/x")
    keys = redis_server.cli("--scan", "--pattern", "*:k:*").split()
    assert len(keys) == 1
    redis_server.cli("SET", keys[0], "not an entry")
    b = await start_proxy(origin.url, **config)
    resp, body = await get(http, b, "/x")
    assert (resp.status, resp.headers["X-Cache"], body) == (200, "MISS", b"body of /x")
    _, stats = await admin(http, b, "GET", "/cache/stats")
    assert stats["shared"]["corrupt"] == 1


async def test_two_instances_share_a_cluster(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_cluster: RedisCluster,
) -> None:
    config = shared({"cluster": {"nodes": redis_cluster.urls}})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    paths = [f"/c/{i}" for i in range(12)]  # spread over the nodes' slots
    for path in paths:
        await get(http, a, path)
    for path in paths:
        resp, _ = await get(http, b, path)
        assert resp.headers["X-Cache"] == "HIT", path
    status, _ = await admin(http, a, "POST", "/cache/purge", json={"prefix": "/c/"})
    assert status == 200

    async def all_gone_from_b() -> bool:
        resp, _ = await get(http, b, paths[0])
        return resp.headers["X-Cache"] == "MISS"

    await eventually(all_gone_from_b)
    assert sum(origin.hits[p] for p in paths) == 13


@pytest.mark.parametrize(("coalesce", "fetches"), [("global", 1), ("local", 3)])
async def test_a_cold_key_is_fetched_once_across_instances(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    coalesce: str,
    fetches: int,
) -> None:
    config = shared({"url": redis_server.url}, coalesce=coalesce)
    proxies = [await start_proxy(origin.url, **config) for _ in range(3)]
    origin.delay = 0.5
    started = time.monotonic()
    results = await asyncio.gather(*(get(http, proxies[i % 3], "/cold") for i in range(30)))
    elapsed = time.monotonic() - started
    assert {(r.status, body) for r, body in results} == {(200, b"body of /cold")}
    assert origin.hits["/cold"] == fetches
    assert elapsed < 1.5  # followers are woken by the leader, not by a timeout
    if coalesce == "global":
        statuses = [r.headers["Cache-Status"] for r, _ in results]
        assert sum("collapsed;detail=shared" in s for s in statuses) >= 2


async def test_followers_fetch_for_themselves_when_nothing_can_be_shared(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    origin.respond = lambda r: web.Response(text="mine", headers={"Cache-Control": "private"})
    config = shared({"url": redis_server.url}, coalesce="global")
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    origin.delay = 0.3
    started = time.monotonic()
    results = await asyncio.gather(get(http, a, "/me"), get(http, b, "/me"))
    assert [r.status for r, _ in results] == [200, 200]
    assert origin.hits["/me"] == 2
    assert time.monotonic() - started < 2


async def test_a_waiter_for_another_variant_shares_what_it_fetched(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    def by_language(r: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}
        return web.Response(text=r.headers["Accept-Language"], headers=headers)

    origin.respond = by_language
    config = shared({"url": redis_server.url})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    origin.delay = 0.3
    # fr waits on en's fetch (one key, two variants), then fetches its own variant.
    await asyncio.gather(
        get(http, a, "/v", headers={"Accept-Language": "en"}),
        get(http, a, "/v", headers={"Accept-Language": "fr"}),
    )
    assert origin.hits["/v"] == 2
    for lang in ("en", "fr"):
        resp, body = await get(http, b, "/v", headers={"Accept-Language": lang})
        assert (resp.headers["X-Cache"], body) == ("HIT", lang.encode())
    assert origin.hits["/v"] == 2


async def test_a_sentinel_failover_is_survived(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_sentinel: RedisSentinel,
) -> None:
    sentinel = {"nodes": [redis_sentinel.sentinel_url], "service": redis_sentinel.service}
    config = shared({"sentinel": sentinel})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    await get(http, a, "/before")
    redis_sentinel.master.stop()
    deadline = time.monotonic() + 20
    while redis_sentinel.master_port() != redis_sentinel.replica.port:
        assert time.monotonic() < deadline, "sentinel did not fail over"
        await asyncio.sleep(0.1)

    # Clients never see the failover; sharing resumes on the new master.
    async def shared_again() -> bool:
        resp, _ = await get(http, a, f"/after-{time.monotonic_ns()}")
        assert resp.status == 200
        path = f"/probe-{time.monotonic_ns()}"
        await get(http, a, path)
        return (await get(http, b, path))[0].headers["X-Cache"] == "HIT"

    await eventually(shared_again, within=15)


async def test_encoded_variants_travel_with_the_entry(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    origin.respond = lambda r: web.json_response(
        {"rows": ["x" * 40] * 200}, headers={"Cache-Control": "max-age=60"}
    )
    config = shared({"url": redis_server.url})
    config["compression"] = {"algorithms": ["br", "gzip"]}
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    br = {"Accept-Encoding": "br"}
    await get(http, a, "/rows")
    first, made = await get(http, a, "/rows", headers=br)
    assert first.headers["Content-Encoding"] == "br"
    (key,) = redis_server.cli("--scan", "--pattern", "*:k:*").split()

    client = redis.asyncio.Redis.from_url(redis_server.url)

    async def variant_in_redis() -> bool:
        return "br" in entry_format.decode(await stored(client, key)).variants

    try:
        await eventually(variant_in_redis)
    finally:
        await client.aclose()
    resp, body = await get(http, b, "/rows", headers=br)
    assert (resp.headers["X-Cache"], resp.headers["Content-Encoding"]) == ("HIT", "br")
    assert body == made
    promoted = next(iter(b.pipeline.cache.store._entries.values()))
    assert "br" in promoted.variants  # came from Redis: B never compressed it


@pytest.mark.parametrize(
    ("secrets", "shared_hit"), [(("s" * 32, "s" * 32), True), (("s" * 32, "t" * 32), False)]
)
async def test_per_user_entries_are_shared_only_under_one_key_secret(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    secrets: tuple[str, str],
    shared_hit: bool,
) -> None:
    origin.respond = lambda r: web.Response(
        text=r.headers["Authorization"], headers={"Cache-Control": "private, max-age=60"}
    )
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    proxies = []
    for secret in secrets:
        config = shared({"url": redis_server.url, "key_prefix": prefix}, per_user=True)
        config["cache"]["key_secret"] = secret
        proxies.append(await start_proxy(origin.url, **config))
    alice = {"Authorization": "Bearer alice"}
    await get(http, proxies[0], "/me", headers=alice)
    resp, body = await get(http, proxies[1], "/me", headers=alice)
    assert body == b"Bearer alice"
    assert (resp.headers["X-Cache"] == "HIT") is shared_hit
    # No credential in clear in Redis, and no hash an attacker could recompute without the secret.
    keys = redis_server.cli("--scan", "--pattern", f"{prefix}*").split()
    assert keys and not any("alice" in k for k in keys)


async def test_an_entry_an_older_instance_wrote_in_version_1_is_a_shared_hit(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    # A rolling upgrade: the instances still on the older release write format version 1.
    config = shared({"url": redis_server.url})
    a = await start_proxy(origin.url, **config)
    _, body = await get(http, a, "/x")
    (key,) = redis_server.cli("--scan", "--pattern", "*:k:*").split()
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        written = entry_format.decode(await stored(client, key))
        await client.set(key, encode_v1(written), keepttl=True)
    finally:
        await client.aclose()
    b = await start_proxy(origin.url, **config)
    resp, again = await get(http, b, "/x")
    assert (resp.headers["X-Cache"], again) == ("HIT", body)
    assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
    assert origin.hits["/x"] == 1
    _, stats = await admin(http, b, "GET", "/cache/stats")
    assert stats["shared"]["corrupt"] == 0


async def test_an_entry_too_large_for_this_memory_is_served_from_redis_each_time_alike(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    origin.respond = lambda r: web.Response(
        body=b"x" * 2048, headers={"Cache-Control": "max-age=60", "X-Origin": "1"}
    )
    config = shared({"url": redis_server.url})
    a = await start_proxy(origin.url, **config)
    small = {**config, "cache": {**config["cache"], "max_memory": "2KB"}}
    b = await start_proxy(origin.url, **small)
    _, body = await get(http, a, "/quotes/AAPL")
    per_response = {"Date", "Age", "X-Request-ID"}

    def alike(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
        # Cache-Status's ttl counts down by the second, like Age: a second may turn between
        # two of these requests.
        return [
            (k, re.sub(r";ttl=\d+", "", v) if k == "Cache-Status" else v)
            for k, v in resp.headers.items()
            if k not in per_response
        ]

    seen = []
    for _ in range(3):  # none kept in b's memory (no prepared form made): each from Redis
        resp, again = await get(http, b, "/quotes/AAPL")
        assert resp.headers["Cache-Status"].startswith("cacheproxy;hit;detail=shared")
        assert 58 <= int(re.findall(r";ttl=(\d+)", resp.headers["Cache-Status"])[0]) <= 60
        assert again == body
        seen.append(alike(resp))
    assert seen[0] == seen[1] == seen[2]
    # What a's L1 hits send, less where it came from.
    resp, _ = await get(http, a, "/quotes/AAPL")
    l1 = alike(resp)
    assert [(k, v.replace(";detail=shared", "")) for k, v in seen[0]] == l1
    assert origin.hits["/quotes/AAPL"] == 1
