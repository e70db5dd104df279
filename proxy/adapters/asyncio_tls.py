"""The TLS layer under each connection of a TLS proxy port, made by the listener itself.

`loop.create_server(ssl=...)` puts an SSLProtocol under each protocol its factory makes, and
a handshake that fails or times out never reaches that protocol: no connection_made, no
connection_lost. A listener that counts connections at accept (server/listener.py) would
keep every such connection counted for good. So the listener serves plain TCP and its
factory returns the SSLProtocol itself, made as create_server makes it but with a waiter of
the listener's own, which every ending of a handshake completes, and with the TCP transport
shown to the app protocol at accept (its peer, for the per-client bound, before any TLS).

SSLProtocol is asyncio.sslproto's (Python 3.11 to 3.14) or, on a uvloop loop, uvloop's
(whose transports take their fast path for it alone); both take (loop, app_protocol,
sslcontext, waiter, server_side, ..., ssl_handshake_timeout, ssl_shutdown_timeout) and call
connection_made on the app protocol once the handshake is done. Neither is public API:
tests/adapters/test_asyncio_tls.py checks both, and the e2e TLS tests run them (in-process
asyncio; uvloop in the workers).
"""

from __future__ import annotations

import asyncio
import inspect
from asyncio import sslproto
from collections.abc import Callable
from ssl import SSLContext
from typing import Any, Protocol

try:
    import uvloop
    import uvloop.loop
except ImportError:  # uvloop is an optional extra
    uvloop = None  # type: ignore[assignment]

_PARAMETERS = (
    "loop",
    "app_protocol",
    "sslcontext",
    "waiter",
    "server_side",
    "ssl_handshake_timeout",
    "ssl_shutdown_timeout",
)


class TlsChanged(ImportError):
    """asyncio's SSLProtocol no longer takes what the listener gives it."""


_found = tuple(inspect.signature(sslproto.SSLProtocol.__init__).parameters)
if not all(name in _found for name in _PARAMETERS):
    raise TlsChanged(
        f"asyncio.sslproto.SSLProtocol takes {_found}, not {_PARAMETERS}, which cacheproxy's "
        "TLS listener passes (proxy/adapters/asyncio_tls.py)"
    )


class AppProtocol(Protocol):
    def tls_accepted(self, transport: asyncio.Transport) -> bool:
        """The TCP connection under a handshake about to begin; False: close it unanswered."""


def _with_accept(base: type) -> type:
    class ServerTls(base):  # a class chosen at run time
        def __init__(
            self,
            loop: asyncio.AbstractEventLoop,
            app: AppProtocol,
            context: SSLContext,
            waiter: asyncio.Future[None],
            handshake_timeout: float,
            shutdown_timeout: float,
        ) -> None:
            super().__init__(
                loop,
                app,
                context,
                waiter,
                server_side=True,
                ssl_handshake_timeout=handshake_timeout,
                ssl_shutdown_timeout=shutdown_timeout,
            )
            self.app = app

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if self.app.tls_accepted(transport):  # type: ignore[arg-type]  # uvloop's is one
                super().connection_made(transport)
            else:
                transport.abort()  # type: ignore[attr-defined]

    return ServerTls


_ASYNCIO = _with_accept(sslproto.SSLProtocol)
_UVLOOP = None
if uvloop is not None:
    _UVLOOP = _with_accept(uvloop.loop.SSLProtocol)  # type: ignore[attr-defined]  # not in its stubs


def server_tls(
    loop: asyncio.AbstractEventLoop,
    app: AppProtocol,
    context: SSLContext,
    handshake_timeout: float,
    shutdown_timeout: float,
    ended: Callable[[asyncio.Future[None]], Any],
) -> asyncio.Protocol:
    """The protocol to give a new TCP connection: TLS with `context`, then `app`.
    `shutdown_timeout`: seconds a closing connection waits for the client's close_notify.

    `ended` is called with the waiter once the handshake is over, however it ended: its
    result when done, its exception when it failed (timed out, refused, reset).
    """
    waiter: asyncio.Future[None] = loop.create_future()
    waiter.add_done_callback(ended)
    cls = _UVLOOP if _UVLOOP is not None and isinstance(loop, uvloop.Loop) else _ASYNCIO
    protocol: asyncio.Protocol = cls(
        loop, app, context, waiter, handshake_timeout, shutdown_timeout
    )
    return protocol
