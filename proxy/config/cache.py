"""The `cache:` config section, top level and per route (proxy/cache/route.py resolves them)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.config.durations import Duration
from proxy.config.rates import parse_rate
from proxy.config.section import Model, Section

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(value: object) -> int:
    """`256MB`, `8 MiB`, `512k`, `1048576` -> bytes (binary units, as nginx reads them)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 256MB")
    if isinstance(value, int | float):
        return int(value)
    m = _SIZE.fullmatch(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 512KB, 256MB, 1GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)[:1].lower()])


class QueryKey(Model):
    ignore: tuple[str, ...] = ()  # glob patterns of parameter names: utm_*, _
    sort: bool = True


class KeySettings(Model):
    query: QueryKey = QueryKey()
    headers: tuple[str, ...] = ()


class PerUser(Model):
    header: str = "Authorization"


class PopularSettings(Model):
    top: int = Field(100, ge=0, le=100_000)  # keys kept fresh ahead of expiry; 0: none
    half_life: Duration = Field(60.0, gt=0)  # seconds for an access to count half as much


class WarmingSettings(Model):
    """Top-level `cache.warming`."""

    # Paths (with their query) fetched at start-up and kept fresh, as plain GETs.
    urls: tuple[str, ...] = ()
    # Refresh when this share of an entry's freshness lifetime is used.
    refresh_ahead: float = Field(0.8, gt=0, lt=1)
    popular: PopularSettings = PopularSettings()
    # Warming sends at most this many requests upstream (all processes together).
    max_rate: str = "10/second"

    @field_validator("urls")
    @classmethod
    def _paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [u for u in value if not u.startswith("/") or "#" in u or any(c.isspace() for c in u)]
        if bad:
            raise ValueError(f"must be paths starting with '/' (a query is fine): {bad}")
        return tuple(dict.fromkeys(value))

    @field_validator("max_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        return parse_rate(value).text

    @property
    def rate(self) -> float:
        """Requests per second."""
        rate = parse_rate(self.max_rate)
        return rate.count / rate.window


class CacheSettings(Section):
    """Every key may appear at the top level (defaults) and in a route (overrides)."""

    max_memory: int = 256 * 2**20
    max_entry_size: int = 8 * 2**20
    ttl: Duration | None = Field(None, ge=0, allow_inf_nan=False)
    force_ttl: bool = False
    stale_while_revalidate: Duration = Field(0, ge=0, allow_inf_nan=False)
    stale_if_error: Duration = Field(0, ge=0, allow_inf_nan=False)
    per_user: PerUser | None = None
    store_set_cookie: bool = False
    # Request headers that identify a user besides Authorization and Cookie.
    credential_headers: tuple[str, ...] = ()
    # What a request with credentials may take from a shared (not per-user) route's
    # entries: explicit (only those whose response allowed it), lookup (any), pass (none).
    on_credentials: Literal["explicit", "lookup", "pass"] = "explicit"
    # HMAC key for credentials in cache keys; the same on every instance sharing Redis.
    key_secret: str | None = Field(None, min_length=16)
    key: KeySettings = KeySettings()
    # Forward request headers whose names hold an underscore on fetches by the cache. Off
    # (nginx's `underscores_in_headers off`): origins such as WSGI read `X_Forwarded_Host`
    # as `X-Forwarded-Host`, an unkeyed header that shapes a stored response. Keyed ones pass.
    underscores_in_headers: bool = False
    tags_header: str | None = None
    # Where entries live: memory (each process's L1), then redis (the shared L2, which
    # needs the top-level `redis` section).
    tiers: tuple[Literal["memory", "redis"], ...] = ("memory",)
    # local: one upstream fetch per key per process; global: per key across every
    # instance sharing the Redis tier (a short lock in Redis, waiters woken by pub/sub).
    coalesce: Literal["local", "global"] = "local"
    # Start-up fetches and refresh-ahead (top level only): proxy/pipeline/url_warmer.py,
    # proxy/pipeline/cache_stage/refresh.py.
    warming: WarmingSettings | None = None

    @field_validator("tiers")
    @classmethod
    def _memory_first(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value not in (("memory",), ("memory", "redis")):
            raise ValueError("must be [memory] or [memory, redis]: memory is always the L1")
        return value

    @field_validator("max_memory", "max_entry_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        size = parse_size(value)
        if size <= 0:
            raise ValueError("must be larger than 0")
        return size

    @field_validator("per_user", mode="before")
    @classmethod
    def _per_user(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="after")
    def _force_needs_ttl(self) -> CacheSettings:
        if self.force_ttl and self.ttl is None:
            raise ValueError("force_ttl: true needs a ttl")
        return self


def user_headers(sections: Iterable[CacheSettings | None]) -> tuple[str, ...]:
    """Every header some route keys per user by: it identifies users on every route."""
    return tuple(s.per_user.header for s in sections if s is not None and s.per_user)
