"""HTTPS on the proxy port (`listen.tls`): real TLS clients against a running proxy, with
certificates made for each test (tests/tls_certs.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config.loader import parse_config
from proxy.server.app import ProxyServer
from proxy.server.reload import ConfigSource
from tests.conftest import Origin, ProxyProcess, StartProxy, config_text
from tests.e2e.test_listener import listener_stats
from tests.tls_certs import Pair, client_context, make_ca, make_cert


@pytest.fixture
def ca(tmp_path: Path) -> Pair:
    return make_ca(tmp_path / "pki")


@pytest.fixture
def leaf(tmp_path: Path, ca: Pair) -> Pair:
    return make_cert(tmp_path / "pki", ca)


def tls(pair: Pair, **more: Any) -> dict[str, Any]:
    return {"tls": {"cert_file": str(pair.cert), "key_file": str(pair.key), **more}}


async def served_cert(port: int, ca: Pair, **versions: Any) -> tuple[bytes, str, str | None]:
    """A new connection's view: the certificate it got, the TLS version and the ALPN protocol
    (h2 offered first: the port must answer http/1.1)."""
    context = client_context(ca, **versions)
    context.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        return der, sslobj.version(), sslobj.selected_alpn_protocol()
    finally:
        writer.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str = "/x"
) -> tuple[int, bytes]:
    """One GET on a kept-alive connection: status and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    body = await reader.readexactly(int(fields["content-length"]))
    return int(lines[0].split()[1]), body


async def test_https_serves_http11_and_tells_the_upstream_https(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    proxy = await start_proxy(origin.url, listen=tls(leaf), cache={"ttl": 60})
    url = f"https://127.0.0.1:{proxy.proxy_port}/x"
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # a miss, then a hit
            async with http.get(url, ssl=client_context(ca)) as resp:
                assert (resp.status, await resp.text()) == (200, "body of /x")
    assert [r.headers["X-Forwarded-Proto"] for r in origin.requests] == ["https"]
    der, version, alpn = await served_cert(proxy.proxy_port, ca)
    assert (der, version, alpn) == (leaf.der, "TLSv1.3", "http/1.1")
    # No half-counted connection is left behind by the handshakes.
    await _until(lambda: _open_connections(proxy, 0), "connections closed")


async def test_tls_12_and_13_are_accepted_and_11_refused(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    proxy = await start_proxy(origin.url, listen=tls(leaf))
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        got = await served_cert(proxy.proxy_port, ca, minimum=version, maximum=version)
        assert (
            got[1]
            == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        )
    # A client that would speak TLS 1.1 (OpenSSL's security level 0 lets it): refused by the
    # port, which counts a failed handshake, not by the client's own library. (asyncio
    # closes a failed handshake without sending its alert: the client sees a reset.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # naming TLS 1.1 at all warns
        eleven = ssl.TLSVersion.TLSv1_1
        old = client_context(ca, minimum=eleven, maximum=eleven)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(OSError):  # ssl.SSLError or ConnectionResetError
        await asyncio.open_connection("127.0.0.1", proxy.proxy_port, ssl=old)
    stats = await _until_stats(proxy, lambda s: s["tls_handshake_failures"] == 1)
    assert stats["open_connections"] == 0
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp,
    ):
        assert "cacheproxy_tls_handshake_failures_total 1.0" in await resp.text()


async def test_min_version_13_refuses_tls_12(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    proxy = await start_proxy(origin.url, listen=tls(leaf, min_version="1.3"))
    twelve = ssl.TLSVersion.TLSv1_2
    with pytest.raises(OSError):  # ssl.SSLError or ConnectionResetError, as above
        await served_cert(proxy.proxy_port, ca, minimum=twelve, maximum=twelve)
    await _until_stats(proxy, lambda s: s["tls_handshake_failures"] == 1)
    assert (await served_cert(proxy.proxy_port, ca))[1] == "TLSv1.3"


async def test_a_client_that_never_speaks_tls_is_closed_at_request_head(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    listen = {**tls(leaf), "timeouts": {"request_head": 0.5}, "max_connections": 3}
    proxy = await start_proxy(origin.url, listen=listen)
    silent = [await asyncio.open_connection("127.0.0.1", proxy.proxy_port) for _ in range(3)]
    started = time.monotonic()
    for reader, writer in silent:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
        writer.close()
    assert time.monotonic() - started < 4  # request_head, not asyncio's 60 s
    stats = await _until_stats(proxy, lambda s: s["head_timeouts"] == 3)
    assert (stats["open_connections"], stats["tls_handshake_failures"]) == (0, 0)
    # Plain HTTP to the TLS port: a failed handshake, closed at once.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    stats = await _until_stats(proxy, lambda s: s["tls_handshake_failures"] == 1)
    # Every one of those slots came back: max_connections (3) still lets a client in.
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://127.0.0.1:{proxy.proxy_port}/x", ssl=client_context(ca)) as resp,
    ):
        assert resp.status == 200


async def test_one_client_is_bounded_before_its_handshake(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    """max_connections_per_client counts a TLS connection from its TCP accept: handshakes
    a client never finishes hold its share, not everyone's. And shutdown does not wait for
    them."""
    listen = {**tls(leaf), "max_connections_per_client": 2}
    proxy = await start_proxy(origin.url, listen=listen)
    held = [await asyncio.open_connection("127.0.0.1", proxy.proxy_port) for _ in range(2)]
    await _until_stats(proxy, lambda s: s["open_connections"] == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    assert await asyncio.wait_for(reader.read(), 3) == b""  # refused at once, no handshake
    writer.close()
    stats = await _until_stats(proxy, lambda s: s["refused_per_client"] == 1)
    assert (stats["open_connections"], stats["tls_handshake_failures"]) == (2, 0)
    started = time.monotonic()
    await proxy.stop()  # request_head is 10 s: the two handshakes are ended, not awaited
    assert time.monotonic() - started < 2
    for reader, writer in held:
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()


async def test_the_handshake_and_the_first_head_share_request_head(
    origin: Origin, start_proxy: StartProxy, ca: Pair, leaf: Pair
) -> None:
    """A client that waits before its handshake, then sends no request, is closed
    request_head after its TCP accept, not request_head after its handshake."""
    proxy = await start_proxy(origin.url, listen={**tls(leaf), "timeouts": {"request_head": 1.5}})
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    await asyncio.sleep(1)
    await writer.start_tls(client_context(ca))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert time.monotonic() - started < 2.2  # 1.5, where a head timer of its own would be 2.5
    writer.close()
    await _until_stats(proxy, lambda s: s["head_timeouts"] == 1 and not s["open_connections"])


async def test_reload_serves_the_new_certificate_to_new_connections_only(
    origin: Origin, tmp_path: Path, ca: Pair, leaf: Pair
) -> None:
    """Files renewed in place (as certbot does), then a reload; then a bad pair: refused,
    the running certificate kept."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(leaf.cert.read_bytes())
    key.write_bytes(leaf.key.read_bytes())
    path = tmp_path / "config.yaml"
    path.write_text(config_text(origin.url, listen=tls(Pair(cert, key))))
    source = ConfigSource(str(path))
    proxy = ProxyServer(source.load(), source=source, report_start=False)
    await proxy.start()
    try:
        port = proxy.proxy_port
        before = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca))
        assert await exchange(*before) == (200, b"body of /x")

        renewed = make_cert(tmp_path / "pki", ca)
        cert.write_bytes(renewed.cert.read_bytes())
        key.write_bytes(renewed.key.read_bytes())
        assert proxy.reload() == {"reloaded": True, "restart_required": [], "errors": []}
        assert (await served_cert(port, ca))[0] == renewed.der
        # The connection made before keeps its certificate and is served on.
        assert before[1].get_extra_info("ssl_object").getpeercert(True) == leaf.der
        assert await exchange(*before, "/y") == (200, b"body of /y")

        # A certificate without its key: the reload is refused, naming the key path.
        other = make_cert(tmp_path / "pki", ca)
        cert.write_bytes(other.cert.read_bytes())
        refused = proxy.reload()
        assert refused["reloaded"] is False
        errors = refused["errors"]
        assert isinstance(errors, list)
        assert [e.split(":")[0] for e in errors] == ["listen.tls.key_file"]
        assert (await served_cert(port, ca))[0] == renewed.der
        assert await exchange(*before, "/z") == (200, b"body of /z")
        before[1].close()
    finally:
        await proxy.stop()


def test_tls_on_or_off_needs_a_restart_and_its_files_do_not(tmp_path: Path, ca: Pair) -> None:
    from proxy.server.reload import effective, restart_required

    one, two = make_cert(tmp_path, ca), make_cert(tmp_path, ca)
    plain = parse_config(config_text("http://127.0.0.1:1"), env={})
    first = parse_config(config_text("http://127.0.0.1:1", listen=tls(one)), env={})
    second = parse_config(config_text("http://127.0.0.1:1", listen=tls(two)), env={})
    assert restart_required(plain, first) == ["listen.tls"]
    assert restart_required(first, plain) == ["listen.tls"]
    assert effective(first, plain).listen.tls == first.listen.tls  # it still speaks TLS
    assert restart_required(first, second) == []


async def test_workers_serve_tls_and_each_reloads_its_certificate_on_sighup(
    origin: Origin,
    proxy_process: Callable[..., ProxyProcess],
    tmp_path: Path,
    ca: Pair,
    leaf: Pair,
) -> None:
    """Two worker processes (uvloop's TLS, SO_REUSEPORT): every one serves the new
    certificate once the supervisor passed SIGHUP on."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(leaf.cert.read_bytes())
    key.write_bytes(leaf.key.read_bytes())
    proc = proxy_process(origin.url, workers=2, listen=tls(Pair(cert, key)))

    async def certificates(n: int) -> set[bytes]:
        return {(await served_cert(proc.port, ca))[0] for _ in range(n)}

    await _until_ready(proc)
    assert await certificates(8) == {leaf.der}
    renewed = make_cert(tmp_path / "pki", ca)
    cert.write_bytes(renewed.cert.read_bytes())
    key.write_bytes(renewed.key.read_bytes())
    os.kill(proc.proc.pid, signal.SIGHUP)
    # The kernel spreads connections over both workers: 16 in a row with the new
    # certificate alone means each worker reloaded (one left behind would have a 1 in
    # 65536 chance of getting none of them).
    deadline = time.monotonic() + 30
    while await certificates(16) != {renewed.der}:
        assert time.monotonic() < deadline, "the workers did not all reload"
        await asyncio.sleep(0.2)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://127.0.0.1:{proc.port}/x", ssl=client_context(ca)) as resp,
    ):
        assert resp.status == 200


async def _until_ready(proc: ProxyProcess) -> None:
    deadline = time.monotonic() + 60  # workers on a loaded 2-core machine start slowly
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"http://127.0.0.1:{proc.admin_port}/readyz") as resp:
                if resp.status == 200:
                    return
            assert time.monotonic() < deadline, "workers not ready in 60 s"
            await asyncio.sleep(0.1)


async def _open_connections(proxy: ProxyServer, n: int) -> bool:
    return (await listener_stats(proxy))["open_connections"] == n


async def _until(check: Callable[[], Awaitable[bool]], what: str, wait: float = 5.0) -> None:
    deadline = time.monotonic() + wait
    while not await check():
        assert time.monotonic() < deadline, f"not within {wait} s: {what}"
        await asyncio.sleep(0.05)


async def _until_stats(
    proxy: ProxyServer, check: Callable[[dict[str, int]], bool], wait: float = 5.0
) -> dict[str, int]:
    deadline = time.monotonic() + wait
    while True:
        stats = await listener_stats(proxy)
        if check(stats):
            return stats
        assert time.monotonic() < deadline, f"listener stats not as expected: {stats}"
        await asyncio.sleep(0.05)
