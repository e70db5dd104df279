"""The shared Redis: its `redis:` config section, the client, and the guard every call goes through.

One Redis (or a Cluster, or a Sentinel-managed master) is shared by every proxy process for
the L2 cache, purge messages and, later, rate-limit windows. The request path must never
wait on it for longer than `redis.timeout`, and must not keep hammering one that is down:
every operation goes through `RedisGuard.run`, which enforces the timeout, counts errors
per operation and trips a circuit breaker. A failure surfaces as `StoreUnavailable`,
which callers turn into "carry on without Redis".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from yarl import URL

from proxy.breaker import CircuitBreaker, State
from proxy.cache.stores import StoreUnavailable

log = logging.getLogger("cacheproxy.redis")

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _redis_url(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("redis", "rediss") or not url.host:
        raise ValueError("must be a redis:// or rediss:// URL with a host")
    return value


class ClusterSettings(_Model):
    nodes: tuple[str, ...] = Field(min_length=1)

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class SentinelSettings(_Model):
    nodes: tuple[str, ...] = Field(min_length=1)
    service: str
    db: int = Field(0, ge=0)
    password: str | None = None  # the master's; sentinels' own come from their URLs

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class BreakerSettings(_Model):
    failures: int = Field(5, ge=1)
    window: float = Field(10.0, gt=0)
    reset_after: float = Field(5.0, gt=0)


class RedisSettings(_Model):
    """Exactly one of `url`, `cluster`, `sentinel`."""

    url: str | None = None
    cluster: ClusterSettings | None = None
    sentinel: SentinelSettings | None = None
    key_prefix: str = "cacheproxy:"
    # Per operation: the request path never waits on Redis longer than this.
    timeout: float = Field(0.25, gt=0, le=30)
    max_connections: int = Field(50, ge=1)
    circuit_breaker: BreakerSettings = BreakerSettings()

    _url = field_validator("url")(lambda v: None if v is None else _redis_url(v))

    @model_validator(mode="after")
    def _one_kind(self) -> RedisSettings:
        given = [k for k in ("url", "cluster", "sentinel") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of url, cluster, sentinel (got {', '.join(given) or 'none'})"
            )
        return self


def connect(settings: RedisSettings) -> Client:
    """A client with short timeouts and no retry loop of its own: the guard decides."""
    common: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.cluster is not None:
        first = URL(settings.cluster.nodes[0])
        nodes = [ClusterNode(URL(u).host, URL(u).port or 6379) for u in settings.cluster.nodes]
        return RedisCluster(
            startup_nodes=nodes,
            username=first.user,
            password=first.password,
            ssl=first.scheme == "rediss",
            max_connections=settings.max_connections,
            **common,
        )
    if settings.sentinel is not None:
        s = settings.sentinel
        first = URL(s.nodes[0])
        sentinel = Sentinel(
            [(URL(u).host, URL(u).port or 26379) for u in s.nodes],
            sentinel_kwargs={
                "socket_timeout": settings.timeout,
                "username": first.user,
                "password": first.password,
            },
            **common,
        )
        return sentinel.master_for(
            s.service, db=s.db, password=s.password, max_connections=settings.max_connections
        )
    assert settings.url is not None
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.timeout,  # waiting for a pooled connection counts too
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
    )
    return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


class RedisGuard:
    """Runs Redis operations under the timeout and the breaker; counts what failed."""

    def __init__(self, timeout: float, breaker: CircuitBreaker) -> None:
        self.timeout = timeout
        self.breaker = breaker
        self.errors: Counter[str] = Counter()  # by operation name
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.breaker.state is State.CLOSED

    async def run(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise StoreUnavailable(f"redis {op}: circuit open ({self.last_error})")
        was_healthy = self.healthy
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors[op] += 1
            self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.breaker.failure()
            state = self.breaker.state.value
            log.warning("redis %s failed (%s); breaker %s", op, self.last_error, state)
            raise StoreUnavailable(f"redis {op}: {self.last_error}") from exc
        self.breaker.success()
        if not was_healthy:
            log.info("redis is answering again")
        return result


class SharedRedis:
    """The one Redis connection of a process, shared by the cache, rate limits, revocation."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.client = connect(settings)
        b = settings.circuit_breaker
        self.guard = RedisGuard(
            settings.timeout, CircuitBreaker(b.failures, b.window, b.reset_after)
        )
        self.run = self.guard.run

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
            log.warning("redis did not answer at start-up (%r): starting degraded", exc)

    async def close(self) -> None:
        await self.client.aclose()
