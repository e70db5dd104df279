"""Opening a connection to an upstream: its addresses (resolve.py), tried as RFC 8305's Happy
Eyeballs tries them, then TLS as `upstream.tls` says.

One address after another under one connect timeout let a first address that never answers
(a dead host, a dropped SYN) use the whole budget; staggered attempts
(`aiohappyeyeballs`, what aiohttp uses) start the next address HAPPY_EYEBALLS_DELAY later while
the first still tries, and take whichever connects first. The caller bounds it all in time
(http1.py's Pool: upstream.timeouts.connect) and names the errors.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TypeVar

import aiohappyeyeballs

from proxy.config.connect import Dns, UpstreamTls
from proxy.upstream.resolve import Lookup, Resolver

log = logging.getLogger("cacheproxy.upstream")

# RFC 8305 §5: the recommended Connection Attempt Delay.
HAPPY_EYEBALLS_DELAY = 0.25

P = TypeVar("P", bound=asyncio.BaseProtocol)


class HandshakeFailed(OSError):
    """The TCP connection was made, the TLS handshake did not finish."""


def tls_context(tls: UpstreamTls) -> ssl.SSLContext:
    """The client context for https upstreams: the system's store (or ca_file), verified
    (unless insecure_skip_verify), with the client certificate if one is set."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=b"")
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Connector:
    """Connections to upstream origins, for one process."""

    def __init__(
        self, dns: Dns | None = None, tls: UpstreamTls | None = None, lookup: Lookup | None = None
    ) -> None:
        self.resolver = Resolver(dns or Dns(), lookup)
        self.tls = tls or UpstreamTls()
        self._context: ssl.SSLContext | None = None  # made for the first https connection
        if self.tls.insecure_skip_verify:
            log.warning(
                "upstream.tls.insecure_skip_verify is on: upstream certificates are NOT "
                "checked, anyone between this proxy and its upstreams can read and change "
                "the traffic"
            )

    async def open(self, scheme: str, host: str, port: int, factory: Callable[[], P]) -> P:
        """A connected protocol from `factory`; OSError (ssl.SSLError for TLS) if none."""
        context = server_name = None
        if scheme == "https":
            if self._context is None:
                self._context = tls_context(self.tls)
            context, server_name = self._context, self.tls.server_name or host
        addresses = await self.resolver.resolve(host, port)
        sock = await aiohappyeyeballs.start_connection(
            addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
        )
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                factory, sock=sock, ssl=context, server_hostname=server_name
            )
        except BaseException as exc:
            sock.close()  # the transport closes it when there is one; not always
            tls_cut = isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError)
            if context is not None and tls_cut:
                # Connected, then cut: an upstream refusing our TLS resets as often as it
                # sends an alert (a client certificate it wants, no version in common).
                raise HandshakeFailed(
                    f"the connection closed during the TLS handshake ({exc!r}): was the "
                    "client certificate refused, or no TLS version in common?"
                ) from exc
            raise
        return protocol

    async def close(self) -> None:
        await self.resolver.close()


__all__ = ["HAPPY_EYEBALLS_DELAY", "Connector", "HandshakeFailed", "tls_context"]
