"""Builds the two listeners (proxy and admin) and owns their lifecycle."""

from __future__ import annotations

from aiohttp import web

from proxy.admin import build_admin_app
from proxy.cache.settings import CacheSettings
from proxy.cache.stores import MemoryStore
from proxy.config import Config
from proxy.pipeline import Pipeline
from proxy.redis_conn import SharedRedis
from proxy.revocation import RevocationList
from proxy.routes import RouteTable
from proxy.upstream import UpstreamClient


class ProxyServer:
    """The running proxy: start() binds both ports, stop() drains and closes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.upstream = UpstreamClient(config.upstream)
        self.redis = SharedRedis(config.redis) if config.redis is not None else None
        budget = (config.cache or CacheSettings()).max_memory
        self.revocations = RevocationList(config.revocation, self.redis)
        self.pipeline = Pipeline(
            RouteTable(config, self.redis), self.upstream, MemoryStore(budget), self.revocations
        )
        self._runners: list[web.BaseRunner] = []

    async def start(self) -> None:
        await self.upstream.start()
        await self.revocations.start()
        grace = self.config.shutdown_grace
        # The proxy port routes with its own table, so aiohttp's router is dead weight:
        # the low-level server costs measurably less CPU per request (shared/design.md).
        proxy_runner = web.ServerRunner(
            web.Server(self.pipeline.handle, access_log=None),
            shutdown_timeout=grace,
        )
        admin_runner = web.AppRunner(
            build_admin_app(self), access_log=None, shutdown_timeout=min(grace, 5.0)
        )
        try:
            for runner, listen in (
                (proxy_runner, self.config.listen),
                (admin_runner, self.config.admin),
            ):
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
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
        await self.revocations.close()
        if self.redis is not None:
            await self.redis.close()
