"""The Lua script against real Redis: the same decisions as the pure core, step by step."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.config.redis import RedisSettings
from proxy.edge.ratelimit.redis_backend import RedisWindows
from proxy.edge.ratelimit.window import hit, new_state
from proxy.shared.redis import SharedRedis
from tests.redis_servers import RedisCluster, RedisServer


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[SharedRedis]:
    redis = SharedRedis(RedisSettings(url=redis_server.url, timeout=2))
    yield redis
    await redis.close()


@pytest.mark.parametrize(
    ("windows", "limits"), [((60,), (5,)), ((1, 60), (3, 10)), ((10, 3600, 86400), (4, 7, 9))]
)
async def test_the_script_decides_exactly_as_the_pure_core(
    shared: SharedRedis, windows: tuple[int, ...], limits: tuple[int, ...]
) -> None:
    backend = RedisWindows(shared, "diff", windows, limits)
    rng = random.Random(f"{windows}{limits}")
    for run in range(8):
        client = f"client-{run}"
        state = new_state(len(windows))
        now = 1_700_000_000.0 + rng.random() * 86400
        for _ in range(60):
            now += rng.choice([0.0, 0.001, rng.random(), rng.random() * windows[0] * 2])
            expected = hit(state, windows, limits, now)
            got = await backend.hit(client, now=now)
            assert got[:3] == expected[:3], (run, now)
            assert abs(got[3] - expected[3]) <= 2e-6, (run, now)


async def test_redis_clock_one_key_per_client_expiring(
    shared: SharedRedis, redis_server: RedisServer
) -> None:
    backend = RedisWindows(shared, "route:login", (60, 3600), (3, 20))
    outcomes = [await backend.hit("203.0.113.9") for _ in range(4)]
    assert [o[0] for o in outcomes] == [True, True, True, False]
    assert [o[2] for o in outcomes] == [2, 1, 0, 0]
    assert 0 < outcomes[3][3] <= 120
    key = "cacheproxy:rl:{route:login:203.0.113.9}"
    assert redis_server.cli("KEYS", "*").split() == [key]
    assert 7000 <= int(redis_server.cli("TTL", key)) <= 7200  # two of the longest windows


async def test_cluster_runs_each_check_in_one_slot(redis_cluster: RedisCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    # A generous timeout: this is about slots, and on a loaded machine a cluster's first calls
    # (slot map, a connection per node) can outlast the default and fail the check.
    settings = RedisSettings(cluster={"nodes": redis_cluster.urls}, key_prefix=prefix, timeout=5)
    redis = SharedRedis(settings)
    try:
        backend = RedisWindows(redis, "default", (1, 60), (100, 2))
        for i in range(30):  # clients spread over every node
            results = [await backend.hit(f"10.1.0.{i}") for _ in range(3)]
            assert [r[0] for r in results] == [True, True, False]
    finally:
        await redis.close()
