"""The proxy as users run it, in its own process: big streams, signals, exit codes."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.conftest import ROOT, ProxyProcess, StartUpstream, free_port

MB = 1024 * 1024
BIG = 200 * MB
CHUNK = 256 * 1024


def _chunk(i: int) -> bytes:
    return bytes([i % 251]) * CHUNK


async def _generate(total: int) -> AsyncIterator[bytes]:
    for i in range(total // CHUNK):
        yield _chunk(i)


def streaming_app() -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG
        await resp.prepare(request)
        async for chunk in _generate(BIG):
            await resp.write(chunk)
        return resp

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(text="finished")

    app = web.Application(client_max_size=BIG * 2)
    app.router.add_post("/upload", upload)
    app.router.add_get("/download", download)
    app.router.add_get("/slow", slow)
    return app


async def test_200mb_streams_both_ways_with_bounded_proxy_memory(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    up = await start_upstream(streaming_app())
    proxy = proxy_process(up.url)
    base = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async with http.get(f"{base}/slow") as resp:  # warm up: imports, pools, buffers
            assert resp.status == 200
        rss_before = proxy.peak_rss_kib()

        expected = hashlib.sha256()
        for i in range(BIG // CHUNK):
            expected.update(_chunk(i))
        async with http.post(f"{base}/upload", data=_generate(BIG)) as resp:
            assert resp.status == 200
            assert await resp.json() == {"size": BIG, "sha256": expected.hexdigest()}

        got, size = hashlib.sha256(), 0
        async with http.get(f"{base}/download") as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_chunked(CHUNK):
                got.update(chunk)
                size += len(chunk)
        assert (size, got.hexdigest()) == (BIG, expected.hexdigest())

    growth_mib = (proxy.peak_rss_kib() - rss_before) / 1024
    # 400 MB went through; holding it would have grown the process by that much.
    assert growth_mib < 40, f"proxy peak RSS grew by {growth_mib:.0f} MiB"


async def test_sigterm_drains_in_flight_requests_then_exits_0(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    up = await start_upstream(streaming_app())
    proxy = proxy_process(up.url, shutdown_grace=5)
    async with aiohttp.ClientSession() as http:
        pending = asyncio.ensure_future(http.get(f"http://127.0.0.1:{proxy.port}/slow"))
        await asyncio.sleep(0.3)  # the request is in flight upstream
        proxy.proc.send_signal(signal.SIGTERM)
        resp = await pending
        assert resp.status == 200
        assert await resp.text() == "finished"
        resp.release()
    code = await asyncio.get_running_loop().run_in_executor(None, proxy.proc.wait, 10)
    assert code == 0


async def test_sigterm_gives_requests_the_grace_and_no_more(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_get("/sleep/{seconds}", sleep)
    up = await start_upstream(app)
    grace = 3.0
    proxy = proxy_process(up.url, shutdown_grace=grace)
    base = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession() as http:
        longer = asyncio.ensure_future(http.get(f"{base}/sleep/10"))
        shorter = asyncio.ensure_future(http.get(f"{base}/sleep/1"))
        await asyncio.sleep(0.3)  # both are in flight upstream
        proxy.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with await shorter as resp:
            assert (resp.status, await resp.text()) == (200, "finished")
        async with await longer as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "shutting_down"
        code = await asyncio.get_running_loop().run_in_executor(None, proxy.proc.wait, 10)
        took = time.monotonic() - signalled
    assert code == 0
    # aiohttp alone waited the grace twice (for the handler, then after cancelling it). The
    # bound is that, not grace plus a margin: a loaded machine took grace + 2.2 s to exit.
    assert took < 2 * grace, f"exited {took:.1f}s after SIGTERM with a {grace:g}s grace"


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_config_accepts_the_shipped_example() -> None:
    done = run_cli("check-config", "--config", str(ROOT / "config.yaml"))
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_bad_config_exits_2_naming_every_key_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "upstream: {url: 'ftp://nowhere'}\n"
        "listen: {port: eighty}\n"
        "routes:\n"
        "  - match: {prefix: /a/}\n"
        "  - match: {regex: '([unclosed'}\n"
        "    colour: blue\n"
    )
    for command in ("check-config", "run"):
        done = run_cli(command, "--config", str(cfg))
        assert done.returncode == 2, done
        for path in ("upstream.url", "listen.port", "routes[1].match.regex", "routes[1].colour"):
            assert path in done.stderr, (path, done.stderr)
        assert "Traceback" not in done.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    done = run_cli("run", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    assert "absent.yaml" in done.stderr


def test_port_in_use_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"upstream: {{url: 'http://127.0.0.1:{free_port()}'}}\n"
            f"listen: {{port: {port}}}\nadmin: {{port: {free_port()}}}\n"
        )
        done = run_cli("run", "--config", str(cfg))
    assert done.returncode == 1
    assert "cannot start" in done.stderr and "Traceback" not in done.stderr


def test_demo_shows_a_request_through_the_proxy() -> None:
    port, up_port, admin_port = free_port(), free_port(), free_port()
    cfg_port_args = ["--port", str(port), "--upstream-port", str(up_port), "--delay", "0.2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", *cfg_port_args, "--admin-port", str(admin_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 15
        seen: list[str] = []
        while len(seen) < 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/quotes/AAPL") as r:
                    assert r.status == 200
                    assert b'"symbol":"AAPL"' in r.read()
                    seen.append(r.headers["X-Cache"])
            except OSError:
                assert time.monotonic() < deadline, "demo did not come up"
                time.sleep(0.1)
        assert seen == ["MISS", "HIT"]  # what the newcomer is meant to see
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/health") as r:
            assert r.status == 200
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0, out
        assert f"http://127.0.0.1:{port}/api/quotes/AAPL" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
