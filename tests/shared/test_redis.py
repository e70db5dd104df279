"""The shared Redis client and its guard, against real redis-server processes."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.cache.memory import StoreUnavailable
from proxy.config.redis import RedisSettings
from proxy.shared.breaker import CircuitBreaker, State
from proxy.shared.redis import (
    RESERVED_CONNECTIONS,
    Client,
    RedisGuard,
    _pool_exhausted,
    connect,
)
from tests.redis_servers import RedisCluster, RedisSentinel, RedisServer


async def round_trip(client: Client) -> None:
    key = f"t:{uuid.uuid4().hex}"
    await client.set(key, b"value", px=10_000)
    assert await client.get(key) == b"value"


async def test_single_node(redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url))
    try:
        await round_trip(client)
    finally:
        await client.aclose()


async def test_cluster(redis_cluster: RedisCluster) -> None:
    client = connect(RedisSettings(cluster={"nodes": redis_cluster.urls}))
    try:
        for _ in range(20):  # keys land on every node
            await round_trip(client)
    finally:
        await client.aclose()


async def test_sentinel_follows_a_failover(redis_sentinel: RedisSentinel) -> None:
    settings = RedisSettings(
        sentinel={"nodes": [redis_sentinel.sentinel_url], "service": "mymaster"}, timeout=1
    )
    client = connect(settings)
    try:
        await round_trip(client)
        redis_sentinel.master.stop()
        deadline = time.monotonic() + 20
        while True:
            try:
                await round_trip(client)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert redis_sentinel.master_port() == redis_sentinel.replica.port
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "needs exactly one of url, cluster, sentinel (got none)"),
        ({"url": "redis://a", "cluster": {"nodes": ["redis://b"]}}, "got url, cluster"),
        ({"url": "http://a"}, "must be a redis:// or rediss:// URL"),
        ({"sentinel": {"nodes": ["redis://s:26379"]}}, "service"),
    ],
)
def test_settings_are_checked(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        RedisSettings.model_validate(settings)


async def test_guard_bounds_waits_and_opens_the_breaker(redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url, timeout=0.2))
    guard = RedisGuard(0.2, CircuitBreaker(failures=2, window=10, reset_after=0.5))
    try:
        assert await guard.run("ping", client.ping)
        redis_server.stop()
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await guard.run("get", lambda: client.get("k"))
            assert time.monotonic() - started < 1.0
        assert guard.breaker.state is State.OPEN and not guard.healthy
        assert guard.errors["get"] == 2
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await guard.run("get", lambda: client.get("k"))
        assert guard.errors["get"] == 2  # refused without trying
        redis_server.start()
        await asyncio.sleep(0.6)
        assert await guard.run("ping", client.ping)
        assert guard.healthy
    finally:
        await client.aclose()


async def test_guard_times_out_a_server_that_does_not_respond(redis_server: RedisServer) -> None:
    client = connect(RedisSettings(url=redis_server.url, timeout=0.2))
    guard = RedisGuard(0.2, CircuitBreaker())
    try:
        await guard.run("ping", client.ping)
        assert redis_server.proc is not None
        redis_server.proc.send_signal(19)  # SIGSTOP: connected, but silent
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await guard.run("get", lambda: client.get("k"))
        assert time.monotonic() - started < 1.0
    finally:
        if redis_server.proc is not None:
            redis_server.proc.send_signal(18)  # SIGCONT
        await client.aclose()


async def test_a_pool_out_of_connections_is_told_apart(redis_server: RedisServer) -> None:
    """The pool of `connect` raises at once when it runs out (the guard's slots do the
    waiting), told apart from Redis failing by `_pool_exhausted`: the contract, on the
    installed version."""
    client = connect(RedisSettings(url=redis_server.url, max_connections=1))
    assert isinstance(client, aioredis.Redis)
    pool = client.connection_pool
    held = [await pool.get_connection() for _ in range(1 + RESERVED_CONNECTIONS)]
    try:
        with pytest.raises(RedisConnectionError) as caught:
            await pool.get_connection()
        assert _pool_exhausted(caught.value)
        assert not _pool_exhausted(RedisConnectionError("Connection refused"))
    finally:
        for connection in held:
            await pool.release(connection)
        await client.aclose()
