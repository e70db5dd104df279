"""The contract with asyncio's and uvloop's SSLProtocol (proxy/adapters/asyncio_tls.py), on
each loop: the app protocol sees the TCP accept first and may refuse it; a handshake that
completes reaches it; one that fails or times out completes the waiter, and only that."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from proxy.adapters.asyncio_tls import server_tls
from tests.tls_certs import client_context, make_ca, make_cert


class App(asyncio.Protocol):
    def __init__(self, admit: bool) -> None:
        self.admit = admit
        self.accepted: Any = None
        self.made: Any = None
        self.ended: list[BaseException | None] = []

    def tls_accepted(self, transport: asyncio.Transport) -> bool:
        self.accepted = transport.get_extra_info("peername")
        return self.admit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = transport

    def data_received(self, data: bytes) -> None:
        self.made.write(b"got " + data)
        self.made.close()

    def end(self, waiter: asyncio.Future[None]) -> None:
        self.ended.append(waiter.exception())


LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.mark.parametrize("run", LOOPS.values(), ids=LOOPS.keys())
def test_every_ending_of_a_handshake_is_heard(
    run: Callable[[Coroutine[Any, Any, None]], None], tmp_path: Path
) -> None:
    ca = make_ca(tmp_path)
    leaf = make_cert(tmp_path, ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    apps: list[App] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        admit = True

        def factory() -> asyncio.Protocol:
            app = App(admit)
            apps.append(app)
            return server_tls(loop, app, context, 0.5, 1.0, app.end)

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # A handshake done: the app protocol gets the TLS transport.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca))
        writer.write(b"hi")
        assert await reader.read() == b"got hi"
        writer.close()
        # Not TLS at all, then nothing at all: each ends the waiter with an error.
        for hello in (b"GET / HTTP/1.1\r\n\r\n", b""):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(hello)
            assert await asyncio.wait_for(reader.read(), 3) == b""
            writer.close()
        # Refused at the TCP accept: closed before any handshake.
        admit = False
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        await asyncio.sleep(0.1)
        server.close()

    run(main())
    done, plain, silent, refused = apps
    assert all(app.accepted[0] == "127.0.0.1" for app in apps)
    assert done.made.get_extra_info("sslcontext") is context and done.ended == [None]
    assert plain.made is None and isinstance(plain.ended[0], ssl.SSLError)
    assert silent.made is None and isinstance(silent.ended[0], OSError)  # timed out
    assert refused.made is None and refused.ended in ([], [None])
