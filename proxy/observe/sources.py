"""What the figures are read from, handed in by proxy/server/app.py as values and small protocols.

observe/ sits below the route table (pipeline/), the response side (respond/) and the listener
(server/): it never imports them. It gets plain values instead (route names, TTLs), and reads
live counters through the protocols here, which those parts satisfy as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.cache.memory import MemoryStore
    from proxy.http.clientaddr import TrustedProxies
    from proxy.observe.logs import AccessLog
    from proxy.observe.tunnels import TunnelMeters
    from proxy.shared.redis import SharedRedis
    from proxy.shared.tier import SharedTier
    from proxy.upstream.client import UpstreamClient


class LimiterSettingsView(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def on_store_error(self) -> str: ...


class SharedLimiter(Protocol):
    """A rate limiter keeping its windows in Redis (proxy/edge/ratelimit/limiter.py)."""

    @property
    def settings(self) -> LimiterSettingsView: ...

    @property
    def store_errors(self) -> int: ...  # checks Redis could not decide

    @property
    def degraded(self) -> bool: ...  # its last check could not reach Redis


class ConnectionCounts(Protocol):
    """The proxy port's counters (proxy/server/listener.py, ListenerStats)."""

    @property
    def open_connections(self) -> int: ...

    @property
    def refused_connections(self) -> int: ...

    @property
    def refused_per_client(self) -> int: ...

    @property
    def head_timeouts(self) -> int: ...

    @property
    def body_timeouts(self) -> int: ...

    @property
    def tls_handshake_failures(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What the figures need of the route table, as values: a reload hands in new ones."""

    meters: tuple[tuple[str, bool], ...]  # (route name, caches its GET/HEAD) per route
    ttls: Mapping[str, float | None]  # `cache.ttl` by route name, caching routes only
    limiters: tuple[SharedLimiter, ...]  # the rate limiters keeping their windows in Redis
    trusted_proxies: TrustedProxies  # whose forwarding lines the access log believes
    rate_limits: int = 0  # rate limiters configured, wherever their windows are (0: none)


@dataclass(slots=True)
class Sources:
    """The parts that own the figures the documents and /metrics read at each request."""

    routes: RouteFacts  # replaced after a reload
    store: MemoryStore
    upstream: UpstreamClient
    redis: SharedRedis | None = None
    shared: SharedTier | None = None
    listener: ConnectionCounts | None = None
    access: AccessLog | None = None
    tunnels: TunnelMeters | None = None  # switched connections (WebSocket), per route
