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
    nodes: tuple[str, ...] = Field(min_length=1)

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class SentinelSettings(Model):
    nodes: tuple[str, ...] = Field(min_length=1)
    service: str
    db: int = Field(0, ge=0)
    password: str | None = None  # the master's; sentinels' own come from their URLs

    _urls = field_validator("nodes")(lambda v: tuple(_redis_url(u) for u in v))


class BreakerSettings(Model):
    failures: int = Field(5, ge=1)
    window: Duration = Field(10.0, gt=0)
    reset_after: Duration = Field(5.0, gt=0)


class RedisSettings(Model):
    """Exactly one of `url`, `cluster`, `sentinel`."""

    url: str | None = None
    cluster: ClusterSettings | None = None
    sentinel: SentinelSettings | None = None
    key_prefix: str = "cacheproxy:"
    # Per operation: the request path never waits on Redis longer than this.
    timeout: Duration = Field(0.25, gt=0, le=30)
    # Redis calls in flight per process; more wait for a free one within their budget.
    max_connections: int = Field(50, ge=1)
    circuit_breaker: BreakerSettings = BreakerSettings()
    # Purges kept in Redis (a stream) for instances that lost touch to catch up from, and
    # purges kept here while Redis is unreachable, to send when it responds again.
    purge_log_length: int = Field(10_000, ge=10, le=1_000_000)

    _url = field_validator("url")(lambda v: None if v is None else _redis_url(v))

    @model_validator(mode="after")
    def _one_kind(self) -> RedisSettings:
        given = [k for k in ("url", "cluster", "sentinel") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of url, cluster, sentinel (got {', '.join(given) or 'none'})"
            )
        return self
