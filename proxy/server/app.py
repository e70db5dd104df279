"""Builds the two listeners (proxy and admin) and owns their lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from aiohttp import web

from proxy.adapters.aiohttp_internals import set_server_field
from proxy.admin.app import build_admin_app
from proxy.admin.view import ServerView
from proxy.cache.memory import MemoryStore
from proxy.config.cache import CacheSettings
from proxy.config.loader import ConfigError, Settings
from proxy.config.tls import server_context
from proxy.edge.revocation import RevocationList
from proxy.http.clientaddr import ClientKeys, TrustedProxies
from proxy.http.hosts import authority_host
from proxy.http.target import BadTarget, parse_target
from proxy.observe.catalogue import Catalogue
from proxy.observe.documents import Documents
from proxy.observe.health import HealthChecker
from proxy.observe.metrics import Meters
from proxy.observe.observer import Observer
from proxy.observe.sources import RouteFacts, Sources
from proxy.observe.ticker import Ticker
from proxy.observe.tracing import load as load_tracing
from proxy.observe.tunnels import TunnelMeters
from proxy.pipeline.handler import Pipeline
from proxy.pipeline.routes import AmbiguousPath, RouteTable
from proxy.pipeline.url_warmer import Warmer
from proxy.pipeline.warming import Warming
from proxy.respond.prepared import PreparedResponse
from proxy.server.listener import (
    FastPath,
    Handler,
    Listener,
    ListenerStats,
    default_max_connections,
    open_files_limit,
)
from proxy.server.reload import ConfigSource, applied, effective, refusal, restart_required
from proxy.server.shutdown import Shutdown
from proxy.server.startup import loaded_lines, report_reachability
from proxy.shared.redis import RESERVED_CONNECTIONS, SharedRedis
from proxy.shared.revocation_follower import RevocationFollower
from proxy.shared.tier import SharedTier
from proxy.tasks import cancel
from proxy.upstream.client import UpstreamClient

log = logging.getLogger("cacheproxy")


class ProxyServer:
    """The running proxy: start() binds both ports, stop() drains and closes.

    Whoever runs it (proxy/cli.py, a worker in proxy/server/worker.py) routes SIGTERM and SIGINT
    to `shutdown` and calls stop() once `shutdown.until_close()` returns; until then the
    admin port says, from the first signal on, that this process is not ready."""

    def __init__(
        self,
        config: Settings,
        *,
        reuse_port: bool = False,
        admin_path: str | None = None,
        source: ConfigSource | None = None,
        shutdown: Shutdown | None = None,
        report_start: bool = True,
    ) -> None:
        """`reuse_port` and `admin_path` are for a worker of several (proxy/server/worker.py): it
        shares the proxy port with its siblings and serves admin requests on a unix socket,
        for the supervisor that owns the admin port. `source`: what reload() re-reads.
        `shutdown`: one whose signal handlers are already in place. `report_start`: log what
        was loaded and whether the upstream and Redis answer (one worker of several does)."""
        self.config = config
        # Process-wide (aiohttp's responses, the admin port's too); a restart changes it.
        set_server_field(config.listen.server_header or None)
        self.report_start = report_start
        self._start_checks: asyncio.Task[None] | None = None
        self.source = source
        self.reuse_port = reuse_port
        self.admin_path = admin_path
        self.redis = SharedRedis(config.redis) if config.redis is not None else None
        routes = RouteTable(config, self.redis)
        # The observer first: the upstream client and the pipeline report to it.
        facts = route_facts(routes)
        meters = Meters(facts.meters)
        self.observer = Observer(meters, config.log, facts.trusted_proxies, PreparedResponse)
        # Tracing, when configured: its upstream client traces the exchanges of traced requests.
        self.tracing = load_tracing(config.tracing) if config.tracing is not None else None
        upstream_client = UpstreamClient if self.tracing is None else self.tracing.upstream_client
        self.upstream = upstream_client(
            config.upstream, routes.upstream_names(), observe=self.observer.upstream_result
        )
        for upstream in routes.groups.values():
            self.upstream.bind(upstream.group)
        budget = (config.cache or CacheSettings()).max_memory
        memory = MemoryStore(budget)
        self.shared: SharedTier | None = None
        if self.redis is not None and any(p.cache and p.cache.shared for p in routes.compiled):
            secret = config.cache.key_secret if config.cache is not None else None
            self.shared = SharedTier(self.redis, memory, secret)
        warming_settings = config.cache.warming if config.cache is not None else None
        warming = None
        if warming_settings is not None:
            # max_rate is the upstream's whole budget: each of N workers takes its share.
            popular = warming_settings.popular
            warming = Warming(
                warming_settings.refresh_ahead,
                popular.top,
                popular.half_life,
                warming_settings.rate / config.workers,
            )
        # With Redis the list is a mirror of the shared set, whole once first loaded from it.
        self.revocations = RevocationList(config.revocation, synced=self.redis is None)
        self.tunnels = TunnelMeters()
        self.revocation_follower = (
            RevocationFollower(self.redis, config.revocation, self.revocations)
            if self.redis is not None
            else None
        )
        self.pipeline = Pipeline(
            routes,
            self.upstream,
            memory,
            self.shared,
            self.revocations,
            warming,
            ratelimit_checked=meters.ratelimit_check,  # no observer method in between
            request_ids=config.request_id,
            purgers=TrustedProxies(config.purge.allow),
            admin_token=config.admin.token,
            tunnels=self.tunnels,
        )
        if self.tracing is not None:
            self.pipeline.cache.use_tracing(self.tracing)
        self.warmer: Warmer | None = None
        if warming_settings is not None and warming_settings.urls:
            self.warmer = Warmer(warming_settings.urls, self.pipeline.cache, routes, self.upstream)
        self.listener_stats = ListenerStats()
        self.sources = Sources(
            facts,
            memory,
            self.upstream,
            self.redis,
            self.shared,
            self.listener_stats,
            self.observer.access,
            self.tunnels,
        )
        self.metrics = Catalogue(meters, self.sources)
        self.ticker = Ticker(
            meters, memory, config.alerts, config.log.stats_interval, self.metrics.write
        )
        self.documents = Documents(meters, self.ticker, self.sources)
        up = config.upstream
        self.health = HealthChecker(
            [t.url for t in up.target_list],
            up.health_path,
            up.health_cache,
            self.redis,
            self.shared,
            up.dns,
            up.tls,
        )
        self.shutdown = shutdown or Shutdown(config.shutdown_delay)
        if self.revocation_follower is not None:  # without Redis the list is always whole
            self.health.add("revocations", self.revocation_follower.health)
        self._runners: list[web.BaseRunner] = []
        self._listener: Listener | None = None

    @property
    def ready(self) -> bool:
        """Fit for new traffic: listening (the admin port, which serves this, is bound last),
        config loaded, not draining. Never the upstream's health: a proxy that can respond
        from its cache must stay in the load balancer while the upstream is down."""
        return bool(self._runners) and not self.shutdown.draining

    def reload(self) -> dict[str, object]:
        """Re-read the source (SIGHUP, POST /config/reload); a bad file changes nothing."""
        if self.source is None:
            return refusal(["this process has no config file to re-read (built-in config)"])
        try:
            loaded = self.source.load()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload refused, old config kept: %s: %s", exc.source, problem)
            return refusal(exc.problems)
        return self.apply(loaded)

    def apply(self, loaded: Settings) -> dict[str, object]:
        """Swap in what can change live: routes and their rules, for new requests.

        The memory tier, upstream pool, listeners and Redis stay: cached entries, pooled and
        client connections live on. Synchronous, so no request sees half of it."""
        restart = restart_required(self.config, loaded)
        config = effective(self.config, loaded)
        routes = RouteTable(config, self.redis, previous=self.pipeline.routes)
        wants_shared = any(p.cache and p.cache.shared for p in routes.compiled)
        if self.shared is None and self.redis is not None and wants_shared:
            restart.append("cache.tiers")  # the Redis tier was not started with this process
        self.pipeline.use_routes(routes)
        self.pipeline.use_request_ids(config.request_id)
        self.pipeline.use_purgers(TrustedProxies(config.purge.allow), config.admin.token)
        self._reload_tls(config)
        if self._listener is not None:  # for new connections
            self._listener.fast = self._fast_path()
        facts = route_facts(routes)
        self.observer.use_routes(facts)
        self.sources.routes = facts
        self.config = config
        log.info("config reloaded: %d route(s)", len(config.routes))
        if restart:
            log.warning("config reload: restart required to apply %s", ", ".join(restart))
        return applied(restart)

    def _fast_path(self) -> FastPath | None:
        """What answers hot hits before aiohttp makes a request of them (the listener's fast
        path), or None: no route caches (every request would be looked at for nothing), or
        every request is traced as it is handled."""
        if self.tracing is not None or not any(p.cache for p in self.pipeline.routes.compiled):
            return None
        return self.pipeline

    def _reload_tls(self, config: Settings) -> None:
        """New handshakes get the certificate the files now hold (renewed in place, or other
        files); open connections keep theirs. One that does not load keeps the old one."""
        tls, listener = config.listen.tls, self._listener
        if tls is None or listener is None or listener.tls_context is None:
            return
        try:
            listener.tls_context = server_context(tls)
        except ValueError as exc:
            log.error("listen.tls: %s; new connections keep the certificate loaded before", exc)
        else:
            log.info("listen.tls: certificate loaded from %s", tls.cert_file)

    async def start(self) -> None:
        await self.upstream.start()
        if self.redis is not None:
            await self.redis.start()
        self.observer.start()
        self.ticker.start()
        await self.health.start()
        if self.shared is not None:
            await self.shared.start()
        if self.revocation_follower is not None:
            await self.revocation_follower.start()
        if self.warmer is not None:
            self.warmer.start()
        grace = self.config.shutdown_grace
        listen = self.config.listen
        open_files = open_files_limit()
        # Descriptors the process needs besides client connections: upstream and Redis pools.
        # Each upstream origin has its own pool bound.
        outbound = self.config.upstream.pool.max_connections * len(self.upstream.stats())
        # A tunnel holds an upstream descriptor outside the pool, as many as upgrade.max_open.
        outbound += sum(r.upgrade.max_open for r in self.pipeline.routes.compiled if r.upgrade)
        if self.config.redis is not None:
            # The pool's size: the guard's slots plus the subscriptions' (redis_conn.py).
            outbound += self.config.redis.max_connections + RESERVED_CONNECTIONS
        max_connections = listen.max_connections or default_max_connections(open_files, outbound)
        log.info("proxy port: at most %d connections (open files %d)", max_connections, open_files)
        # The proxy port routes with its own table, so aiohttp's router is dead weight:
        # the low-level server costs measurably less CPU per request (shared/design.md).
        top_limit = self.config.rate_limit
        handle: Handler = self.pipeline.handle
        if self.tracing is not None:  # otherwise not one test on the request path
            handle = self.tracing.wrap(handle, self._route_caches)
        listener = Listener(
            handle,
            listen.timeouts,
            max_connections,
            self.listener_stats,
            self.observer.observe,
            listen.max_connections_per_client,
            ClientKeys(top_limit.ipv6_prefix if top_limit is not None else 64),
            lambda peer: self.pipeline.routes.trusted_proxies.trusts(peer),
            server_context(listen.tls) if listen.tls is not None else None,
            server_field=listen.server_header is not False,
            fast=self._fast_path(),
        )
        self._listener = listener
        # The runner calls listener.shutdown(grace) once the port stops accepting.
        proxy_runner = web.ServerRunner(listener, shutdown_timeout=grace)
        admin_runner = web.AppRunner(
            build_admin_app(self.admin_view()), access_log=None, shutdown_timeout=min(grace, 5.0)
        )
        try:
            await proxy_runner.setup()
            self._runners.append(proxy_runner)
            await web.TCPSite(
                proxy_runner,
                listen.host,
                listen.port,
                reuse_address=True,
                reuse_port=self.reuse_port,
            ).start()
            await admin_runner.setup()
            self._runners.append(admin_runner)
            admin = self.config.admin
            site = (
                web.UnixSite(admin_runner, self.admin_path)
                if self.admin_path is not None
                else web.TCPSite(admin_runner, admin.host, admin.port, reuse_address=True)
            )
            await site.start()
        except BaseException:
            await self.stop()
            raise
        if self.report_start:
            path = self.source.path if self.source is not None else None
            for line in loaded_lines(self.config, self.pipeline.routes.compiled, path):
                log.info("%s", line)
            self._start_checks = asyncio.create_task(
                report_reachability(self.health, self.config.upstream.urls)
            )

    def admin_view(self) -> ServerView:
        """All the admin API may touch of this process."""
        pipeline = self.pipeline
        return ServerView(
            token=self.config.admin.token,
            ready=lambda: self.ready,
            draining=lambda: self.shutdown.draining,
            checks=self.health.check,
            circuits=self.upstream.stats,
            documents=self.documents,
            registry=self.metrics.registry,
            listener_stats=lambda: dataclasses.asdict(self.listener_stats),
            purge=pipeline.cache.purge,
            purge_url=pipeline.purge_url,
            shared_tier=self.shared is not None,
            reload=self.reload,
            revocations=self.revocations,
            revoke=(self.revocation_follower or self.revocations).revoke,
        )

    @property
    def proxy_port(self) -> int:
        return int(self._runners[0].addresses[0][1])

    @property
    def admin_port(self) -> int:
        return int(self._runners[1].addresses[0][1])

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace), then close."""
        await cancel(self._start_checks)
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self.warmer is not None:
            await self.warmer.close()
        await self.pipeline.cache.close()
        self.pipeline.refusals.summarise()  # what was counted since the last summary
        if self.shared is not None:
            await self.shared.close()
        await self.upstream.close()
        if self.revocation_follower is not None:
            await self.revocation_follower.close()
        await self.health.close()
        await self.ticker.stop()
        await self.observer.stop()
        if self.redis is not None:
            await self.redis.close()
        if self.tracing is not None:  # the spans still queued are exported
            await asyncio.to_thread(self.tracing.close)

    def _route_caches(self, request: web.BaseRequest) -> bool:
        """Whether `request`'s route caches: a traced request's trace does not continue the
        client's there (proxy/observe/tracing/otel.py). Asked only of traced requests."""
        try:
            target = parse_target(request.raw_path)
            host = (
                request.headers.get("Host")
                if target.authority is None
                else authority_host(target.authority)
            )
            route = self.pipeline.routes.route_for(request.method, target.path, host)
        except (BadTarget, AmbiguousPath):
            return False  # refused before any upstream request
        return route.cache is not None


def route_facts(routes: RouteTable) -> RouteFacts:
    """What observe/ needs of the route table, as values: it does not import pipeline/."""
    return RouteFacts(
        meters=tuple((p.name, p.cache is not None) for p in routes.compiled),
        ttls={p.name: p.cache.rules.ttl for p in routes.compiled if p.cache is not None},
        limiters=tuple(lim for lim in routes.limiters if lim.shared is not None),
        trusted_proxies=routes.trusted_proxies,
        rate_limits=len(routes.limiters),
    )
