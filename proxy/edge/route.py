"""A compiled route (`LoadedRoute`): its settings resolved once at start-up, what every
stage of a request reads.

pipeline/routes.py matches a request to one of these; the stages below the pipeline (the
response side, the edge rules) read it without knowing how it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from proxy.cache.route import RouteCache
from proxy.edge.compression.rules import CompressionRules
from proxy.edge.cors import CorsRules
from proxy.edge.ratelimit.limiter import RateLimiter
from proxy.http.headers import ForwardingRules
from proxy.http.upgrade import UpgradeRules
from proxy.upstream.http1 import OriginKey, origin_key


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where a route forwards to, split once at start-up."""

    origin: str  # scheme://host:port, no path
    host_header: str  # what the Host header says (port omitted when default)
    base_path: str  # prepended to the client's path; "" for none
    authority: tuple[str, int]  # (lower-case host, port): what absolute-form targets must name
    key: OriginKey  # (scheme, host, port): the pool's connections to it
    # What cache keys start with (proxy/cache/keys.py): host[:port] in lower case, base path.
    key_origin: str

    @classmethod
    def parse(cls, url: str) -> UpstreamTarget:
        u = URL(url)
        assert u.host is not None and u.port is not None  # validated by config
        host = u.host.lower()
        host_header = u.raw_authority.rsplit("@", 1)[-1]
        origin = f"{u.scheme}://{host_header}"
        base_path = u.raw_path.rstrip("/")
        return cls(
            origin=origin,
            host_header=host_header,
            base_path=base_path,
            authority=(host, u.port),
            key=origin_key(origin),
            key_origin=host_header.lower() + base_path,
        )


_PLAIN_FORWARDING = ForwardingRules.build(None, None)


@dataclass(frozen=True, slots=True)
class LoadedRoute:
    """Everything the pipeline needs to know about one route, resolved at start-up."""

    name: str
    upstream: UpstreamTarget
    cache: RouteCache | None = None  # None: this route does not cache
    cors: CorsRules | None = None
    compression: CompressionRules | None = None
    # Which client headers go upstream: `forwarding` for requests whose response is never
    # stored, `cache_forwarding` for fetches made by the cache (keyed by this route's key).
    forwarding: ForwardingRules = _PLAIN_FORWARDING
    cache_forwarding: ForwardingRules = _PLAIN_FORWARDING
    rate_limit: RateLimiter | None = None  # None: not limited
    max_body_size: int | None = None  # bytes a request body may have; None: no bound
    upgrade: UpgradeRules | None = None  # None: Upgrade fields ignored (plain HTTP)
