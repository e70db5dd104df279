"""Fixtures: a real upstream (aiohttp on a loopback port) and the real proxy in front of it."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config.loader import parse_config
from proxy.http.headers import ForwardingRules, request_fields
from proxy.server.app import ProxyServer
from tests.redis_servers import redis_cluster, redis_sentinel, redis_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Upstream:
    """A running upstream app; `seen` records every request it received."""

    url: str
    port: int
    seen: list[web.Request] = field(default_factory=list)
    runner: web.AppRunner | None = None


StartUpstream = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    runners: list[web.AppRunner] = []

    async def start(
        app: web.Application, port: int = 0, keepalive_timeout: float = 75.0
    ) -> Upstream:
        up = Upstream(url="", port=0)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            up.seen.append(request)
            return await handler(request)

        app.middlewares.append(record)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive_timeout)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        up.port = int(runner.addresses[0][1])
        up.url = f"http://127.0.0.1:{up.port}"
        up.runner = runner
        return up

    yield start
    for runner in runners:
        await runner.cleanup()


StartProxy = Callable[..., Awaitable[ProxyServer]]


def config_text(upstream_url: str, **sections: Any) -> str:
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "upstream": {"url": upstream_url},
        "shutdown_grace": 2,
        "shutdown_delay": 0,  # tests that stop a proxy need no load balancer to catch up
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return yaml.safe_dump(data)


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    servers: list[ProxyServer] = []

    async def start(upstream_url: str, **sections: Any) -> ProxyServer:
        # No start-up report: its probe of the upstream would land in the tests' logs and
        # connection counts at a time of its own (tests/server/test_startup.py tests it).
        config = parse_config(config_text(upstream_url, **sections), env={})
        server = ProxyServer(config, report_start=False)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client: no decompression, no cookies, nothing the test did not ask for."""
    async with aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:
        yield session


def url_of(server: ProxyServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.proxy_port}{path}"


async def raw_exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or `wait` seconds pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


@dataclass
class ProxyProcess:
    proc: subprocess.Popen[str]
    port: int
    admin_port: int
    config: Path  # the file it runs from: rewrite it and reload

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _listening(proc: subprocess.Popen[str], port: int, admin_port: int) -> bool:
    """True once the proxy accepts on both ports; False if it exited because one of them was
    taken; any other early exit fails the test with what the proxy printed."""
    assert proc.stdout is not None  # stdout=PIPE
    # Generous: it returns as soon as both ports accept, and a loaded 2-core machine has
    # taken over 15 s to start a proxy with workers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            printed = proc.stdout.read()
            if "address already in use" in printed:
                return False
            raise AssertionError(f"proxy exited early: {printed}")
        # Both ports: the admin listener binds after the proxy port, and tests ask it first.
        if all(_accepts(p) for p in (port, admin_port)):
            return True
        time.sleep(0.05)
    raise AssertionError("proxy did not start listening on both ports within 60 s")


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """The proxy as users run it: `python -m proxy run --config F`, in its own process."""
    procs: list[subprocess.Popen[str]] = []

    def start(
        upstream_url: str,
        *,
        open_files: tuple[int, int] | None = None,
        env: dict[str, str] | None = None,
        **sections: Any,
    ) -> ProxyProcess:
        """`open_files`: (soft, hard) RLIMIT_NOFILE for the proxy process; `env`: variables
        besides this process's."""

        def limit_open_files() -> None:
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

        listen, admin = sections.get("listen", {}), sections.get("admin", {})
        # A port free_port() found free can be taken (as some connection's local port) before
        # the proxy binds it: the proxy then exits at once, and new ports are tried.
        for _ in range(3):
            port, admin_port = free_port(), free_port()
            sections["listen"] = {"host": "127.0.0.1", "port": port, **listen}
            sections["admin"] = {"host": "127.0.0.1", "port": admin_port, **admin}
            cfg = tmp_path / f"config-{len(procs)}.yaml"
            cfg.write_text(config_text(upstream_url, **sections))
            proc = subprocess.Popen(
                [sys.executable, "-m", "proxy", "run", "--config", str(cfg)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                preexec_fn=limit_open_files,
            )
            procs.append(proc)
            if _listening(proc, port, admin_port):
                return ProxyProcess(proc, port, admin_port, cfg)
        raise AssertionError("three tries: each time a port was taken before the proxy bound it")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


Responder = Callable[[web.Request], Any]


class Origin:
    """A scripted upstream: `respond` decides each response; `hits` counts requests per path."""

    url: str
    upstream: Upstream

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[web.Request] = []
        self.delay = 0.0
        self.respond: Responder = lambda r: web.Response(
            text=f"body of {r.path_qs}", headers={"Cache-Control": "max-age=60"}
        )

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.hits[request.path] += 1
            self.requests.append(request)
            await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            result = self.respond(request)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


@pytest.fixture
async def origin(start_upstream: StartUpstream) -> Origin:
    o = Origin()
    o.upstream = await start_upstream(o.app())
    o.url = o.upstream.url
    return o


async def get(
    http: aiohttp.ClientSession, proxy: ProxyServer, path: str, **kwargs: Any
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.get(url_of(proxy, path), **kwargs) as resp:
        return resp, await resp.read()


def forward_request_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    rules: ForwardingRules,
    *,
    peer: str | None,
    peer_trusted: bool,
    proto: str,
    client_host: str | None,
    upstream_host: str,
) -> CIMultiDict[str]:
    """`headers.request_fields`, the lines the upstream gets, read back as a multidict."""
    lines = request_fields(
        headers,
        rules,
        peer=peer,
        peer_trusted=peer_trusted,
        proto=proto,
        client_host=client_host,
        upstream_host=upstream_host,
    )
    return CIMultiDict((name, value) for name, value in (line.split(": ", 1) for line in lines))
