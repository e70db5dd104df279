"""Builds the two listeners (proxy and admin) and owns their lifecycle."""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.cache.settings import CacheSettings
from proxy.cache.stores import MemoryStore
from proxy.config import Config
from proxy.listener import Listener, ListenerStats, default_max_connections, open_files_limit
from proxy.pipeline import Pipeline
from proxy.routes import RouteTable
from proxy.upstream import UpstreamClient

log = logging.getLogger("cacheproxy")


class ProxyServer:
    """The running proxy: start() binds both ports, stop() drains and closes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.upstream = UpstreamClient(config.upstream)
        budget = (config.cache or CacheSettings()).max_memory
        self.pipeline = Pipeline(RouteTable(config), self.upstream, MemoryStore(budget))
        self.listener_stats = ListenerStats()
        self._runners: list[web.BaseRunner] = []

    async def start(self) -> None:
        await self.upstream.start()
        grace = self.config.shutdown_grace
        listen = self.config.listen
        open_files = open_files_limit()
        max_connections = listen.max_connections or default_max_connections(
            open_files, self.config.upstream.pool.max_connections
        )
        log.info("proxy port: at most %d connections (open files %d)", max_connections, open_files)
        # The proxy port routes with its own table, so aiohttp's router is dead weight:
        # the low-level server costs measurably less CPU per request (shared/design.md).
        listener = Listener(
            self.pipeline.handle, listen.timeouts, max_connections, self.listener_stats
        )
        # The runner calls listener.shutdown(grace) once the port stops accepting.
        proxy_runner = web.ServerRunner(listener, shutdown_timeout=grace)
        admin_runner = web.AppRunner(
            build_admin_app(self), access_log=None, shutdown_timeout=min(grace, 5.0)
        )
        try:
            for runner, address in (
                (proxy_runner, self.config.listen),
                (admin_runner, self.config.admin),
            ):
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, address.host, address.port, reuse_address=True).start()
        except BaseException:
            await self.stop()
            raise

    @property
    def proxy_port(self) -> int:
        return int(self._runners[0].addresses[0][1])

    @property
    def admin_port(self) -> int:
        return int(self._runners[1].addresses[0][1])

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace), then close."""
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        await self.pipeline.cache.close()
        await self.upstream.close()
