"""The L2 lookup's reads on connections of our own (proxy/shared/reads.py) and the guard's
slots, against real redis-server processes, on asyncio's loop and (test_on_uvloop) on
uvloop's, the proxy's, which calls a protocol's connection_made only after
create_connection returned."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ResponseError

from proxy.cache.memory import StoreUnavailable
from proxy.config.redis import RedisSettings
from proxy.shared.breaker import CircuitBreaker, State
from proxy.shared.reads import ReadConnections
from proxy.shared.redis import RedisGuard, SharedRedis, share_budget
from tests.redis_servers import RedisCluster, RedisServer, _free_port


def reads_for(url: str) -> ReadConnections:
    reads = ReadConnections.of(aioredis.Redis.from_url(url))
    assert reads is not None
    return reads


def deadline(seconds: float = 2.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_values_and_missing_keys_in_order(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.set("a", b"\x00\r\n" + bytes(range(256)) * 100)
    await client.set("c", b"")
    reads = reads_for(redis_server.url)
    try:
        got = await reads.mget(["a", "b", "c", "é"], deadline())
        assert got == [b"\x00\r\n" + bytes(range(256)) * 100, None, b"", None]
        assert await reads.mget(["c"], deadline()) == [b""]
        assert len(reads._idle) == 1  # one call at a time: one connection, used again
    finally:
        reads.close()
        await client.aclose()


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis whose users `reader` and `blind` (not allowed MGET) have a password; the
    default user stays open, for the fixture's PING."""
    extra = ["--user", "reader", "on", ">secret", "~*", "+@all"]
    extra += ["--user", "blind", "on", ">secret", "~*", "+@all", "-mget"]
    server = RedisServer(_free_port(), tmp_path / "redis", extra).start()
    yield server
    server.stop()


async def test_a_connection_authenticates_and_selects_its_database(
    acl_server: RedisServer,
) -> None:
    url = f"redis://reader:secret@127.0.0.1:{acl_server.port}/3"
    client = aioredis.Redis.from_url(url)
    await client.set("k", b"in db 3")
    reads = reads_for(url)
    wrong = reads_for(f"redis://reader:nope@127.0.0.1:{acl_server.port}/3")
    try:
        assert await reads.mget(["k"], deadline()) == [b"in db 3"]
        with pytest.raises(ResponseError):
            await wrong.mget(["k"], deadline())
        assert wrong._idle == []
    finally:
        reads.close()
        wrong.close()
        await client.aclose()


async def test_a_silent_server_times_out_by_the_deadline_and_its_reply_is_never_read(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.set("first", b"1")
    await client.set("second", b"2")
    reads = reads_for(redis_server.url)
    assert redis_server.proc is not None
    try:
        await reads.mget(["first"], deadline())
        redis_server.proc.send_signal(19)  # SIGSTOP: connected, but silent
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await reads.mget(["first"], deadline(0.2))
        assert 0.15 < time.monotonic() - started < 1.0
        cancelled = asyncio.create_task(reads.mget(["first"], deadline(10)))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        redis_server.proc.send_signal(18)  # SIGCONT: both replies come now, to closed ones
        assert reads._idle == []
        assert await reads.mget(["second"], deadline()) == [b"2"]
    finally:
        redis_server.proc.send_signal(18)
        reads.close()
        await client.aclose()


async def test_each_read_times_out_by_its_own_deadline(redis_server: RedisServer) -> None:
    """One timer serves every read in flight: set for the nearest deadline, then the next."""
    reads = reads_for(redis_server.url)
    assert redis_server.proc is not None
    try:
        await asyncio.gather(reads.mget(["warm"], deadline()), reads.mget(["up"], deadline()))
        redis_server.proc.send_signal(19)  # SIGSTOP
        started = time.monotonic()
        ended: dict[float, float] = {}

        async def read(seconds: float) -> None:
            with pytest.raises(TimeoutError):
                await reads.mget(["k"], deadline(seconds))
            ended[seconds] = time.monotonic() - started

        # Later than the one armed, then earlier, then between.
        await asyncio.gather(read(0.4), read(0.8), read(0.2), read(0.6))
        for seconds, took in ended.items():
            assert seconds - 0.01 < took < seconds + 0.15, (seconds, took)
        assert reads._flying == {}
    finally:
        redis_server.proc.send_signal(18)
        reads.close()


async def test_a_restarted_server_costs_no_call_once_its_close_was_seen(
    redis_server: RedisServer,
) -> None:
    reads = reads_for(redis_server.url)
    try:
        assert await reads.mget(["k"], deadline()) == [None]
        redis_server.stop()
        with pytest.raises(OSError):
            await reads.mget(["k"], deadline())
        redis_server.start()
        await asyncio.sleep(0.05)
        assert await reads.mget(["k"], deadline()) == [None]
    finally:
        reads.close()


async def test_an_error_reply_is_raised_and_the_connection_kept(acl_server: RedisServer) -> None:
    reads = reads_for(f"redis://blind:secret@127.0.0.1:{acl_server.port}/0")
    try:
        for _ in range(2):
            with pytest.raises(ResponseError, match="NOPERM"):
                await reads.mget(["k"], deadline())
            assert len(reads._idle) == 1  # an answer, in step: the connection is fine
    finally:
        reads.close()


def test_only_one_plain_tcp_node_reads_on_our_own_connections(
    redis_server: RedisServer, redis_cluster: RedisCluster
) -> None:
    assert ReadConnections.of(aioredis.Redis.from_url(redis_server.url)) is not None
    assert ReadConnections.of(aioredis.Redis.from_url("rediss://127.0.0.1:1/0")) is None
    assert ReadConnections.of(aioredis.Redis.from_url("unix:///tmp/redis.sock")) is None
    shared = SharedRedis(RedisSettings(cluster={"nodes": redis_cluster.urls}))
    assert shared.reads is None


async def test_shared_mget_goes_through_the_guard(redis_server: RedisServer) -> None:
    shared = SharedRedis(RedisSettings(url=redis_server.url, timeout=0.2))
    try:
        await shared.client.set("k", b"v")
        assert await shared.mget("get", ["k", "none"]) == [b"v", None]
        redis_server.stop()
        for _ in range(5):
            with pytest.raises(StoreUnavailable):
                await shared.mget("get", ["k"])
        assert shared.guard.errors["get"] == 5
        assert shared.guard.breaker.state is State.OPEN
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await shared.mget("get", ["k"])
    finally:
        await shared.close()


async def test_a_requests_budget_bounds_its_reads(redis_server: RedisServer) -> None:
    shared = SharedRedis(RedisSettings(url=redis_server.url, timeout=0.3))
    assert redis_server.proc is not None

    async def request() -> float:
        share_budget(0.3)
        started = time.monotonic()
        for _ in range(3):
            with contextlib.suppress(StoreUnavailable):
                await shared.mget("get", ["k"])
        return time.monotonic() - started

    try:
        await shared.mget("get", ["k"])
        redis_server.proc.send_signal(19)
        spent = await asyncio.create_task(request())
        assert 0.25 < spent < 0.6  # three calls, one budget
        assert shared.guard.skipped["budget"] >= 1
    finally:
        redis_server.proc.send_signal(18)
        await shared.close()


async def test_the_slots_bound_calls_in_flight_and_hand_over_in_turn(
    redis_server: RedisServer,
) -> None:
    guard = RedisGuard(1.0, CircuitBreaker(), slots=2)
    in_flight = 0
    most = 0
    order: list[int] = []

    async def call(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        order.append(i)
        return i

    done = await asyncio.gather(*(guard.run("op", functools.partial(call, i)) for i in range(6)))
    assert done == list(range(6)) and most == 2
    assert order[2:] == [2, 3, 4, 5]  # waiters served first come, first served
    assert guard._slots.free == 2

    # A waiter given up (here: its time ran out) leaves its turn to the next one.
    blocker = asyncio.Event()
    held = [asyncio.create_task(guard.run("op", blocker.wait)) for _ in range(2)]
    await asyncio.sleep(0)
    short = RedisGuard(1.0, CircuitBreaker(), slots=2)
    short._slots = guard._slots

    async def impatient() -> None:
        share_budget(0.05)
        await short.run_until("op", lambda deadline: asyncio.sleep(0))

    with pytest.raises(StoreUnavailable, match="no free connection"):
        await asyncio.create_task(impatient())
    assert short.skipped["pool"] == 1 and not short.errors
    waiting = asyncio.create_task(guard.run("op", lambda: call(9)))
    await asyncio.sleep(0)
    blocker.set()
    await asyncio.gather(*held)
    assert await waiting == 9
    assert guard._slots.free == 2


@pytest.mark.parametrize(
    "scenario",
    [
        test_values_and_missing_keys_in_order,
        test_a_silent_server_times_out_by_the_deadline_and_its_reply_is_never_read,
        test_each_read_times_out_by_its_own_deadline,
        test_a_restarted_server_costs_no_call_once_its_close_was_seen,
        test_shared_mget_goes_through_the_guard,
    ],
)
def test_on_uvloop(
    scenario: Callable[[RedisServer], Coroutine[None, None, None]], redis_server: RedisServer
) -> None:
    uvloop.run(scenario(redis_server))
