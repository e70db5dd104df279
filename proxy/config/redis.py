"""The `redis:` section: one Redis, a Cluster or a Sentinel-managed master, shared by every
instance (proxy/shared/redis.py connects to it)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from yarl import URL

from proxy.config.durations import Duration
from proxy.config.section import Model


def _redis_url(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("redis", "rediss") or not url.host:
        raise ValueError("must be a redis:// or rediss:// URL with a host")
    return value


class ClusterSettings(Model):
    nodes: tuple[str, ...] = Field(
        min_length=1,
        description="redis:// or rediss:// URLs of some of the Cluster's nodes; the rest are "
        "discovered from them.",
        examples=[["redis://redis-1:6379", "redis://redis-2:6379"]],
    )

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class SentinelSettings(Model):
    nodes: tuple[str, ...] = Field(
        min_length=1,
        description="redis:// or rediss:// URLs of the Sentinels; a Sentinel's own password "
        "goes in its URL.",
        examples=[["redis://sentinel-1:26379", "redis://sentinel-2:26379"]],
    )
    service: str = Field(
        description="The name the Sentinels know the master by.", examples=["mymaster"]
    )
    db: int = Field(0, ge=0, description="Database number on the master.")
    password: str | None = Field(
        None, description="The master's password; none: the master needs none."
    )

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class BreakerSettings(Model):
    failures: int = Field(
        5, ge=1, description="Errors within `window` seconds that stop calls to Redis."
    )
    window: Duration = Field(
        10.0,
        gt=0,
        description="Seconds within which `failures` errors open the breaker.",
        examples=[10, "30s"],
    )
    reset_after: Duration = Field(
        5.0,
        gt=0,
        description="Seconds no call is made to Redis once open; then one probe tries it.",
        examples=[5, "10s"],
    )


class RedisSettings(Model):
    """Exactly one of `url`, `cluster`, `sentinel`."""

    url: str | None = Field(
        None,
        description="One Redis node: a redis:// or rediss:// (TLS) URL, with a password and "
        "a database number if needed. Exactly one of url, cluster, sentinel.",
        examples=["redis://127.0.0.1:6379/0", "rediss://:password@redis.internal:6380/1"],
    )
    cluster: ClusterSettings | None = Field(
        None, description="A Redis Cluster. Exactly one of url, cluster, sentinel."
    )
    sentinel: SentinelSettings | None = Field(
        None,
        description="A master managed by Redis Sentinel. Exactly one of url, cluster, sentinel.",
    )
    key_prefix: str = Field(
        "cacheproxy:", description="Prefix of every key the proxy writes to Redis."
    )
    timeout: Duration = Field(
        0.25,
        gt=0,
        le=30,
        description="Seconds a client request waits on Redis in all (every call it makes, "
        "connecting and waiting for a connection included); background work: per call. The "
        "request path never waits on Redis longer.",
        examples=[0.25, "250ms"],
    )
    max_connections: int = Field(
        50,
        ge=1,
        description="Redis calls in flight per process (Cluster: per node); more wait for a "
        "free one within their timeout.",
    )
    circuit_breaker: BreakerSettings = Field(
        BreakerSettings(),
        description="After `failures` errors within `window` seconds, stop calling Redis for "
        "`reset_after` seconds, then probe.",
    )
    purge_log_length: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Purges kept in Redis (a stream) for instances that lost touch to catch "
        "up from, and purges queued here while Redis is unreachable, sent when it responds.",
    )

    _url = field_validator("url")(lambda v: None if v is None else _redis_url(v))

    @model_validator(mode="after")
    def _one_kind(self) -> RedisSettings:
        given = [k for k in ("url", "cluster", "sentinel") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of url, cluster, sentinel (got {', '.join(given) or 'none'})"
            )
        return self
