"""A compiled route (`LoadedRoute`): its settings resolved once at start-up, what every
stage of a request reads.

pipeline/routes.py matches a request to one of these; the stages below the pipeline (the
response side, the edge rules) read it without knowing how it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.cache.route import RouteCache
from proxy.config.upstream import UpstreamTargets
from proxy.edge.compression.rules import CompressionRules
from proxy.edge.cors import CorsRules
from proxy.edge.ratelimit.limiter import RateLimiter
from proxy.http.headers import ForwardingRules
from proxy.http.upgrade import UpgradeRules
from proxy.upstream.targets import TargetGroup


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where a route forwards to, split once at start-up: its targets and what they share."""

    origin: str  # the first target's scheme://host:port (for logs)
    host_header: str  # the Host header (the first target's) and the host entries are keyed by
    base_path: str  # prepended to the client's path; "" for none
    authorities: frozenset[tuple[str, int]]  # what absolute-form targets may name
    group: TargetGroup  # the targets and their balancing
    # What cache keys start with (proxy/cache/keys.py): host[:port] in lower case, base path.
    key_origin: str

    @classmethod
    def build(cls, group: TargetGroup) -> UpstreamTarget:
        return cls(
            origin=group.targets[0].origin,
            host_header=group.host_header,
            base_path=group.base_path,
            authorities=frozenset(t.authority for t in group.targets),
            group=group,
            key_origin=group.host_header.lower() + group.base_path,
        )

    @classmethod
    def parse(cls, url: str) -> UpstreamTarget:
        """One target's: `url` as `upstream.url` would give it."""
        return cls.build(TargetGroup(UpstreamTargets(url=url)))


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
