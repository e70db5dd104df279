"""One revocation list shared through a real Redis by two proxy instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from proxy.edge.revocation import token_member
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_revocation import ADMIN, revoke
from tests.edge.test_revocation import jwt
from tests.redis_servers import RedisCluster, RedisServer

TOKEN = "shared-Secret-Token-xyz"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def status_of(http: aiohttp.ClientSession, proxy: ProxyServer, h: Any = BEARER) -> int:
    resp, _ = await get(http, proxy, "/api", headers=h)
    return resp.status


async def instances(
    start_proxy: StartProxy, origin: Origin, redis: dict[str, Any], n: int = 2, **extra: Any
) -> list[ProxyServer]:
    return [
        await start_proxy(
            origin.url,
            admin={"token": ADMIN},
            cache={"ttl": 60},
            redis={"timeout": 1, "circuit_breaker": {"reset_after": 0.2}, **redis},
            **extra,
        )
        for _ in range(n)
    ]


async def test_a_token_revoked_on_one_instance_is_refused_by_both_until_its_ttl(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = await instances(start_proxy, origin, {"url": redis_server.url})
    assert await status_of(http, b) == 200  # and now cached on b
    status, _ = await revoke(http, a, {"token": TOKEN, "ttl": 0.8})
    assert status == 200
    assert await status_of(http, a) == 401
    await eventually(lambda: _is(http, b, 401))  # told over pub/sub

    # Neither the token nor anything it could be recovered from is in Redis.
    dump = redis_server.cli("--scan") + redis_server.cli(
        "ZRANGE", "cacheproxy:{revoked}", "0", "-1"
    )
    assert TOKEN not in dump and token_member(TOKEN) in dump

    await asyncio.sleep(0.9)
    assert await status_of(http, a) == 200 and await status_of(http, b) == 200


async def _is(http: aiohttp.ClientSession, proxy: ProxyServer, status: int) -> bool:
    return await status_of(http, proxy) == status


async def test_by_jti_and_for_instances_started_later(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    (a,) = await instances(start_proxy, origin, {"url": redis_server.url}, n=1)
    assert (await revoke(http, a, {"jti": "jti-77", "ttl": 60}))[0] == 200
    (late,) = await instances(start_proxy, origin, {"url": redis_server.url}, n=1)
    stolen = {"Authorization": f"Bearer {jwt({'jti': 'jti-77'})}"}
    await eventually(lambda: _status_is(http, late, stolen, 401))  # loaded at start-up


async def _status_is(http: aiohttp.ClientSession, proxy: ProxyServer, h: Any, status: int) -> bool:
    return await status_of(http, proxy, h) == status


async def test_a_missed_message_is_healed_by_the_periodic_resync(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    (a,) = await instances(
        start_proxy, origin, {"url": redis_server.url}, n=1, revocation={"resync_interval": 0.2}
    )
    assert await status_of(http, a) == 200
    # Another instance revoked it while this one was not listening: no message arrives.
    expiry_ms = int((time.time() + 60) * 1000)
    redis_server.cli("ZADD", "cacheproxy:{revoked}", str(expiry_ms), token_member(TOKEN))
    await eventually(lambda: _is(http, a, 401), within=2)


async def test_with_redis_down_the_mirror_still_refuses_and_revoking_says_so(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = await instances(start_proxy, origin, {"url": redis_server.url})
    assert (await revoke(http, a, {"token": TOKEN, "ttl": 60}))[0] == 200
    await eventually(lambda: _is(http, b, 401))
    redis_server.stop()
    assert await status_of(http, a) == 401 and await status_of(http, b) == 401
    status, body = await revoke(http, a, {"token": "another-token", "ttl": 60})
    assert status == 503 and body["error"] == "store_unavailable"
    # Refused here at least (denying is always safe), and shared once Redis is back.
    assert await status_of(http, a, {"Authorization": "Bearer another-token"}) == 401
    await eventually(lambda: _degraded(a))
    redis_server.start()
    await eventually(lambda: _not_degraded(a))
    assert (await revoke(http, a, {"token": "another-token", "ttl": 60}))[0] == 200
    await eventually(lambda: _status_is(http, b, {"Authorization": "Bearer another-token"}, 401))


async def _degraded(proxy: ProxyServer) -> bool:
    assert proxy.revocation_follower is not None
    return proxy.revocation_follower.degraded


async def _not_degraded(proxy: ProxyServer) -> bool:
    return not await _degraded(proxy)


async def test_cluster_shares_the_list(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_cluster: RedisCluster,
) -> None:
    redis = {"cluster": {"nodes": redis_cluster.urls}, "key_prefix": f"rv{time.time_ns()}:"}
    a, b = await instances(start_proxy, origin, redis)
    await eventually(lambda: _not_degraded(b))
    assert (await revoke(http, a, {"token": TOKEN, "ttl": 60}))[0] == 200
    await eventually(lambda: _is(http, b, 401))
    url = f"http://127.0.0.1:{b.admin_port}/tokens/revoked/count"
    async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
        assert orjson.loads(await resp.read()) == {"count": 1}


async def test_the_shared_list_is_bounded_too(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    (a,) = await instances(
        start_proxy, origin, {"url": redis_server.url}, n=1, revocation={"max_entries": 1}
    )
    assert (await revoke(http, a, {"token": TOKEN, "ttl": 60}))[0] == 200
    status, body = await revoke(http, a, {"token": "another", "ttl": 60})
    assert status == 507 and body["error"] == "list_full"
    assert redis_server.cli("ZCARD", "cacheproxy:{revoked}").strip() == "1"
