"""Opening a connection to an upstream: its addresses (resolve.py), tried as RFC 8305's Happy
Eyeballs tries them, then TLS for https upstreams.

One address after another under one connect timeout let a first address that never answers
(a dead host, a dropped SYN) use the whole budget; staggered attempts
(`aiohappyeyeballs`, what aiohttp uses) start the next address HAPPY_EYEBALLS_DELAY later while
the first still tries, and take whichever connects first. The caller bounds it all in time
(http1.py's Pool: upstream.timeouts.connect) and names the errors.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar

import aiohappyeyeballs

from proxy.config.connect import Dns
from proxy.upstream.resolve import Lookup, Resolver

# RFC 8305 §5: the recommended Connection Attempt Delay.
HAPPY_EYEBALLS_DELAY = 0.25

P = TypeVar("P", bound=asyncio.BaseProtocol)


class Connector:
    """Connections to upstream origins, for one process."""

    def __init__(self, dns: Dns | None = None, lookup: Lookup | None = None) -> None:
        self.resolver = Resolver(dns or Dns(), lookup)
        self._context: ssl.SSLContext | None = None  # made for the first https connection

    async def open(self, scheme: str, host: str, port: int, factory: Callable[[], P]) -> P:
        """A connected protocol from `factory`; OSError (ssl.SSLError for TLS) if none."""
        addresses = await self.resolver.resolve(host, port)
        sock = await aiohappyeyeballs.start_connection(
            addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
        )
        context = server_name = None
        if scheme == "https":
            if self._context is None:
                self._context = ssl.create_default_context()
            context, server_name = self._context, host
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                factory, sock=sock, ssl=context, server_hostname=server_name
            )
        except BaseException:
            sock.close()  # the transport closes it when there is one; not always
            raise
        return protocol

    async def close(self) -> None:
        await self.resolver.close()


__all__ = ["HAPPY_EYEBALLS_DELAY", "Connector"]
