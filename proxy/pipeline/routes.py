"""Compiled route table: request method + path (+ Host, for routes that name hosts) ->
LoadedRoute (first match wins, routes naming the request's host tried first)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from proxy.cache.route import RouteCache, resolve
from proxy.config.cache import user_headers
from proxy.config.compression import CompressionSettings
from proxy.config.cors import CorsSettings
from proxy.config.loader import Route, Settings
from proxy.config.ratelimit import resolve as resolve_rate_limit
from proxy.config.upstream import UpstreamTargets
from proxy.edge.compression.rules import CompressionRules
from proxy.edge.cors import CorsRules
from proxy.edge.ratelimit.limiter import RateLimiter
from proxy.edge.route import LoadedRoute, UpstreamTarget
from proxy.http.clientaddr import TrustedProxies
from proxy.http.headers import ForwardingRules
from proxy.http.hosts import HostAllowlist, HostTable
from proxy.http.regex import prefix_matcher
from proxy.http.target import BadTarget, needs_reading, normalise_escapes, path_readings
from proxy.http.upgrade import WEBSOCKET, UpgradeRules
from proxy.shared.redis import SharedRedis
from proxy.upstream.targets import TargetGroup

_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})  # W3C Trace Context

log = logging.getLogger("cacheproxy")


_Matcher = Callable[[str], bool]
# (path matcher, methods or None for all, the route): what a request is tried against.
_Entry = tuple[_Matcher, frozenset[str] | None, LoadedRoute]


class AmbiguousPath(BadTarget):
    """Origins could read the path in ways that select different routes: refused (400)."""


def _matcher(route: Route) -> _Matcher:
    m = route.match
    # Requests are matched with their escapes normalised (`%7e` is `~`): so are the patterns.
    if m.path is not None:
        exact = normalise_escapes(m.path)
        return lambda path: path == exact
    if m.prefix is not None:
        prefix = normalise_escapes(m.prefix)
        return lambda path: path.startswith(prefix)
    assert m.regex is not None
    # Anchored at the start like Kong's regex paths; end with `$` to pin the whole path.
    return prefix_matcher(m.regex)


class _SharedRules:
    """One rules object per distinct config section, shared by the routes that use it."""

    def __init__(self, build: Callable[[Any], Any]) -> None:
        self._build = build
        self._made: dict[CorsSettings | CompressionSettings, Any] = {}

    def get(self, config: CorsSettings | CompressionSettings | None) -> Any:
        if config is None or not config.enabled:
            return None
        if config not in self._made:
            self._made[config] = self._build(config)
        return self._made[config]


def _key_secret(config: Settings, per_user_routes: bool, own: bytes | None) -> bytes:
    if config.cache is not None and config.cache.key_secret:
        return config.cache.key_secret.encode()
    if own is not None:
        return own
    if config.redis is not None and per_user_routes:
        log.warning(
            "cache.key_secret is not set: per-user entries are keyed with a secret of this "
            "process's own, so other instances cannot share them through Redis"
        )
    return os.urandom(32)


def _upgrade_rules(route: Route) -> UpgradeRules | None:
    section = route.upgrade
    if section is None or not section.enabled:
        return None
    return UpgradeRules(WEBSOCKET, section.idle_timeout, section.max_open)


class RouteTable:
    """Routes matched against the path as an origin reads it (target.path_readings), query
    excluded; the request itself is forwarded byte for byte."""

    def __init__(
        self, config: Settings, redis: SharedRedis | None = None, previous: RouteTable | None = None
    ) -> None:
        """`previous`: the table this one replaces on a reload. Its per-user key secret is
        kept, so per-user entries stay reachable, and so are the windows of every limiter
        whose settings did not change (a reload must not hand every client a fresh budget)."""
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self._trusted = config.trusted_proxies
        # Routes without a rate_limit section of their own share the top level's counters.
        self.limiters: list[RateLimiter] = []
        before = {lim.settings.name: lim for lim in previous.limiters} if previous else {}
        same_trust = previous is not None and previous._trusted == self._trusted

        def limiter(name: str, section: Any) -> RateLimiter | None:
            settings = resolve_rate_limit(name, config.rate_limit, section)
            if settings is None:
                return None
            if section is None and self.limiters and self.limiters[0].settings.name == "default":
                return self.limiters[0]
            old = before.get(settings.name)
            if old is not None and old.settings == settings and same_trust:
                built = old  # counters, windows and all
            else:
                built = RateLimiter(settings, self.trusted_proxies, redis)
                if old is not None and old.settings == settings:
                    built.memory = old.memory  # who is trusted changed, not the windows
            self.limiters.append(built)
            return built

        cors = _SharedRules(CorsRules)
        compression = _SharedRules(CompressionRules)
        credentials = user_headers([config.cache, *(r.cache for r in config.routes)])
        own_secret = previous.key_secret if previous is not None else None
        self.key_secret: bytes = _key_secret(config, bool(credentials), own_secret)
        secret = self.key_secret
        public_host = config.listen.public_host
        forwarding = ForwardingRules.build(public_host, None)

        def cache_forwarding(cache: RouteCache | None) -> ForwardingRules:
            if cache is None:
                return forwarding
            rules = ForwardingRules.build(public_host, cache.keys.rules.headers, cache.underscores)
            if config.tracing is not None:
                # The client's trace context is not in the key: the upstream of a caching route
                # hears of the proxy's own trace instead (proxy/observe/tracing/otel.py).
                rules = dataclasses.replace(
                    rules,
                    drop_untrusted=rules.drop_untrusted | _TRACE_CONTEXT,
                    drop_trusted=rules.drop_trusted | _TRACE_CONTEXT,
                )
            return rules

        # One group per distinct targets section, shared by the routes naming it; kept over
        # a reload, with its balancer's state, while the section stays the same.
        self.groups: dict[UpstreamTargets, UpstreamTarget] = {}
        kept = previous.groups if previous is not None else {}

        def upstream(section: UpstreamTargets) -> UpstreamTarget:
            if section not in self.groups:
                built = kept.get(section) or UpstreamTarget.build(TargetGroup(section))
                self.groups[section] = built
            return self.groups[section]

        top = config.upstream
        default_upstream = upstream(
            UpstreamTargets(url=top.url, targets=top.targets, balance=top.balance, host=top.host)
        )
        default_cache = resolve(config.cache, None, credentials, secret)
        self.default = LoadedRoute(
            "default",
            default_upstream,
            default_cache,
            cors.get(config.cors),
            compression.get(config.compression),
            forwarding,
            cache_forwarding(default_cache),
            limiter("default", None),
            config.listen.max_body_size,
        )
        entries: list[tuple[tuple[str, ...] | None, _Entry]] = []
        for i, route in enumerate(config.routes):
            own = upstream(route.upstream) if route.upstream else default_upstream
            cache = resolve(config.cache, route.cache, credentials, secret)
            name = route.name or f"routes[{i}]"
            compiled = LoadedRoute(
                name,
                own,
                cache,
                cors.get(route.cors or config.cors),
                compression.get(route.compression or config.compression),
                forwarding,
                cache_forwarding(cache),
                limiter(f"route:{name}", route.rate_limit),
                route.max_body_size
                if route.max_body_size is not None
                else config.listen.max_body_size,
                upgrade=_upgrade_rules(route),
            )
            methods = frozenset(route.match.methods) if route.match.methods else None
            entries.append((route.match.hosts, (_matcher(route), methods, compiled)))
        self.compiled = [self.default] + [entry[2] for _, entry in entries]
        # Without a route naming hosts, a request's Host is never read to route it.
        self.by_host: HostTable[_Entry] | None = None
        if any(hosts is not None for hosts, _ in entries):
            self.by_host = HostTable(entries)
        # Routes naming no host: all of them when by_host is None.
        self._entries: tuple[_Entry, ...] = tuple(e for hosts, e in entries if hosts is None)
        self.authorities = frozenset().union(*(p.upstream.authorities for p in self.compiled))
        # None: every Host is served (no per-request check at all).
        self.hosts = HostAllowlist(config.listen.hosts) if config.listen.hosts else None

    def upstream_names(self) -> dict[str, str]:
        """Each upstream target's origin -> the name its figures go by: the first route
        naming it ("default" for `upstream`'s), with `[i]`, its place in that route's
        targets, when it has several. Names, not URLs: health needs no token."""
        names: dict[str, str] = {}
        for compiled in self.compiled:
            targets = compiled.upstream.group.targets
            for i, target in enumerate(targets):
                name = compiled.name if len(targets) == 1 else f"{compiled.name}[{i}]"
                names.setdefault(target.origin, name)
        return names

    def route_for(self, method: str, path: str, host: str | None = None) -> LoadedRoute:
        """The route of a client's request; AmbiguousPath when origins could disagree on it.

        `host`: the request's Host value (None: a request naming none), read only when some
        route names hosts. A spelling must not take a request out of its route's limits or
        cache rules: so `/api/auth/log%69n` is `/api/auth/login`'s, and
        `/api/x/..%2Fauth/login`, which one origin reads as `/api/auth/login` and another as a
        file under `/api/x/`, is refused.
        """
        entries = self._entries if self.by_host is None else self.by_host.lookup(host)
        if "%" not in path and "/." not in path and "//" not in path and "#" not in path:
            # Nearly every request: its bytes are its only reading (target.needs_reading,
            # written out: this runs on every hit).
            for matches, methods, compiled in entries:
                if (methods is None or method in methods) and matches(path):
                    return compiled
            return self.default
        first, *others = path_readings(path)
        compiled = self._first(entries, method, first)
        for other in others:
            if self._first(entries, method, other) is not compiled:
                raise AmbiguousPath(
                    "the path selects different routes depending on how it is decoded "
                    "(dot segments, %2F or //): send it in its plain form"
                )
        return compiled

    def match(self, method: str, path: str, host: str | None = None) -> LoadedRoute:
        """The route of a path we were given (purge, invalidation, warming): its main reading.
        `host` as in route_for: None only matches routes that name no host."""
        entries = self._entries if self.by_host is None else self.by_host.lookup(host)
        return self._first(entries, method, path_readings(path)[0] if needs_reading(path) else path)

    def _first(self, entries: tuple[_Entry, ...], method: str, path: str) -> LoadedRoute:
        for matches, methods, compiled in entries:
            if (methods is None or method in methods) and matches(path):
                return compiled
        return self.default
