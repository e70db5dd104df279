"""TLS to the upstream as `upstream.tls` says: a CA of its own, a client certificate for
mutual TLS, the name checked; and what fails (an untrusted certificate, no client certificate)
answered as a clean JSON 502.

The upstreams are aiohttp apps over TLS on loopback, with certificates made by openssl for the
test (tests/tls_certs.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from proxy.config.loader import ConfigError
from proxy.server.app import ProxyServer
from tests.conftest import ProxyProcess, StartProxy, url_of
from tests.dns_server import DnsServer, dns_server  # noqa: F401
from tests.tls_certs import Pair, make_ca, make_cert


@dataclass
class TlsUpstream:
    url: str
    server_names: list[str | None] = field(default_factory=list)  # SNI, per handshake
    clients: list[str] = field(default_factory=list)  # the client certificate's CN, per request


StartTls = Callable[..., Awaitable[TlsUpstream]]


@pytest.fixture
async def start_tls() -> AsyncIterator[StartTls]:
    runners: list[web.AppRunner] = []

    async def start(
        cert: Pair, client_ca: Pair | None = None, version: ssl.TLSVersion | None = None
    ) -> TlsUpstream:
        """An upstream serving `cert`; with `client_ca`, one that requires a client
        certificate signed by it (mutual TLS); with `version`, only that TLS version."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert.cert, cert.key)
        if version is not None:
            context.minimum_version = context.maximum_version = version
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca.cert)
        up = TlsUpstream("")

        def sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            up.server_names.append(name)

        context.sni_callback = sni

        async def hello(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            if peer:
                up.clients.append(dict(x[0] for x in peer["subject"])["commonName"])
            return web.Response(text="over tls", headers={"Cache-Control": "no-store"})

        app = web.Application()
        app.router.add_get("/x", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
        up.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        return up

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    """The upstream's CA and certificates, the proxy's client certificate (another CA), and a
    CA nobody here uses."""
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, stranger = make_ca(d, "upstream CA"), make_ca(d, "client CA"), make_ca(d)
    return {
        "ca": ca,
        "server": make_cert(d, ca),  # 127.0.0.1 and localhost
        "named": make_cert(d, ca, hosts=("api.internal",)),  # not its address
        "client_ca": client_ca,
        "client": make_cert(d, client_ca, ("proxy.client",), usage="clientAuth"),
        "stranger": stranger,
    }


async def proxy_with(start_proxy: StartProxy, up: TlsUpstream, **tls: object) -> ProxyServer:
    upstream = {"url": up.url, "tls": tls, "retries": {"attempts": 2}}
    return await start_proxy(up.url, upstream=upstream)


async def get(http: aiohttp.ClientSession, proxy: ProxyServer) -> tuple[int, dict[str, str]]:
    async with http.get(url_of(proxy, "/x")) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, body or {"text": await resp.text()}


async def test_a_private_ca_is_trusted_and_a_client_certificate_shown(
    start_proxy: StartProxy, http: aiohttp.ClientSession, start_tls: StartTls, pki: dict[str, Pair]
) -> None:
    up = await start_tls(pki["server"], client_ca=pki["client_ca"])
    client = pki["client"]
    proxy = await proxy_with(
        start_proxy,
        up,
        ca_file=str(pki["ca"].cert),
        cert_file=str(client.cert),
        key_file=str(client.key),
    )
    for _ in range(2):
        assert await get(http, proxy) == (200, {"text": "over tls"})
    assert up.clients == ["proxy.client", "proxy.client"]


async def test_a_certificate_the_ca_file_did_not_sign_is_a_502_not_retried(
    start_proxy: StartProxy, http: aiohttp.ClientSession, start_tls: StartTls, pki: dict[str, Pair]
) -> None:
    up = await start_tls(pki["server"])
    # Only ca_file is trusted, not the system's store (nor SSL_CERT_FILE) besides it.
    proxy = await proxy_with(start_proxy, up, ca_file=str(pki["stranger"].cert))
    status, body = await get(http, proxy)
    assert (status, body["error"]) == (502, "upstream_unavailable")
    assert body["message"] == "The upstream API is unreachable: its TLS certificate is not trusted"
    assert proxy.upstream.stats()[0].retries == 0  # it would fail the same way again


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
async def test_no_client_certificate_where_one_is_required_is_a_clean_502(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    start_tls: StartTls,
    pki: dict[str, Pair],
    caplog: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
) -> None:
    up = await start_tls(pki["server"], client_ca=pki["client_ca"], version=version)
    proxy = await proxy_with(start_proxy, up, ca_file=str(pki["ca"].cert))
    status, body = await get(http, proxy)
    assert (status, body["error"]) == (502, "upstream_unavailable")
    assert up.clients == []
    if version is ssl.TLSVersion.TLSv1_2:
        # The handshake itself fails (the upstream resets it): not retried.
        assert body["message"] == "The upstream API is unreachable: the TLS handshake failed"
        assert "during the TLS handshake (ConnectionResetError" in caplog.text
        assert proxy.upstream.stats()[0].retries == 0
    else:
        # TLS 1.3: the upstream refuses the certificate after the handshake, and its alert
        # reaches no asyncio protocol: a connection closed unanswered, which the log explains.
        assert body["message"] == "The upstream API is unreachable"
        assert "was the client certificate refused?" in caplog.text


async def test_server_name_is_sent_and_checked_instead_of_the_urls_host(
    start_proxy: StartProxy, http: aiohttp.ClientSession, start_tls: StartTls, pki: dict[str, Pair]
) -> None:
    up = await start_tls(pki["named"])  # for api.internal, reached at 127.0.0.1
    ca = str(pki["ca"].cert)
    wrong = await proxy_with(start_proxy, up, ca_file=ca)
    status, body = await get(http, wrong)
    assert (status, body["message"]) == (
        502,
        "The upstream API is unreachable: its TLS certificate is not trusted",
    )
    proxy = await proxy_with(start_proxy, up, ca_file=ca, server_name="api.internal")
    assert await get(http, proxy) == (200, {"text": "over tls"})
    assert up.server_names[-1] == "api.internal"


async def test_insecure_skip_verify_trusts_anything_and_says_so(
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    start_tls: StartTls,
    pki: dict[str, Pair],
    caplog: pytest.LogCaptureFixture,
) -> None:
    up = await start_tls(pki["server"])  # its CA is trusted nowhere
    proxy = await proxy_with(start_proxy, up, insecure_skip_verify=True)
    assert await get(http, proxy) == (200, {"text": "over tls"})
    assert "upstream certificates are NOT checked" in caplog.text


async def test_tls_files_that_would_fail_later_stop_the_proxy_at_load(
    start_proxy: StartProxy, pki: dict[str, Pair], tmp_path: Path
) -> None:
    other = make_cert(tmp_path, pki["client_ca"], ("other",), usage="clientAuth")
    with pytest.raises(ConfigError) as info:
        await start_proxy(
            "https://127.0.0.1:1",
            upstream={
                "url": "https://127.0.0.1:1",
                "tls": {"cert_file": str(pki["client"].cert), "key_file": str(other.key)},
            },
        )
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("upstream.tls: cert_file ")
    assert info.value.problems[0].endswith("the key is not this certificate's")


async def test_a_named_upstream_over_mutual_tls_in_the_proxy_as_users_run_it(
    proxy_process: Callable[..., ProxyProcess],
    http: aiohttp.ClientSession,
    start_tls: StartTls,
    pki: dict[str, Pair],
    dns_server: DnsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """On uvloop, in its own process: the name from the DNS server, the certificate checked
    against it, the client certificate shown."""
    up = await start_tls(make_cert(tmp_path, pki["ca"], ("api.test",)), pki["client_ca"])
    dns_server.records["api.test"] = [("127.0.0.1", 60)]
    url = up.url.replace("127.0.0.1", "api.test")
    client = pki["client"]
    tls = {
        "ca_file": str(pki["ca"].cert),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
    }
    proxy = await asyncio.to_thread(
        proxy_process,
        url,
        upstream={"url": url, "tls": tls, "dns": {"nameservers": [dns_server.address]}},
    )
    async with http.get(f"http://127.0.0.1:{proxy.port}/x") as resp:
        assert (resp.status, await resp.text()) == (200, "over tls")
    assert up.clients == ["proxy.client"] and up.server_names == ["api.test"]


async def test_the_health_probe_reaches_the_upstream_as_requests_do(
    start_proxy: StartProxy, http: aiohttp.ClientSession, start_tls: StartTls, pki: dict[str, Pair]
) -> None:
    """/health's probe trusts the CA and shows the client certificate too: an upstream every
    request reaches is never reported down for want of them."""
    up = await start_tls(pki["named"], client_ca=pki["client_ca"])
    client = pki["client"]
    tls = {
        "ca_file": str(pki["ca"].cert),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
        "server_name": "api.internal",
    }
    proxy = await start_proxy(up.url, upstream={"url": up.url, "tls": tls, "health_path": "/x"})
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/health") as resp:
        check = (await resp.json())["checks"]["upstream"]
    assert (check["status"], check["probe"], check["http_status"]) == ("up", "http", 200)
    assert up.clients == ["proxy.client"] and up.server_names == ["api.internal"]
