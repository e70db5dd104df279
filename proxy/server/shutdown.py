"""How a process stops: not ready at once, serving on for `shutdown_delay`, then draining.

A load balancer (a Kubernetes Service, an ALB) goes on sending new connections for a few
seconds after it is told an instance is leaving; a port that closes at once refuses them.
So SIGTERM only takes readiness away (`/readyz` responds 503) and the proxy port keeps
serving for `shutdown_delay` seconds, what a `preStop: sleep` would do; then it stops
accepting and in-flight requests get `shutdown_grace` (proxy/server/app.py, ProxyServer.stop).

SIGINT (Ctrl-C at a terminal: nobody is routing to this process) skips the delay, or what is
left of it. Repeated SIGTERMs change nothing: under a service manager that signals every
process of the group, a worker gets one from it and one from its supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib


class Shutdown:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._asked = asyncio.Event()
        self._now = asyncio.Event()

    @property
    def draining(self) -> bool:
        """True from the first signal on: not ready for new traffic."""
        return self._asked.is_set()

    @property
    def skips_delay(self) -> bool:
        return self._now.is_set()

    def terminate(self) -> None:
        """SIGTERM: leave after the delay."""
        self._asked.set()

    def interrupt(self) -> None:
        """SIGINT, or a supervisor gone: leave now."""
        self._asked.set()
        self._now.set()

    async def requested(self) -> None:
        await self._asked.wait()

    async def until_close(self) -> None:
        """Returns once the port should stop accepting: the delay after the first signal is
        over, or cut short by an interrupt."""
        await self._asked.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._now.wait(), self.delay)
