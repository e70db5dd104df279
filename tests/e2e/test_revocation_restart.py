"""Revocations that survive restarts: of a worker, of Redis, of an instance started while
Redis is away (with `before_sync`)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from proxy.edge.revocation import token_member
from tests.conftest import Origin, ProxyProcess, StartProxy, get
from tests.e2e.test_revocation import ADMIN, revoke
from tests.e2e.test_revocation_shared import eventually
from tests.e2e.test_workers import admin, fresh_connections, workers_ready
from tests.redis_servers import RedisServer

STOLEN = "stolen-token-42"
BEARER = {"Authorization": f"Bearer {STOLEN}"}

# --- workers: a restarted worker is handed the list --------------------------------------------


async def worker_count(socket_path: str) -> int:
    connector = aiohttp.UnixConnector(socket_path)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get("http://w/tokens/revoked/count", headers=headers) as resp,
    ):
        return int((await resp.json())["count"])


async def statuses(port: int, count: int) -> set[int]:
    seen = set()
    async with fresh_connections() as http:  # a new connection each: every worker serves some
        for _ in range(count):
            async with http.get(f"http://127.0.0.1:{port}/api", headers=BEARER) as resp:
                seen.add(resp.status)
    return seen


async def replaced(proxy: ProxyProcess, index: int, pid: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        _, body, _ = await admin(proxy, "GET", "/workers", ADMIN)
        now = body["workers"][index]
        if now["ready"] and now["pid"] != pid:
            return now
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_restarted_worker_refuses_every_token_revoked_before(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, admin={"token": ADMIN})
    first, _ = await workers_ready(proxy, ADMIN)
    body = {"token": STOLEN, "ttl": 600}
    status, result, _ = await admin(proxy, "POST", "/tokens/revoke", ADMIN, json=body)
    assert status == 200, result
    assert await statuses(proxy.port, 10) == {401}

    os.kill(first["pid"], signal.SIGKILL)
    again = await replaced(proxy, 0, first["pid"])
    assert await worker_count(again["admin_socket"]) == 1  # handed over before it served
    assert await statuses(proxy.port, 40) == {401}


async def test_a_revocation_made_while_a_worker_starts_reaches_it(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, admin={"token": ADMIN})
    first, _ = await workers_ready(proxy, ADMIN)
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:  # started again, not serving yet
        _, body, _ = await admin(proxy, "GET", "/workers", ADMIN)
        now = body["workers"][0]
        if now["alive"] and not now["ready"] and now["pid"] != first["pid"]:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.01)
    body = {"token": STOLEN, "ttl": 600}
    status, result, _ = await admin(proxy, "POST", "/tokens/revoke", ADMIN, json=body)
    # The starting worker could not respond for itself (so: incomplete), but it was told.
    assert status in (200, 503), result
    again = await replaced(proxy, 0, first["pid"])
    assert await worker_count(again["admin_socket"]) == 1
    assert await statuses(proxy.port, 40) == {401}


async def test_only_the_admin_token_may_revoke_through_the_supervisor(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, admin={"token": ADMIN})
    first, _ = await workers_ready(proxy, ADMIN)
    status, _, _ = await admin(proxy, "POST", "/tokens/revoke", json={"token": STOLEN, "ttl": 60})
    assert status == 401
    os.kill(first["pid"], signal.SIGKILL)
    again = await replaced(proxy, 0, first["pid"])
    assert await worker_count(again["admin_socket"]) == 0  # nothing was kept for it either


# --- Redis: before the first load, and a set lost or missed ------------------------------------


def redis_section(server: RedisServer) -> dict[str, Any]:
    return {"url": server.url, "timeout": 0.5, "circuit_breaker": {"reset_after": 0.2}}


async def health(http: aiohttp.ClientSession, proxy: Any) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/health") as resp:
        return await resp.json()


@pytest.mark.parametrize("before_sync", ["serve", "refuse"])
async def test_an_instance_started_while_redis_is_down(
    before_sync: str,
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    proxy = await start_proxy(
        origin.url,
        admin={"token": ADMIN},
        redis=redis_section(redis_server),
        revocation={"before_sync": before_sync, "resync_interval": 0.2},
    )
    checks = (await health(http, proxy))["checks"]
    assert checks["revocations"]["status"] == "down" and not checks["revocations"]["synced"]
    resp, body = await get(http, proxy, "/api", headers=BEARER)
    if before_sync == "refuse":
        assert resp.status == 503 and b"revocation_list_unavailable" in body
        assert resp.headers["Retry-After"] == "5"
    else:
        assert resp.status == 200  # served, and /health says the list is not loaded
    assert (await get(http, proxy, "/api"))[0].status == 200  # no token: nothing to check

    redis_server.start()
    expiry_ms = int((time.time() + 60) * 1000)
    redis_server.cli("ZADD", "cacheproxy:{revoked}", str(expiry_ms), token_member(STOLEN))

    async def refused() -> bool:
        return (await get(http, proxy, "/api", headers=BEARER))[0].status == 401

    await eventually(refused, within=10)
    checks = (await health(http, proxy))["checks"]
    assert checks["revocations"] == {"status": "up", "synced": True, "following": True}
    assert (await get(http, proxy, "/api", headers={"Authorization": "Bearer ok"}))[0].status == 200


async def test_a_revocation_made_while_redis_was_down_is_shared_when_it_is_back(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    a, b = [
        await start_proxy(
            origin.url,
            admin={"token": ADMIN},
            redis=redis_section(redis_server),
            revocation={"resync_interval": 0.2},
        )
        for _ in range(2)
    ]
    redis_server.stop()
    status, body = await revoke(http, a, {"token": STOLEN, "ttl": 60})
    assert status == 503 and body["error"] == "store_unavailable"
    assert (await get(http, b, "/api", headers=BEARER))[0].status == 200  # b never heard

    redis_server.start()  # empty: and nobody revokes it again

    async def b_refuses() -> bool:
        return (await get(http, b, "/api", headers=BEARER))[0].status == 401

    await eventually(b_refuses, within=10)
    assert token_member(STOLEN) in redis_server.cli("ZRANGE", "cacheproxy:{revoked}", "0", "-1")


async def test_a_set_redis_lost_is_written_back_for_instances_started_later(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    settings = {
        "admin": {"token": ADMIN},
        "redis": redis_section(redis_server),
        "revocation": {"resync_interval": 0.2},
    }
    a = await start_proxy(origin.url, **settings)
    assert (await revoke(http, a, {"token": STOLEN, "ttl": 60}))[0] == 200
    redis_server.cli("FLUSHALL")  # as a Redis restarted without persistence would be

    async def written_back() -> bool:
        listed = redis_server.cli("ZRANGE", "cacheproxy:{revoked}", "0", "-1")
        return token_member(STOLEN) in listed

    await eventually(written_back, within=10)
    late = await start_proxy(origin.url, **settings)

    async def late_refuses() -> bool:
        return (await get(http, late, "/api", headers=BEARER))[0].status == 401

    await eventually(late_refuses, within=10)
