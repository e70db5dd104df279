"""The shared Redis: the client, and the guard every call goes through.

One Redis (or a Cluster, or a Sentinel-managed master) is shared by every proxy process for
the L2 cache, the purge log, rate-limit windows and revocations. A client request must never
wait on it for longer than `redis.timeout` in all, and the proxy must not keep hammering one
that is down: every operation goes through `RedisGuard.run`, which waits for one of
`max_connections` slots, enforces the time left, counts errors per operation and trips a
circuit breaker. A failure surfaces as `StoreUnavailable`, which callers turn into "carry on
without Redis".

One budget per request: the request path calls `SharedRedis.request_budget()` before its
first Redis call, and every later call in that task draws on what is left. Other tasks
(background refreshes, variant uploads, the followers, health probes) are never charged:
each of their calls gets the whole timeout.

The L2 lookup's reads (`SharedRedis.mget`) go on connections of our own to a single node
(proxy/shared/reads.py): redis-py's command layer cost more than the rest of an L2 hit. They
run under the same guard (`RedisGuard.run_until`: the call keeps to the deadline itself).

The three kinds of client wait alike for a connection: the guard's slots bound the calls
in flight below the pool's size, so no pool ever runs out (redis-py's pools raise
MaxConnectionsError instead of waiting). Running out of slots within the budget is the
proxy's own limit, never counted against Redis or its breaker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, RedisError
from yarl import URL

from proxy.cache.memory import StoreUnavailable
from proxy.config.redis import RedisSettings
from proxy.shared.breaker import CLOSED, CircuitBreaker
from proxy.shared.reads import ReadConnections

log = logging.getLogger("cacheproxy.redis")

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster
# Connections each pool holds beyond the guard's slots: the purge and revocation
# subscriptions, and a Cluster's slot-map refreshes.
RESERVED_CONNECTIONS = 4


def _address(url: str, default_port: int) -> tuple[str, int]:
    parsed = URL(url)
    assert parsed.host is not None  # proxy/config/redis.py admits only URLs with a host
    return parsed.host, parsed.port or default_port


def connect(settings: RedisSettings) -> Client:
    """A client with short timeouts and no retry loop of its own: the guard decides."""
    pool_size = settings.max_connections + RESERVED_CONNECTIONS
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.cluster is not None:
        first = URL(settings.cluster.nodes[0])
        nodes = [ClusterNode(*_address(u, 6379)) for u in settings.cluster.nodes]
        return RedisCluster(
            startup_nodes=nodes,
            username=first.user,
            password=first.password,
            ssl=first.scheme == "rediss",
            max_connections=pool_size,
            **common,
        )
    if settings.sentinel is not None:
        s = settings.sentinel
        first = URL(s.nodes[0])
        sentinel = Sentinel(
            [_address(u, 26379) for u in s.nodes],
            sentinel_kwargs={
                "socket_timeout": settings.timeout,
                "username": first.user,
                "password": first.password,
            },
            **common,
        )
        return sentinel.master_for(
            s.service, db=s.db, password=s.password, max_connections=pool_size
        )
    assert settings.url is not None
    # Not redis-py's BlockingConnectionPool: the guard's slots already do the waiting (see
    # the module docstring), and its condition, lock and timer for every command were a
    # fourteenth of what an L2 hit costs (bench.callgrind l2).
    pool = aioredis.ConnectionPool.from_url(
        settings.url,
        max_connections=pool_size,
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
    )
    return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


class Budget:
    """The Redis time one request has left; charged only for calls made by `owner`."""

    __slots__ = ("left", "owner")

    def __init__(self, owner: asyncio.Task[Any] | None, seconds: float) -> None:
        self.owner = owner
        self.left = seconds


_BUDGET: ContextVar[Budget | None] = ContextVar("cacheproxy_redis_budget", default=None)


def share_budget(seconds: float) -> None:
    """From now on the current task's Redis calls share `seconds` of waiting, unless they
    already share a budget. A task started from here inherits the context but is not the
    owner, so its calls are not charged to this request."""
    task = asyncio.current_task()
    budget = _BUDGET.get()
    if budget is None or budget.owner is not task:
        _BUDGET.set(Budget(task, seconds))


def _pool_exhausted(exc: BaseException) -> bool:
    return isinstance(exc, MaxConnectionsError)


class _Slots:
    """How many calls may be in flight: asyncio.Semaphore's bound and order, without its
    coroutines and wake-up bookkeeping when a slot is free (about 9k instructions a call,
    bench.callgrind). Take one with `if slots.free > 0: slots.free -= 1` else `await
    slots.wait()`; give it back with `give`, which hands it to the first waiter."""

    __slots__ = ("_waiting", "free")

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot, but gone meanwhile: the next one's
            raise

    def give(self) -> None:
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class RedisGuard:
    """Runs Redis operations under the budget, the slots and the breaker; counts what failed."""

    def __init__(self, timeout: float, breaker: CircuitBreaker, slots: int = 1_000_000) -> None:
        self.timeout = timeout
        self.breaker = breaker
        self._slots = _Slots(slots)
        self.errors: Counter[str] = Counter()  # by operation name: Redis failed
        # Calls given up for the proxy's own limits, by reason: "pool" (no free slot in
        # time) and "budget" (the request had no Redis time left). Not Redis's fault.
        self.skipped: Counter[str] = Counter()
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.breaker.state is CLOSED

    async def run(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call` under the guard, within the time left (`run_until`, with a timer of its
        own around `call`)."""

        async def within(deadline: float) -> T:
            async with asyncio.timeout_at(deadline):
                return await call()

        return await self.run_until(op, within)

    async def run_until(self, op: str, call: Callable[[float], Awaitable[T]]) -> T:
        """`call` under the budget, the slots and the breaker, given the deadline (loop
        time) it must keep to itself: no timer of the guard's around it (asyncio.timeout
        costs about 29k instructions a call; the L2 lookup's reads keep their own)."""
        budget, left = self._admit(op)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + left
        sent = started  # when a slot was ours and the call went out (0: not yet)
        slots = self._slots
        try:
            if slots.free > 0:
                slots.free -= 1
            else:
                sent = 0.0
                async with asyncio.timeout_at(deadline):
                    await slots.wait()
                sent = loop.time()
            try:
                result = await call(deadline)
            finally:
                slots.give()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(op, exc, sent, loop.time()) from exc
        except BaseException:
            self.breaker.abandon()  # no verdict; in half-open state: let the next call probe
            raise
        finally:
            if budget is not None:
                budget.left -= loop.time() - started
        if self.breaker.state is not CLOSED:
            self._recovered()
        return result

    def _admit(self, op: str) -> tuple[Budget | None, float]:
        """The budget the call is charged to (None: not this task's) and its time left, or
        StoreUnavailable: no time left, or the breaker is open."""
        budget = _BUDGET.get()
        if budget is not None and budget.owner is not asyncio.current_task():
            budget = None  # another task's: not ours to spend
        left = self.timeout if budget is None else budget.left
        if left <= 0:
            self.skipped["budget"] += 1
            raise StoreUnavailable(f"redis {op}: this request's Redis time is spent")
        breaker = self.breaker
        if breaker.state is not CLOSED and not breaker.allow():
            raise StoreUnavailable(f"redis {op}: circuit open ({self.last_error})")
        return budget, left

    def _unavailable(
        self, op: str, exc: BaseException, sent: float, now: float
    ) -> StoreUnavailable:
        """What a call that raised `exc` (`sent` when it went out, 0: never) tells its
        caller; counted against Redis only when Redis is to blame."""
        if not sent or _pool_exhausted(exc):
            self.breaker.abandon()
            self.skipped["pool"] += 1
            return StoreUnavailable(f"redis {op}: no free connection in time")
        if isinstance(exc, TimeoutError) and now - sent < self.timeout / 2:
            # Cut short by what earlier calls of the request had spent: no verdict.
            self.breaker.abandon()
            self.skipped["budget"] += 1
            return StoreUnavailable(f"redis {op}: this request's Redis time ran out")
        self._failed(op, exc)
        return StoreUnavailable(f"redis {op}: {self.last_error}")

    def _recovered(self) -> None:
        self.breaker.success()
        log.info("redis is responding again")

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors[op] += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.breaker.failure()
        state = self.breaker.state.value
        log.warning("redis %s failed (%s); breaker %s", op, self.last_error, state)


class SharedRedis:
    """The one Redis connection of a process, shared by the cache, rate limits, revocation."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.client = connect(settings)
        b = settings.circuit_breaker
        self.guard = RedisGuard(
            settings.timeout,
            CircuitBreaker(b.failures, b.window, b.reset_after),
            settings.max_connections,
        )
        self.run = self.guard.run
        # The L2 lookup's reads: on connections of our own where they can be (reads.py).
        self.reads = ReadConnections.of(self.client)

    def mget(self, op: str, keys: Sequence[str]) -> Awaitable[list[bytes | None]]:
        """The values of `keys` (None where none), under the guard as `run`."""
        reads = self.reads
        if reads is None:
            mget = cast(Callable[[Sequence[str]], Awaitable[list[bytes | None]]], self.client.mget)
            return self.guard.run(op, lambda: mget(keys))
        return self.guard.run_until(op, functools.partial(reads.mget, keys))

    def request_budget(self) -> None:
        """The calling request's Redis calls, this one and those after it, share one
        `timeout` (see the module docstring)."""
        share_budget(self.settings.timeout)

    async def start(self, wait: float = 5.0) -> None:
        """Connect (and, for a Cluster, learn its slots) before the first request needs it,
        so no client pays for that inside `timeout`. Redis down is not fatal: the proxy
        starts degraded and the guard keeps probing."""
        try:
            async with asyncio.timeout(max(wait, self.settings.timeout)):
                if isinstance(self.client, RedisCluster):
                    await self.client.initialize()
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis did not respond at start-up (%r): starting degraded", exc)

    async def close(self) -> None:
        if self.reads is not None:
            self.reads.close()
        await self.client.aclose()
