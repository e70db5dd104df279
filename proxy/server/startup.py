"""What the start-up log says was loaded, and whether what the proxy depends on answers.

An operator reading the first lines of the log should know, without opening the config:
which file, which routes (how each matches, where it goes, whether it caches, its limits),
the memory budget, the Redis tier, the workers; then whether the upstreams and Redis were
reachable when the proxy started (a warning each when not: the port is open anyway, and
stale entries and the breaker do their part).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.config.cache import CacheSettings
from proxy.config.loader import redact_urls

if TYPE_CHECKING:
    from proxy.config.loader import Route, Settings
    from proxy.edge.route import LoadedRoute
    from proxy.observe.health import HealthChecker

log = logging.getLogger("cacheproxy")

_MIB = 1024 * 1024


def _targets(route: LoadedRoute) -> str:
    """Where a route goes: its URL, or its targets and how they are balanced."""
    upstream = route.upstream
    group = upstream.group
    origins = ", ".join(redact_urls(t.origin) for t in group.targets)
    if group.only is not None:
        return origins + upstream.base_path
    weights = [t.weight for t in group.targets]
    weighted = f", weights {'/'.join(map(str, weights))}" if len(set(weights)) > 1 else ""
    balance = group.config.balance.replace("_", " ")
    return f"{origins} ({balance}{weighted}){upstream.base_path}"


def loaded_lines(config: Settings, routes: list[LoadedRoute], source: str | None) -> list[str]:
    """The lines that say what was loaded; `routes`: the route table's, default first."""
    kinds = {r.name or f"routes[{i}]": r for i, r in enumerate(config.routes)}
    workers = f"{config.workers} worker{'s' if config.workers != 1 else ''}"
    lines = [f"config {source or '(built in)'}: {len(routes)} routes, {workers}"]
    for route in routes[1:] + routes[:1]:  # the default last, as it matches last
        configured = kinds.get(route.name)
        match = _match(configured) if configured is not None else "everything else"
        lines.append(
            f"route {route.name}: {match} -> {_targets(route)}; {_cache(route)}; {_limits(route)}"
        )
    budget = (config.cache or CacheSettings()).max_memory / _MIB
    lines.append(f"memory cache: at most {budget:g} MiB; redis: {_redis(config)}")
    return lines


def _match(route: Route) -> str:
    m = route.match
    how = f"prefix {m.prefix}" if m.prefix else f"path {m.path}" if m.path else f"regex {m.regex}"
    if m.hosts:
        how = f"{how} on {', '.join(m.hosts)}"
    return f"{how} [{', '.join(m.methods)}]" if m.methods else how


def _cache(route: LoadedRoute) -> str:
    rc = route.cache
    if rc is None:
        return "cache off"
    ttl = rc.rules.ttl
    fresh = "origin's freshness" if ttl is None else f"ttl {ttl:g} s"
    return f"cache on ({fresh}{', shared in Redis' if rc.shared else ''})"


def _limits(route: LoadedRoute) -> str:
    limiter = route.rate_limit
    if limiter is None:
        return "no rate limit"
    rates = ", ".join(r.text for r in limiter.settings.rates)
    where = "in Redis" if limiter.shared is not None else "in memory"
    return f"rate limit {rates} per {limiter.settings.key} ({where})"


def _redis(config: Settings) -> str:
    redis = config.redis
    if redis is None:
        return "none (everything stays in this process)"
    if redis.cluster is not None:
        return f"cluster of {len(redis.cluster.nodes)} seed nodes"
    if redis.sentinel is not None:
        return f"sentinel, service {redis.sentinel.service}"
    return redact_urls(redis.url or "")


async def report_reachability(health: HealthChecker, upstream: str) -> None:
    """Probe the upstream and Redis once, as /health does, and say what answered."""
    try:
        checks = await health.probe()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a report must never take the process down
        log.warning("start-up checks failed: %r", exc)
        return
    for name, check in checks.items():
        what = f"upstream {redact_urls(upstream)}" if name == "upstream" else "redis"
        if check.get("status") == "up":
            log.info("%s: reachable (%s ms)", what, check.get("latency_ms"))
        else:
            why = check.get("detail") or check.get("error")
            log.warning("%s: NOT reachable at start (%s); serving anyway", what, why)
