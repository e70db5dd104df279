"""The `cache:` config section, top level and per route (proxy/cache/route.py resolves them)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from proxy.config.cors import HeaderName
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
    ignore: tuple[str, ...] = Field(
        (),
        description="Query parameters left out of the cache key, by name or glob pattern.",
        examples=[["utm_*", "_"]],
    )
    sort: bool = Field(
        True,
        description="Sort the query's parameters in the key, so that their order does not "
        "matter; false: `?a=1&b=2` and `?b=2&a=1` are two entries.",
    )


class KeySettings(Model):
    query: QueryKey = Field(QueryKey(), description="How the query string enters the cache key.")
    headers: tuple[str, ...] = Field(
        (),
        description="Request headers whose values are part of the cache key. Listing `Host` "
        "also sends it upstream as X-Forwarded-Host; listing an override header "
        "(X-Original-URL, ...) lets it through on cached fetches.",
        examples=[["Accept-Language"]],
    )


class PerUser(Model):
    header: str = Field(
        "Authorization",
        description="The request header whose value (hashed) keys entries per user.",
        examples=["X-Api-Key"],
    )


class PopularSettings(Model):
    top: int = Field(
        100,
        ge=0,
        le=100_000,
        description="The most accessed keys, by decaying access counts, refreshed ahead of "
        "expiry on a hit; 0: none.",
    )
    half_life: Duration = Field(
        60.0,
        gt=0,
        description="Seconds after which an access counts half as much.",
        examples=[60, "10m"],
    )


class WarmingSettings(Model):
    """Top-level `cache.warming`."""

    urls: tuple[str, ...] = Field(
        (),
        description="Paths (with their query) fetched as plain GETs from start-up and kept "
        "fresh; each must be on a route that caches.",
        examples=[["/api/market/summary", "/api/quotes/?page=1"]],
    )
    refresh_ahead: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="Share of an entry's freshness lifetime after which it is refreshed "
        "ahead of expiry (0.8: at 80%).",
    )
    popular: PopularSettings = Field(
        PopularSettings(),
        description="Keys refreshed ahead of expiry on a hit: the `top` by access counts "
        "halving every `half_life` seconds.",
    )
    max_rate: str = Field(
        "10/second",
        description="Warming sends at most this many requests upstream, all processes "
        "together: `N/second`, `N/minute`, `N/hour`, `N/day` or `N/<seconds>s`.",
        examples=["10/second", "100/minute", "5/10s"],
    )

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

    max_memory: int = Field(
        256 * 2**20,
        description="Bytes all stored entries take together in each process's memory, least "
        "recently used evicted first; a number of bytes or a size with a binary unit "
        "(top level only).",
        examples=["256MB", "1GiB", 268435456],
    )
    max_entry_size: int = Field(
        8 * 2**20,
        description="Larger responses stream through unstored; bytes or a size with a unit.",
        examples=["8MB", "512KB"],
    )
    ttl: Duration | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Seconds of freshness when the origin gives none; none: a plain RFC 9111 "
        "shared cache, storing what the origin allows.",
        examples=[30, "5m"],
    )
    force_ttl: bool = Field(
        False,
        description="true: `ttl` wins over the origin's max-age/Expires (never over "
        "no-store/private); needs a ttl.",
    )
    stale_while_revalidate: Duration = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a stale entry is served while one refresh runs in the background.",
        examples=[30, "1m"],
    )
    stale_if_error: Duration = Field(
        0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a stale entry is served when the upstream fails or answers 5xx.",
        examples=[300, "1h"],
    )
    per_user: PerUser | None = Field(
        None,
        description="One entry per user: `true` keys by a hash of Authorization, "
        "`{header: X-Api-Key}` by that header's; none or false: entries are shared.",
        examples=[True, {"header": "X-Api-Key"}],
    )
    store_set_cookie: bool = Field(
        False,
        description="Store responses that carry Set-Cookie (for origins whose cookies are "
        "not personal). The cookie goes to the client whose request filled the entry and is "
        "not stored: other clients' hits get the entry without it. On a per-user route, a "
        "user's own entry keeps it for that user.",
    )
    credential_headers: tuple[str, ...] = Field(
        (),
        description="Request headers that identify a user besides Authorization, Cookie and "
        "per-user headers.",
        examples=[["X-Api-Key", "X-Session"]],
    )
    on_credentials: Literal["explicit", "lookup", "pass"] = Field(
        "explicit",
        description="What a request with credentials may take from a shared (not per-user) "
        "route's entries: `explicit` (only those whose response allowed it), `lookup` (any), "
        "`pass` (none: bypass the cache).",
    )
    key_secret: str | None = Field(
        None,
        min_length=16,
        description="HMAC key (16 characters or more) for credentials in cache keys and for "
        "authenticating entries shared through Redis (top level only); set it, the same on "
        "every instance, to share per-user entries. None: a random key per process.",
        examples=["${CACHE_KEY_SECRET}"],
    )
    key: KeySettings = Field(
        KeySettings(), description="What a cache key is made of besides method and path."
    )
    # Off as nginx's `underscores_in_headers off`: origins such as WSGI read
    # `X_Forwarded_Host` as `X-Forwarded-Host`, an unkeyed header that shapes a stored response.
    underscores_in_headers: bool = Field(
        False,
        description="true: fetches by the cache forward request headers whose names hold an "
        "underscore (an origin may read `X_Foo` as `X-Foo`); keyed ones pass anyway.",
    )
    # proxy/cache/tags.py splits each; RouteCache.hidden keeps them from clients.
    tags_header: tuple[HeaderName, ...] = Field(
        ("Surrogate-Key",),
        description="Response header, or list of them, naming an entry's tags, to purge "
        'entries by tag (POST /cache/purge {"tag": ...}): `Surrogate-Key` (Fastly) is split '
        "on spaces, `xkey` (Varnish) on spaces and commas, `Cache-Tag` (Cloudflare) and "
        "`Edge-Cache-Tag` (Akamai) on commas, any other name on spaces; none or []: no tags. "
        "Clients do not get these headers unless `keep_surrogate_headers`.",
        examples=["Surrogate-Key", ["Surrogate-Key", "Cache-Tag"], "xkey"],
    )
    keep_surrogate_headers: bool = Field(
        False,
        description="true: clients get the `tags_header` fields and Surrogate-Control as the "
        "origin sent them (for a CDN in front that reads them too); false: they are meant "
        "for this cache and removed from every response of a route that caches.",
    )
    tiers: tuple[Literal["memory", "redis"], ...] = Field(
        ("memory",),
        description="Where entries live: `[memory]` (each process's own), or `[memory, "
        "redis]`: also the Redis tier shared by every process and instance, which needs the "
        "top-level `redis` section.",
        examples=[["memory", "redis"]],
    )
    coalesce: Literal["local", "global"] = Field(
        "local",
        description="`local`: one upstream fetch per cold key per process; `global`: per key "
        "across every instance sharing the Redis tier (needs tiers: [memory, redis]).",
    )
    # proxy/pipeline/cache_stage/partial.py.
    range_requests: Literal["parts", "whole"] = Field(
        "parts",
        description="`parts`: a range request that misses asks the origin for that one range "
        "and stores the 206 as a part (in each process's memory only); parts of one strong "
        "ETag combine, and later ranges are served from them. `whole`: it fetches the whole "
        "response without the client's Range, stores it and cuts the range from it.",
    )
    # proxy/pipeline/url_warmer.py, proxy/pipeline/cache_stage/refresh.py.
    warming: WarmingSettings | None = Field(
        None,
        description="Start-up fetches and refresh-ahead (top level only); none: no warming.",
    )

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

    @field_validator("tags_header", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        # One name, as the key was first written, or a list; none: no tags.
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _force_needs_ttl(self) -> CacheSettings:
        if self.force_ttl and self.ttl is None:
            raise ValueError("force_ttl: true needs a ttl")
        return self


def user_headers(sections: Iterable[CacheSettings | None]) -> tuple[str, ...]:
    """Every header some route keys per user by: it identifies users on every route."""
    return tuple(s.per_user.header for s in sections if s is not None and s.per_user)
